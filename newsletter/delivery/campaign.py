"""Campaigns and the delivery log: create, lock, resume, send, retry.

A campaign and one `deliveries` row per recipient are written in one
transaction before anything is sent. A row then moves
queued → sending → sent | failed | uncertain | skipped:

- a feeder thread reads queued rows and builds their messages ahead into a
  small bounded queue (memory stays flat; personalization overlaps the
  network wait);
- a worker (one per connection, each with its own provider instance) claims
  a chunk of prepared rows by marking them `sending` in a short transaction,
  re-checking that each subscriber is still active (else `skipped`), and in
  the same transaction records the results of its previous chunk (one commit
  per chunk). It hands the chunk to `provider.send` in batches of at most
  `provider.max_batch`, pacing by the shared rate limiter;
- around every `provider.send` the worker appends to its journal file "handed
  over: these rows" and then their results. Appends are cheap and survive
  kill -9 (no fsync: the kernel has them), so after a crash the journal says
  which `sending` rows were answered (their results are written to the log),
  which were in the provider's hands without an answer (`uncertain`) and
  which never left (queued again). Uncertain stays at most one provider
  batch per worker, while the log costs one commit per chunk, not per message;
- RETRY results and TransientBatchError go back to `queued` with attempts+1
  and an exponential backoff kept in memory (a resumed run retries them at
  once); after `max_attempts` they are `failed` with the last reason;
- ProviderError stops the send: the rows of the batch go back to `queued`;
- an unexpected exception inside `provider.send`, or an UNCERTAIN result,
  leaves the batch `uncertain`: it may or may not have gone out.

Ctrl-C, SIGTERM and SIGHUP stop a run cleanly: the messages in the providers'
hands get their answers and are recorded, the rest stay queued.

Only one process sends a campaign at a time: it holds an exclusive `flock` on
a lock file next to the database. The kernel drops the lock when the process
dies (even by kill -9), so a campaign whose status is `sending` but whose lock
is free was interrupted; its rows still in `sending` are then settled from
the journals (see `recover_interrupted`); the uncertain ones are re-queued
only when the provider is idempotent or the user asks with --retry-uncertain.

Nothing here knows about SMTP, HTTP or drafts: the caller passes a provider
factory and a function that turns a delivery row into a Message.
"""

from __future__ import annotations

# The engine lives in one module per concern; this module keeps the names in one place.
from newsletter.audience.events import now_iso
from newsletter.delivery.audience import (
    Audience,
    DeliveryRow,
    count_audience,
    iter_audience_rows,
    parse_audience,
)
from newsletter.delivery.lock import CampaignLock, is_being_sent, lock_path
from newsletter.delivery.log import (
    STATES,
    Campaign,
    Counts,
    Problem,
    campaign_problems,
    count_states,
    find_or_create_campaign,
    finish_campaign,
    get_campaign,
    latest_campaign,
    list_campaigns,
    nobody_to_send_to,
    refuse_resend,
    requeue,
)
from newsletter.delivery.rate import RateLimiter
from newsletter.delivery.recovery import Recovery, journal_paths, recover_interrupted
from newsletter.delivery.runner import (
    CLAIM_CHUNK,
    MAX_BACKOFF,
    CampaignRunner,
    ProgressCallback,
    RunResult,
)

__all__ = [
    "CLAIM_CHUNK", "MAX_BACKOFF", "STATES", "Audience", "Campaign", "CampaignLock",
    "CampaignRunner", "Counts", "DeliveryRow", "Problem", "ProgressCallback", "RateLimiter",
    "Recovery", "RunResult", "campaign_problems", "count_audience", "count_states",
    "find_or_create_campaign", "finish_campaign", "get_campaign", "is_being_sent",
    "iter_audience_rows", "journal_paths", "latest_campaign", "list_campaigns", "lock_path",
    "nobody_to_send_to", "now_iso", "parse_audience", "recover_interrupted", "refuse_resend",
    "requeue",
]
