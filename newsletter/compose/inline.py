"""CSS inlining with premailer, kept behind one function.

Runs once per issue. No network, no external files: only the layout's own
<style> blocks are inlined; media queries (dark mode, phones) and
pseudo-classes stay in a <style> block, since they cannot be inlined.
cssutils' warnings are silenced so they never spam the terminal.
"""

from __future__ import annotations

import logging
import re
import warnings

from premailer import Premailer

from newsletter.errors import ContentError

_DOCTYPE = re.compile(r"^\s*(<!DOCTYPE[^>]*>)", re.IGNORECASE)


def inline_css(html: str, *, where: str = "layout") -> str:
    """Inline the <style> rules of a full HTML document into style attributes."""
    doctype = _DOCTYPE.match(html)
    logging.getLogger("cssutils").setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = Premailer(
                html,
                allow_network=False,
                disable_validation=True,
                keep_style_tags=False,  # what can't be inlined (media queries) is kept anyway
                strip_important=False,
                remove_classes=False,
                exclude_pseudoclasses=True,
                disable_link_rewrites=True,
                cssutils_logging_level=logging.CRITICAL,
                cssutils_logging_handler=logging.NullHandler(),
                include_star_selectors=False,
                capitalize_float_margin=True,
                # height="auto" from CSS is not a valid attribute; widths are kept for Outlook.
                disable_basic_attributes=["height"],
            ).transform()
    except Exception as exc:  # premailer raises bare lxml/cssutils errors
        raise ContentError(
            f"{where}: cannot inline the CSS ({exc}): check the <style> block"
        ) from None
    # premailer (lxml) drops the doctype; email clients use it to pick standards mode.
    if doctype and not _DOCTYPE.match(out):
        out = doctype.group(1) + "\n" + out
    return out
