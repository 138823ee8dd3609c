"""`newsletter doctor`: is this newsletter ready to send for real, and if not, why not.

One line per item, each ok / warning / error with how to fix it: the settings, the
secret against the database, the provider's credentials (a harmless authenticated
call), the addresses the emails link to (/healthz, the archive home, the one-click POST),
DNS for the From domain (SPF, DKIM, DMARC), the last backup's age, layouts that fell
behind the built-in ones. Doctor only looks: it
never writes the database, never makes a secret and never sends.

It stands above delivery, feedback and web (it asks all of them), beside `newsletter run`.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.doctor.backup import check_backup
from newsletter.doctor.layouts import check_layouts
from newsletter.doctor.mail_dns import check_dns
from newsletter.doctor.provider import check_provider
from newsletter.doctor.report import Line, Report, format_line
from newsletter.doctor.secret import check_secret
from newsletter.doctor.urls import check_urls, served_urls
from newsletter.errors import ConfigError
from newsletter.settings import find_root, hosting_warnings, load_settings

__all__ = ["Line", "Report", "diagnose", "format_line", "served_urls"]


def diagnose(root: Path | None = None, *, dns_server: str | None = None,
             timeout: float = 5.0) -> Report:
    """Run every check on the newsletter at `root` (found as every command finds it).

    Raises ConfigError only when there is no newsletter to check; a broken
    newsletter.toml is the `settings` line, and the checks that need settings are skipped.
    """
    report = Report()
    found = find_root(root)
    try:
        settings = load_settings(found)
    except ConfigError as exc:
        report.add("settings", "error", str(exc))
        return report
    report.add("settings", "ok", f"{settings.config_path} is valid")
    for warning in hosting_warnings(settings):  # no server: what readers lose
        report.add("hosting", "warning", warning)
    check_secret(settings, report)
    check_provider(settings, report)
    check_urls(settings, report, timeout)
    check_dns(settings, report, dns_server, timeout)
    check_backup(settings, report)
    check_layouts(settings, report)
    return report
