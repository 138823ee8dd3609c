"""newsletter: publish an email newsletter from Markdown to a list you own."""

__version__ = "0.1.0"
