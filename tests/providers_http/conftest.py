"""Fixtures: each HTTP provider paired with its fake server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from newsletter.delivery.providers.base import Provider
from newsletter.delivery.providers.registry import provider_class
from newsletter.settings import ProviderSettings, Settings
from tests.providers_http.fakes import (
    FakeAPI,
    FakeMailgun,
    FakePostmark,
    FakeResend,
    FakeSendGrid,
    FakeSES,
)

PROVIDERS = ["postmark", "sendgrid", "mailgun", "resend", "ses"]
FAKES: dict[str, type[FakeAPI]] = {
    "postmark": FakePostmark, "sendgrid": FakeSendGrid, "mailgun": FakeMailgun,
    "resend": FakeResend, "ses": FakeSES,
}
KEY_ENV = {"postmark": "POSTMARK_SERVER_TOKEN", "sendgrid": "SENDGRID_API_KEY",
           "mailgun": "MAILGUN_API_KEY", "resend": "RESEND_API_KEY", "ses": "AWS_ACCESS_KEY_ID"}


@dataclass
class API:
    """One provider under test: its fake server, and a way to make configured instances."""

    name: str
    fake: FakeAPI
    root: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def key_env(self) -> str:
        return KEY_ENV[self.name]

    def options(self, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"endpoint": self.fake.url, "timeout": 5}
        if self.name == "mailgun":
            options["domain"] = FakeMailgun.domain
        if self.name == "ses":
            options["region"] = FakeSES.region
        options.update(extra)
        return options

    def provider_settings(self, **extra: Any) -> ProviderSettings:
        return ProviderSettings(name=self.name, options=self.options(**extra))

    def settings(self, **extra: Any) -> Settings:
        return Settings(root=self.root, name="Liu's Log", sender="Liu <liu@example.com>",
                        base_url="https://example.com/news",
                        provider=self.provider_settings(**extra))

    def provider(self, **extra: Any) -> Provider:
        """An open provider pointed at the fake (closed by the fixture's teardown)."""
        settings = self.settings(**extra)
        provider = provider_class(self.name)(settings, settings.provider)
        provider.open()
        self._opened.append(provider)
        return provider

    def __post_init__(self) -> None:
        self._opened: list[Provider] = []

    def close_all(self) -> None:
        for provider in self._opened:
            provider.close()


def set_credentials(name: str, fake: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the fake's key in the provider's default environment variable(s)."""
    monkeypatch.setenv(KEY_ENV[name], fake.key)
    if isinstance(fake, FakeSES):
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake.secret)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def _api(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[API]:
    with FAKES[name]() as fake:
        set_credentials(name, fake, monkeypatch)
        api = API(name, fake, tmp_path, monkeypatch)
        try:
            yield api
        finally:
            api.close_all()
        assert not fake.violations, f"{name} fake saw invalid requests: {fake.violations}"


@pytest.fixture(params=PROVIDERS)
def api(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[API]:
    """Every HTTP provider in turn, with its fake server running."""
    yield from _api(request.param, tmp_path, monkeypatch)


@pytest.fixture
def make_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], API]]:
    """make_api("postmark") → API, for tests about one provider."""
    stack: list[Iterator[API]] = []

    def make(name: str) -> API:
        gen = _api(name, tmp_path, monkeypatch)
        stack.append(gen)
        return next(gen)

    yield make
    for gen in reversed(stack):
        try:
            next(gen)
        except StopIteration:
            pass
