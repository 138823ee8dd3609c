"""Reading [provider] options: one place that turns a bad value into a ConfigError."""

from __future__ import annotations

from newsletter.errors import ConfigError
from newsletter.settings import ProviderSettings


def number_option(
    ps: ProviderSettings, key: str, default: float, kind: type = float, minimum: float = 0
) -> float:
    """A numeric [provider] option, or ConfigError saying what it should be."""
    value = ps.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum or (
        kind is int and not isinstance(value, int)
    ):
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(
            f"[provider] {key} = {value!r} must be {what} of at least {minimum:g} in "
            "newsletter.toml"
        )
    return value
