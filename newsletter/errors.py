"""One error hierarchy. The CLI turns these into `Error: …` and an exit code.

Every message says what is wrong *and* how to fix it, in one line.
"""


class NewsletterError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 1


class ConfigError(NewsletterError):
    """newsletter.toml, the environment or a missing secret."""

    exit_code = 2


class ContentError(NewsletterError):
    """A draft, its front matter, a layout or an asset cannot be rendered."""

    exit_code = 3


class SubscriberError(NewsletterError):
    """Bad addresses, import files, unknown subscribers."""

    exit_code = 4


class DeliveryError(NewsletterError):
    """A send cannot start or go on (refused resend, nothing to send, …)."""

    exit_code = 5


class ProviderError(DeliveryError):
    """The provider as a whole failed: auth refused, server down, bad settings.

    Stops the send at once; rows not yet sent stay queued for a resume.
    """

    exit_code = 6
