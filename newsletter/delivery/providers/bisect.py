"""Find the messages at fault in a batch an API refuses as a whole (Resend, one bad address).

`bisect_batch(messages, post)` sends the batch with `post(messages) -> Settled`;
when the API refuses it as a whole (400/422), it sends each half on its own,
down to single messages, until every message has a result. When the first
half fails for the same reason as the whole, and that reason names none of
the readers, the fault is the request's, not a reader's: everything fails
without more requests.

A later request of the search that is throttled or refused as a whole stops
it: what was settled stays settled, the rest is RETRY (raised as usual when
nothing was settled yet). A request that may have gone out (MaybeSent) stops
it too, carrying the settled results and UNCERTAIN for that request's
messages, so the caller can stop the send without losing either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from newsletter.delivery.providers.base import DeliveryResult, Outcome, TransientBatchError
from newsletter.errors import ProviderError
from newsletter.http import MaybeSent

if TYPE_CHECKING:
    from newsletter.compose.message import Message


class Refused(Exception):
    """`post` raises this for an answer refusing the whole request (to be split)."""

    def __init__(self, results: list[DeliveryResult]):
        super().__init__("refused")
        self.results = results  # what each message gets if it is not split further


Post = Callable[[list["Message"]], list[DeliveryResult]]


def bisect_batch(messages: Sequence[Message], post: Post) -> list[DeliveryResult]:
    """Results for `messages`, in order, splitting refused requests to find the culprits."""
    settled: dict[str, DeliveryResult] = {}
    try:
        _search(list(messages), post, settled)
    except MaybeSent as exc:
        exc.results = [settled[m.key] for m in messages if m.key in settled] + [  # type: ignore[attr-defined]
            *getattr(exc, "results", [])]
        raise
    except (TransientBatchError, ProviderError) as exc:
        if not settled:
            raise
        wait = exc.retry_after if isinstance(exc, TransientBatchError) else None
        reason = exc.reason if isinstance(exc, TransientBatchError) else str(exc)
        for m in messages:
            settled.setdefault(m.key, DeliveryResult(m.key, Outcome.RETRY, error=reason,
                                                     retry_after=wait))
    return [settled[m.key] for m in messages]


def _search(messages: list[Message], post: Post, settled: dict[str, DeliveryResult]) -> None:
    try:
        results = post(messages)
    except MaybeSent as exc:
        exc.results = [DeliveryResult(m.key, Outcome.UNCERTAIN, error=exc.reason)  # type: ignore[attr-defined]
                       for m in messages]
        raise
    except Refused as refused:
        if len(messages) == 1:
            results = refused.results
        else:
            _split(messages, post, settled, refused.results[0].error or "")
            return
    for result in results:
        settled[result.key] = result


def _split(messages: list[Message], post: Post, settled: dict[str, DeliveryResult],
           whole: str) -> None:
    half = len(messages) // 2
    _search(messages[:half], post, settled)
    blames_nobody = not any(m.recipient.lower() in whole.lower() for m in messages)
    if half > 1 and blames_nobody and all(
        settled[m.key].outcome is Outcome.FAILED and settled[m.key].error == whole
        for m in messages[:half]
    ):
        # The request itself is wrong (sender, fields): no reader is to blame.
        for m in messages[half:]:
            settled[m.key] = DeliveryResult(m.key, Outcome.FAILED, error=whole)
        return
    _search(messages[half:], post, settled)
