"""The provider's credentials, by the harmless authenticated call its adapter knows."""

from __future__ import annotations

from newsletter.delivery.providers.registry import make_provider
from newsletter.doctor.report import Report
from newsletter.errors import NewsletterError
from newsletter.settings import Settings


def check_provider(settings: Settings, report: Report) -> None:
    name = settings.provider.name
    try:
        answer = make_provider(settings).check_credentials()
    except NewsletterError as exc:
        report.add("provider", "error", str(exc))
        return
    except Exception as exc:  # a plug-in's own bug: said on its line, the other checks go on
        report.add("provider", "error", f"the {name} provider's check failed "
                   f"({type(exc).__name__}: {exc}): update or reinstall the plug-in")
        return
    if answer.warning:
        report.add("provider", "warning", f"{answer.detail}; but {answer.warning}")
    else:
        report.add("provider", "ok", answer.detail)
