"""The [webhooks] table of newsletter.toml: which providers may call, and where their secrets are.

Secrets never sit in the file: each `*_env` setting names the environment variable that holds
the secret, and `secret()` reads it when a request arrives.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from newsletter.errors import ConfigError

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
ENV_KEYS = (
    "postmark_user_env",
    "postmark_password_env",
    "sendgrid_public_key_env",
    "mailgun_signing_key_env",
    "resend_secret_env",
)
_INT_KEYS = {"max_body_bytes": (1024, 1_000_000), "tolerance_seconds": (30, 300)}
_BOOL_KEYS = {"ses_enabled": False, "ses_confirm_subscriptions": True}
KNOWN = sorted(
    {*ENV_KEYS, *_INT_KEYS, *_BOOL_KEYS, "ses_topic_arns", "insecure_test_only_sns_host"}
)


class MissingSecret(Exception):
    """A provider is configured but its environment variable is not set on the server."""


@dataclass(frozen=True)
class WebhookSettings:
    env: dict[str, str] = field(default_factory=dict)  # setting -> env var name
    max_body_bytes: int = 1_000_000
    tolerance_seconds: int = 300  # how old a signed timestamp may be
    ses_enabled: bool = False
    ses_confirm_subscriptions: bool = True
    ses_topic_arns: tuple[str, ...] = ()  # empty: any topic
    # Tests only: lets SigningCertURL/SubscribeURL point at this host:port over http(s).
    insecure_test_only_sns_host: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any] | None) -> WebhookSettings:
        """Check [webhooks]; raise one ConfigError listing every problem."""
        table = table or {}
        problems: list[str] = []
        for key in sorted(set(table) - set(KNOWN)):
            problems.append(f"unknown setting webhooks.{key} (known: {', '.join(KNOWN)})")
        env: dict[str, str] = {}
        for key in ENV_KEYS:
            if key not in table:
                continue
            value = table[key]
            if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
                problems.append(
                    f"webhooks.{key} must name an environment variable (like "
                    f"NEWSLETTER_{key[:-4].upper()}); put the secret itself in that variable, "
                    "never in newsletter.toml"
                )
            else:
                env[key] = value
        if ("postmark_user_env" in env) != ("postmark_password_env" in env):
            problems.append(
                "set both webhooks.postmark_user_env and webhooks.postmark_password_env"
            )
        numbers: dict[str, int] = {}
        for key, (low, default) in _INT_KEYS.items():
            value = table.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"webhooks.{key} must be a whole number of {low} or more")
            else:
                numbers[key] = value
        flags: dict[str, bool] = {}
        for key, default in _BOOL_KEYS.items():
            value = table.get(key, default)
            if not isinstance(value, bool):
                problems.append(f"webhooks.{key} must be true or false")
            else:
                flags[key] = value
        arns = table.get("ses_topic_arns", [])
        if not isinstance(arns, list) or not all(
            isinstance(a, str) and a.startswith("arn:") for a in arns
        ):
            problems.append('webhooks.ses_topic_arns must be a list of "arn:aws:sns:…" strings')
            arns = []
        test_host = table.get("insecure_test_only_sns_host")
        if test_host is not None and not (
            isinstance(test_host, str) and re.fullmatch(r"(127\.0\.0\.1|localhost):\d+", test_host)
        ):
            problems.append(
                'webhooks.insecure_test_only_sns_host is for tests only and must be '
                '"127.0.0.1:<port>"; remove it in production'
            )
            test_host = None
        if problems:
            raise ConfigError("newsletter.toml [webhooks]: " + "; ".join(problems))
        return cls(
            env=env,
            ses_topic_arns=tuple(arns),
            insecure_test_only_sns_host=test_host,
            **numbers,
            **flags,
        )

    def enabled(self, provider: str) -> bool:
        """True when newsletter.toml turns this provider's webhook on."""
        if provider == "ses":
            return self.ses_enabled
        return any(key.startswith(provider + "_") for key in self.env)

    def secret(self, key: str) -> str:
        """The secret in the environment variable that setting `key` names."""
        name = self.env[key]
        value = os.environ.get(name, "")
        if not value:
            raise MissingSecret(f"the environment variable {name} (webhooks.{key}) is not set")
        return value
