"""The face of the tool: options in, one library call, output. Nothing else.

Each command group lives in its own module; importing them registers their
commands on `app`, in the order `newsletter --help` lists them.
"""
# ruff: noqa: I001  (the import order is the order of the commands in --help)

from newsletter.cli.app import app, main
from newsletter.cli import compose_cmds as _compose_cmds  # noqa: F401
from newsletter.cli import preview as _preview  # noqa: F401
from newsletter.cli import subscribers as _subscribers  # noqa: F401
from newsletter.cli import send as _send  # noqa: F401
from newsletter.cli import campaigns as _campaigns  # noqa: F401
from newsletter.cli import posts as _posts  # noqa: F401
from newsletter.cli import sync as _sync  # noqa: F401
from newsletter.cli import run as _run  # noqa: F401
from newsletter.cli import publish as _publish  # noqa: F401
from newsletter.cli import layouts as _layouts  # noqa: F401
from newsletter.cli import serve as _serve  # noqa: F401
from newsletter.cli import stats as _stats  # noqa: F401
from newsletter.cli import doctor as _doctor  # noqa: F401
from newsletter.cli import backup as _backup  # noqa: F401

__all__ = ["app", "main"]
