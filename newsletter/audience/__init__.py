"""Who gets it: the subscriber list in SQLite."""
