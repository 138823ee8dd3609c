"""Whether the key this folder would sign links with is the one the database was bound to.

Read-only: the key is read as `Settings.secret_key()` reads it, but none is ever made,
and the database's fingerprint is read from a read-only connection.
"""

from __future__ import annotations

import hmac

from newsletter.doctor.report import Report
from newsletter.errors import NewsletterError
from newsletter.settings import (
    SECRET_ENV,
    SECRET_FILE,
    Settings,
    key_fingerprint,
    recorded_fingerprint,
)


def check_secret(settings: Settings, report: Report) -> None:
    try:
        # The key exactly as secret_key() finds it, without the file it would write.
        key = settings.existing_key()
        recorded = recorded_fingerprint(settings.database)
    except NewsletterError as exc:
        report.add("secret", "error", str(exc))
        return
    where = settings.database.name
    if key is None and recorded is None:
        report.add("secret", "ok", f"no key yet: the first send or `newsletter serve` makes "
                   f"{SECRET_FILE} (keep a copy: every link in every email is signed with it)")
    elif key is None:
        report.add("secret", "error",
                   f"{where} holds links signed with a key this folder does not have "
                   f"(fingerprint {recorded}): set {SECRET_ENV} to the content of "
                   f"{SECRET_FILE} from the folder the database came from, or copy that file "
                   f"to {settings.root / SECRET_FILE}")
    elif recorded is None:
        report.add("secret", "ok", f"key {key_fingerprint(key)} found; {where} is bound to it "
                   "at the first send")
    elif hmac.compare_digest(key_fingerprint(key), recorded):
        report.add("secret", "ok", f"the key matches {where} (fingerprint {recorded})")
    else:
        report.add("secret", "error",
                   f"the key here (fingerprint {key_fingerprint(key)}) is not the one that "
                   f"signed the links of {where} ({recorded}): use the {SECRET_FILE} or "
                   f"{SECRET_ENV} of the place the database was made; this key would break "
                   "every link already mailed")
