"""Amazon SES v2: `POST /v2/email/outbound-emails`, raw MIME, AWS Signature Version 4.

One request per message: the raw message (`Message.as_bytes()`) goes as is,
so every header (List-Unsubscribe, Reply-To, …) arrives exactly as built.
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and, for
temporary credentials, AWS_SESSION_TOKEN (the variable names can be changed
with access_key_env / secret_key_env / session_token_env). `region` picks the
endpoint (`https://email.{region}.amazonaws.com`). Requests are signed by
`newsletter.aws` (botocore's signer, shared with the SES suppression-list pull).

Errors: throttling and quota (`TooManyRequestsException`, `LimitExceededException`,
"Maximum sending rate exceeded") are transient; `MessageRejected` and other
per-message 400s fail that message; bad credentials, a suspended account or
paused sending stop the send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from newsletter.aws import (
    AWSCredentials,
    SigV4Signer,
    read_credentials,
    read_region,
    ses_endpoint,
)
from newsletter.delivery.providers.base import (
    CredentialsAnswer,
    DeliveryResult,
    Outcome,
    TransientBatchError,
)
from newsletter.delivery.providers.http import HTTPProvider, b64, send_in_parts
from newsletter.errors import ProviderError
from newsletter.settings import Option

__all__ = ["SESProvider", "error_type"]

if TYPE_CHECKING:
    import httpx

    from newsletter.compose.message import Message

SEND_PATH = "/v2/email/outbound-emails"
TRANSIENT_TYPES = ("TooManyRequestsException", "LimitExceededException", "Throttling",
                   "ThrottlingException", "ServiceUnavailable", "InternalFailure")
TRANSIENT_TEXT = ("maximum sending rate exceeded", "daily message quota exceeded",
                  "rate exceeded")
STOP_TYPES = ("AccountSuspendedException", "SendingPausedException",
              "MailFromDomainNotVerifiedException", "NotFoundException",
              "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
              "AccessDeniedException", "ExpiredToken", "ExpiredTokenException",
              "IncompleteSignature", "MissingAuthenticationToken")


class SESProvider(HTTPProvider):
    """Amazon SES v2 (https://aws.amazon.com/ses/), raw MIME, one request a message."""

    name = "ses"
    options: ClassVar[Mapping[str, Option]] = {
        **HTTPProvider.options,
        "region": Option(str, None, 'the SES region, like "eu-west-1" (else AWS_REGION)'),
        "access_key_env": Option(str, "AWS_ACCESS_KEY_ID", "the variable holding the key id"),
        "secret_key_env": Option(str, "AWS_SECRET_ACCESS_KEY",
                                 "the variable holding the secret key"),
        "session_token_env": Option(str, "AWS_SESSION_TOKEN",
                                    "the variable holding a session token, if any"),
        "configuration_set": Option(str, None, "the SES configuration set to send with"),
    }
    description = "Amazon SES v2: raw MIME, one signed request a message"
    max_batch: ClassVar[int] = 1  # one request per message: each row's fate is its own
    default_rate: ClassVar[float | None] = 14.0  # SES's starting rate outside the sandbox
    rate_unit: ClassVar[str] = "message"
    key_label = "AWS credentials"

    _credentials: AWSCredentials | None = None
    _signer: SigV4Signer | None = None

    @property
    def region(self) -> str:
        return read_region(self.provider_settings)

    @property
    def endpoint(self) -> str:
        return ses_endpoint(self.provider_settings, self.region)

    @property
    def key_env(self) -> str:
        return str(self.provider_settings.get("access_key_env") or "AWS_ACCESS_KEY_ID")

    def read_key(self) -> str:
        self._credentials = read_credentials(self.provider_settings)
        self.region  # noqa: B018 -- check the setting before anything goes out
        self.remember_secret(self._credentials.secret_key, self._credentials.session_token or "")
        return self._credentials.access_key

    def auth_headers(self, key: str) -> dict[str, str]:
        return {}  # every request is signed on its own

    def close(self) -> None:
        super().close()
        self._credentials = None
        self._signer = None

    credentials_path = "/v2/email/account"  # GetAccount: quota and sending status, read-only
    spf_include = "amazonses.com"

    def credentials_headers(self, path: str) -> dict[str, str]:
        return self.signer().headers("GET", self.endpoint + path, {}, b"")

    def read_credentials_answer(self, path: str, response: httpx.Response) -> CredentialsAnswer:
        if response.status_code in (400, 403) and error_type(response) in STOP_TYPES:
            raise ProviderError(
                f"ses {error_type(response)}: {self.reason(response)}: check the AWS "
                f"credentials in ${self.key_env} and $"
                f"{self.provider_settings.get('secret_key_env') or 'AWS_SECRET_ACCESS_KEY'}, "
                "their ses:GetAccount permission and [provider] region"
            )
        answer = super().read_credentials_answer(path, response)
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if body.get("SendingEnabled") is False:
            raise ProviderError(
                f"SES sending is paused for this account in {self.region}: resume it in the SES "
                "console (Account dashboard) before sending"
            )
        found = body.get("SendQuota")
        quota: dict[str, object] = found if isinstance(found, dict) else {}
        detail = (f"ses accepted the AWS credentials (GetAccount in {self.region}: "
                  f"{quota.get('Max24HourSend', '?')} messages a day, "
                  f"{quota.get('MaxSendRate', '?')} a second)")
        if body.get("ProductionAccessEnabled") is False:
            return CredentialsAnswer(detail, f"SES in {self.region} is in the sandbox: it only "
                                     "sends to verified addresses; request production access "
                                     "in the SES console")
        return CredentialsAnswer(detail or answer.detail)

    def signer(self) -> SigV4Signer:
        """The request signer, made once per open() from the credentials read_key() read."""
        if self._signer is None:
            if self._credentials is None:
                raise ProviderError("the ses provider is not open: call open() before send()")
            self._signer = SigV4Signer(self._credentials, self.region)
        return self._signer

    def build_request(self, message: Message) -> tuple[bytes, dict[str, str]]:
        """The body and signed headers of one SendEmail request."""
        body: dict[str, object] = {
            "FromEmailAddress": message.sender,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": b64(message.as_bytes())}},
        }
        if config_set := self.provider_settings.get("configuration_set"):
            body["ConfigurationSetName"] = str(config_set)
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(self.signer().headers("POST", self.endpoint + SEND_PATH, headers, data))
        return data, headers

    def send(self, messages: Sequence[Message]) -> list[DeliveryResult]:
        """One request per message; a stop after the first leaves the rest to retry."""
        return send_in_parts(messages, list(messages), self.send_one, self.name)

    def send_one(self, message: Message) -> list[DeliveryResult]:
        data, headers = self.build_request(message)
        response = self.request("POST", SEND_PATH, content=data, headers=headers)
        if response.status_code == 200:
            body = self.answer(response, lambda b: isinstance(b, dict) and "MessageId" in b)
            message_id = str(body["MessageId"] or "")
            return [DeliveryResult(message.key, Outcome.SENT, provider_id=message_id)]
        kind = error_type(response)
        reason = f"ses {kind or 'HTTP ' + str(response.status_code)}: {self.reason(response)}"
        if kind in TRANSIENT_TYPES or any(t in reason.lower() for t in TRANSIENT_TEXT):
            raise TransientBatchError(reason)
        if kind in STOP_TYPES:
            raise ProviderError(
                f"{reason}: fix the SES account, sender identity or credentials "
                f"(${self.key_env}), then run the send again to resume"
            )
        return [DeliveryResult(message.key, Outcome.FAILED, error=reason)]

    def raise_for_provider_status(self, response: httpx.Response) -> None:
        # SES throttles with 400 + a type as well as 429: read the type first.
        if response.status_code == 400 and error_type(response) in TRANSIENT_TYPES:
            raise TransientBatchError(f"ses {error_type(response)}: {self.reason(response)}")
        super().raise_for_provider_status(response)


def error_type(response: httpx.Response) -> str:
    """The AWS error type: header `x-amzn-ErrorType` ("MessageRejected:http://…") or `__type`."""
    value = response.headers.get("x-amzn-errortype", "")
    if not value:
        try:
            body = response.json()
        except ValueError:
            body = {}
        value = str(body.get("__type") or body.get("code") or "") if isinstance(body, dict) else ""
    return value.split(":", 1)[0].rsplit("#", 1)[-1]
