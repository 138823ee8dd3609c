"""Reading a numeric [provider] option at run time, with the text settings use at load.

Settings loaded from newsletter.toml are already checked against the provider's declared
options (settings.Option); this covers ProviderSettings made in code (tests, --provider).
"""

from __future__ import annotations

from newsletter.errors import ConfigError
from newsletter.settings import Option, ProviderSettings


def number_option(
    ps: ProviderSettings, key: str, default: float, kind: type = float, minimum: float = 0
) -> float:
    """A numeric [provider] option, or ConfigError saying what it should be."""
    value = ps.get(key, default)
    problem = Option(kind, default, minimum=minimum).problem(key, value)
    if problem is not None:
        raise ConfigError(f"{problem} in newsletter.toml")
    return value
