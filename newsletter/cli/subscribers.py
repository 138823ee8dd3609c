"""Commands: filled in by their issue."""
from newsletter.cli.app import app  # noqa: F401
