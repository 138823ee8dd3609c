"""Find providers through the entry-point group `newsletter.providers`.

The built-ins (outbox, smtp, the HTTP APIs) are declared in pyproject.toml
exactly like a third-party plug-in would declare its own, so there is one way
in for everyone. A plug-in that fails to import is reported by
`newsletter providers`, never a crash for unrelated commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint

from newsletter.delivery.providers.base import Provider
from newsletter.errors import ConfigError
from newsletter.settings import ProviderSettings, Settings, provider_entry_points


@dataclass(frozen=True)
class ProviderInfo:
    """One registered provider, loaded or not."""

    name: str
    description: str
    distribution: str  # the installed package that declared it ("newsletter" for built-ins)
    target: str  # "module:Class"
    cls: type[Provider] | None = None
    error: str | None = None  # why it could not be loaded

    @property
    def builtin(self) -> bool:
        return self.distribution == "newsletter"


def _load(ep: EntryPoint) -> ProviderInfo:
    dist = ep.dist.name if ep.dist is not None else "?"
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plug-in must not take the tool down
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        return ProviderInfo(ep.name, "", dist, ep.value, error=reason)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        return ProviderInfo(
            ep.name, "", dist, ep.value, error=f"{ep.value} is not a Provider subclass"
        )
    doc_lines = (cls.__doc__ or "").strip().splitlines()
    description = cls.description or (doc_lines[0] if doc_lines else "")
    return ProviderInfo(ep.name, description, dist, ep.value, cls=cls)


def available_providers() -> list[ProviderInfo]:
    """Every provider declared in the entry-point group, sorted by name, loaded if possible."""
    return [_load(ep) for ep in provider_entry_points()]


def provider_class(name: str) -> type[Provider]:
    """The Provider class registered as `name`.

    Raises ConfigError listing the known names when `name` is unknown, or the
    import error when the plug-in is broken.
    """
    for ep in provider_entry_points():
        if ep.name == name:
            info = _load(ep)
            if info.cls is None:
                raise ConfigError(
                    f'provider "{name}" (from {info.distribution}) cannot be loaded: '
                    f"{info.error}; reinstall it or pick another provider"
                )
            return info.cls
    known = ", ".join(ep.name for ep in provider_entry_points()) or "none"
    raise ConfigError(
        f'unknown provider "{name}": known providers are {known} '
        "(set [provider] name in newsletter.toml or pass --provider)"
    )


def make_provider(
    settings: Settings, provider_settings: ProviderSettings | None = None
) -> Provider:
    """A new, unopened instance of the configured provider."""
    provider_settings = provider_settings or settings.provider
    cls = provider_class(provider_settings.name)
    return cls(settings, provider_settings)
