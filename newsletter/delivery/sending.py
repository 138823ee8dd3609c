"""A send, end to end: issue → campaign → provider, with resume and retries.

`send_draft()` is what `newsletter send` calls: it is handed the issue its caller
built once (compose's `build_issue()`) and the pre-send check (`newsletter check`,
which lives in the writer's tools: delivery never imports them). It runs the check
with its audience, finds or creates the campaign (refusing a second list send unless
`resend`), asks for confirmation, and hands over to `run_campaign()`, which takes the
campaign's lock, settles rows left behind by a dead process and runs the engine
(`runner.py`, whose docstring tells how a row moves). `run_campaign()` knows nothing of
drafts: tests and the contract suite call it with their own message factory.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from newsletter import store
from newsletter.audience.policy import BouncePolicy
from newsletter.compose.issue import build_issue
from newsletter.compose.message import Recipient, personalize
from newsletter.delivery.journal import journal_paths
from newsletter.delivery.lock import CampaignLock
from newsletter.delivery.log import (
    REHEARSAL_PROVIDER,
    Campaign,
    Counts,
    body_hash,
    find_or_create_campaign,
    finish_campaign,
    get_campaign,
    latest_campaign,
    mark_uncertain_sent,
    nobody_to_send_to,
    refuse_resend,
    requeue,
)
from newsletter.delivery.providers.options import number_option
from newsletter.delivery.providers.registry import provider_class
from newsletter.delivery.recipients import (
    Audience,
    DeliveryRow,
    audience_for_issue,
    count_audience,
    iter_audience_rows,
    parse_audience,
)
from newsletter.delivery.recovery import recover_interrupted
from newsletter.delivery.runner import (
    CampaignRunner,
    ProgressCallback,
    RunResult,
    storage_error,
)
from newsletter.errors import ConfigError, DeliveryError, NewsletterError
from newsletter.settings import MAX_CONCURRENCY, ProviderSettings, Settings, hosting_warnings

if TYPE_CHECKING:
    import sqlite_utils

    from newsletter.compose.issue import Issue
    from newsletter.compose.message import Message


class PreSendCheck(Protocol):
    """`newsletter check` as a send runs it, handed in by the caller (the writer's
    `pre_send_errors`): the errors in `issue` for the readers `where_sql` selects in `db`.
    Delivery refuses a send on any, unless forced."""

    def __call__(self, issue: Issue, settings: Settings, db: sqlite_utils.Database,
                 where_sql: str, params: Sequence[Any], /) -> list[str]: ...


class MakeLive(Protocol):
    """Makes what the email links to on the web live before the first message leaves
    (the writer's `hosting.make_live`, handed in by the caller like the check): publishes
    the issue where `serve` answers from it, or checks the static host. Returns the URLs
    that would not answer ("URL (why)"); `unlisted` keeps the page out of the archive
    (a test send, or a send to part of the list: see `unlisted()`)."""

    def __call__(self, issue: Issue, settings: Settings, unlisted: bool, /) -> list[str]: ...


@dataclass
class SendReport:
    """What a send did, for the summary."""

    campaign: Campaign  # as it stands at the end, with counts per state
    created: bool = False  # a new campaign (False: resumed or retried)
    run: RunResult | None = None
    interrupted_rows: int = 0  # rows a dead process had in the provider's hands, unanswered
    recovered_rows: int = 0  # rows a dead process left whose fate its journal told
    interrupted_requeued: bool = False  # … re-queued (idempotent provider) rather than uncertain
    uncertain_requeued: int = 0  # uncertain rows re-queued by --retry-uncertain
    failed_requeued: int = 0  # failed rows re-queued by --retry-failed
    warnings: list[str] = field(default_factory=list)  # check findings that did not stop it

    @property
    def error(self) -> Exception | None:
        return self.run.error if self.run else None


def provider_settings_for(
    settings: Settings, name: str | None = None, concurrency: int | None = None,
    rate: float | None = None,
) -> ProviderSettings:
    """The [provider] settings with --provider/--concurrency/--rate applied.

    A different provider than the configured one starts from empty options.
    """
    ps = settings.provider
    if name and name != ps.name:
        ps = ProviderSettings(name=name)
    changes: dict[str, Any] = {}
    if concurrency is not None:
        if concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if concurrency > MAX_CONCURRENCY:  # each is a connection and open files
            raise ConfigError(f"--concurrency must be at most {MAX_CONCURRENCY}")
        changes["concurrency"] = concurrency
    if rate is not None:
        if not math.isfinite(rate) or rate < 0:  # nan and inf parse as floats
            raise ConfigError("--rate must be a number of messages per second (0: no limit)")
        changes["rate"] = rate
    return dataclasses.replace(ps, **changes) if changes else ps


def run_campaign(
    settings: Settings,
    campaign_id: int,
    make_message: Callable[[DeliveryRow], Message],
    *,
    provider_settings: ProviderSettings | None = None,
    retry_uncertain: bool = False,
    retry_failed: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SendReport:
    """Send the queued rows of campaign `campaign_id`; resume-safe, one process at a time.

    Raises DeliveryError when another live process is sending it. A ProviderError
    that stops the run is returned in `report.error` (the rows stay queued), so the
    caller can show what was done before raising it.
    """
    ps = provider_settings or settings.provider
    cls = provider_class(ps.name)
    policy = BouncePolicy(soft_limit=settings.bounces.soft_limit)
    with CampaignLock(settings.database, campaign_id):
        db = store.connect(settings.database)
        try:
            campaign = get_campaign(db, campaign_id)
            report = SendReport(campaign)
            # We hold the lock, so rows still `sending` belong to a process that died.
            # Its in-flight rows are safe to send again only through the same provider
            # (campaigns.provider: the one that run used), whose idempotency key then
            # matches; another provider would deliver them a second time.
            same_provider = campaign.provider == ps.name
            recovery = recover_interrupted(
                db, campaign_id, requeue_them=cls.idempotent and same_provider,
                journals=journal_paths(settings.database, campaign_id),
            )
            report.interrupted_rows = recovery.in_flight
            report.recovered_rows = recovery.recorded + recovery.never_sent
            report.interrupted_requeued = cls.idempotent and same_provider
            if retry_uncertain:
                report.uncertain_requeued = requeue(db, campaign_id, ["uncertain"])
            if retry_failed:
                report.failed_requeued = requeue(db, campaign_id, ["failed"])
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "UPDATE campaigns SET status = 'sending', provider = ? WHERE id = ?",
                    [ps.name, campaign_id],
                )
            # The outbox files each campaign under its own folder.
            run_ps = dataclasses.replace(ps, options={**ps.options, "campaign": campaign.label})
            runner = CampaignRunner(
                settings.database,
                campaign_id,
                lambda: cls(settings, run_ps),
                make_message,
                concurrency=ps.concurrency,
                rate=ps.rate,
                retry_delay=number_option(ps, "retry_delay", 1.0, float),
                max_attempts=int(number_option(ps, "max_attempts", 5, int)),
                check_subscribers=campaign.kind == "list",
                bounce_policy=policy,
                on_progress=on_progress,
            )
            report.run = runner.run()
            try:
                report.campaign = finish_campaign(db, campaign_id)
            except sqlite3.Error as exc:  # a full disk: the rows are read, the status waits
                report.campaign = get_campaign(db, campaign_id)
                if report.run.error is None:
                    report.run.error = storage_error(exc, settings.database)
        finally:
            db.conn.close()
    return report


# --- sending a draft ---------------------------------------------------------------------


@dataclass(frozen=True)
class SendPlan:
    """What a send is about to do: shown to the user before a list send."""

    subject: str
    audience: Audience
    recipients: int
    provider: str
    resuming: Campaign | None = None  # an unfinished campaign that will be continued
    warnings: list[str] = field(default_factory=list)


@dataclass
class DryRunReport:
    """What a --dry-run built: every message, none sent."""

    subject: str
    audience: Audience
    provider: str
    messages: int = 0
    total_bytes: int = 0
    largest_bytes: int = 0
    seconds: float = 0.0
    sample: Message | None = None  # the first message
    warnings: list[str] = field(default_factory=list)


def _draft_label(settings: Settings, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(settings.root.resolve()))
    except ValueError:
        return str(path)


def _issue_hash(issue: Issue) -> str:
    """The body hash of an issue; its web link (which names the slug) left out."""
    text = issue.text.replace(issue.web_url, "") if issue.web_url else issue.text
    return body_hash(text)


def message_factory(
    settings: Settings, issue: Issue, campaign_id: int | None = None
) -> Callable[[DeliveryRow], Message]:
    """Each delivery row's message: `issue` personalized for its reader, its links naming
    the campaign (`newsletter stats` counts the unsubscribes that came from it)."""

    def make(row: DeliveryRow) -> Message:
        recipient = Recipient(row.email, row.name, row.attributes, key=row.key)
        return personalize(issue, recipient, key=str(row.id), settings=settings,
                           campaign=campaign_id)

    return make


def _check_ready(settings: Settings, ps: ProviderSettings) -> None:
    cls = provider_class(ps.name)
    if cls.remote and not settings.base_url:
        raise ConfigError(
            f"sending through {ps.name} needs base_url in newsletter.toml [newsletter] (the "
            "unsubscribe links point there); the outbox provider works without it"
        )
    if cls.remote and not settings.sender:
        raise ConfigError(
            'set from = "Your Name <you@example.com>" in newsletter.toml [newsletter] before '
            "sending"
        )


def _pre_send_check(
    settings: Settings, issue: Issue, audience: Audience, check: PreSendCheck, force: bool,
    dry_run: bool,
) -> list[str]:
    """Run the check the caller handed in on the built issue; refuse on errors unless
    forced (or dry).

    The `subscriber.*` values it uses are checked against this send's audience (an
    attribute nobody in it has is an error). Returns the findings as warnings when they
    do not stop the send.
    """
    from newsletter.delivery.recipients import audience_where

    db = store.connect(settings.database)
    try:
        where, params = (audience_where(db, audience) if audience.kind == "list"
                         else ("status = 'active'", []))
        errors = check(issue, settings, db, where, params)
    finally:
        db.conn.close()
    if errors and not (force or dry_run):
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DeliveryError(
            f"the draft has errors: {errors[0]}{more}; run `newsletter check "
            f"{issue.source.name}`, fix them, or pass --force to send anyway"
        )
    return [f"check: {m}" for m in errors]


def unlisted(issue: Issue, audience: Audience) -> bool:
    """Whether this send's web page stays out of the archive, feeds and sitemap."""
    if audience.kind == "test":
        return True
    publish = issue.draft.extra.get("publish") if issue.draft is not None else None
    return audience.spec != "subscribers" and publish is not True


def _go_live(settings: Settings, issue: Issue, audience: Audience, web: MakeLive) -> list[str]:
    """Run `web` for this send: a list send is refused while any URL its email links to
    would not answer; for a test send they are warnings.

    A test send's page is published unlisted, and so is an issue sent only to part of the
    list (a paid-only post, say) unless its draft says `publish: true`: its readers' "View
    online" works, and the archive, feeds and sitemap leave it out.
    """
    missing = web(issue, settings, unlisted(issue, audience))
    if not missing:
        return []
    if audience.kind == "test":
        return [f"this test email links to {url}, which is not online yet" for url in missing]
    if settings.web.hosting == "serve":
        fix = (f"publishing into [publish] out ({settings.publish.out}) did not write them: "
               "check that folder, then send again")
    else:
        fix = ("publish the site (`newsletter publish`) and upload it to base_url first, or "
               "pass --no-web-check to send anyway")
    raise DeliveryError(
        f"the email links to {len(missing)} address(es) that do not answer: "
        f"{', '.join(missing)}; {fix}")


def _refuse_sent_elsewhere(issue: Issue, audience: Audience, resend: bool) -> None:
    """A post emailed from another platform (`sent:` in its front matter, as import-posts
    writes it) is refused for the list like one sent from here, unless --resend."""
    if audience.kind != "list" or resend:
        return
    extra = issue.draft.extra if issue.draft else {}
    sent = extra.get("sent")
    if sent:
        origin = extra.get("imported_from")
        where = f" from {str(origin).split(':', 1)[0].capitalize()}" if origin else ""
        raise DeliveryError(
            f"{issue.source.stem} was already emailed to the list{where} on {str(sent)[:10]} (its "
            "front matter says `sent:`): pass --resend to send it again"
        )


def _not_on_the_list(db: sqlite_utils.Database, audience: Audience) -> list[str]:
    """Warnings for test addresses that unsubscribed (or bounced, complained) on the list."""
    marks = ",".join("?" * len(audience.addresses))
    return [
        f"{email} is {status} on the list: this test send goes to it all the same"
        for email, status in db.execute(
            f"SELECT email, status FROM subscribers WHERE email_key IN ({marks}) "
            "AND status != 'active' ORDER BY email_key",
            [a.lower() for a in audience.addresses],
        ).fetchall()
    ]


def _resume_changes(
    campaign: Campaign, subject: str, path: Path, provider: str, retry_uncertain: bool
) -> list[str]:
    """What differs in a resume from the run that began `campaign`, as warnings."""
    changes: list[str] = []
    c = campaign.counts
    left = c.queued + c.sending + (c.uncertain if retry_uncertain else 0)
    if not left:
        return changes
    rest = "the messages still to send"
    began = campaign.created_at[:19].replace("T", " ")
    if subject != campaign.subject:
        changes.append(
            f"the subject changed since campaign {campaign.id} began ({campaign.subject!r} → "
            f"{subject!r}): {rest} get the new one, those already sent had the old one"
        )
    else:
        try:
            edited = path.stat().st_mtime
            started = datetime.fromisoformat(campaign.created_at).timestamp()
        except (OSError, ValueError):
            edited = started = 0.0
        if started and edited >= started + 1:  # created_at is cut to the second
            changes.append(
                f"{path.name} was edited after campaign {campaign.id} began ({began} UTC): "
                f"{rest} get the edited text, those already sent had the earlier one"
            )
    if provider != campaign.provider:
        changes.append(
            f"campaign {campaign.id} was being sent through {campaign.provider}; the rest now "
            f"goes through {provider}"
        )
    return changes


def _plan(
    db: sqlite_utils.Database, issue: Issue, audience: Audience, provider: str,
    warnings: list[str], retry_uncertain: bool,
) -> tuple[SendPlan, bool]:
    """What a send would do (for the confirmation), and whether a resume changed since."""
    unfinished = latest_campaign(db, issue.slug, audience.kind, audience.spec,
                                 rehearsal=None if provider == REHEARSAL_PROVIDER else False)
    if unfinished is not None and unfinished.status == "done":
        unfinished = None
    changed = (
        _resume_changes(unfinished, issue.subject, issue.source, provider, retry_uncertain)
        if unfinished else []
    )
    plan = SendPlan(
        subject=issue.subject,
        audience=audience,
        recipients=unfinished.counts.total if unfinished else count_audience(db, audience),
        provider=provider,
        resuming=unfinished,
        warnings=[*issue.warnings, *warnings, *changed],
    )
    if audience.kind == "test":
        plan.warnings.extend(_not_on_the_list(db, audience))
    return plan, bool(changed)


def send_draft(
    settings: Settings,
    issue: Issue,
    to: str,
    *,
    check: PreSendCheck,
    web: MakeLive | None = None,
    provider: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    resend: bool = False,
    force: bool = False,
    retry_uncertain: bool = False,
    confirm: Callable[[SendPlan], bool] | None = None,
    on_progress: ProgressCallback | None = None,
) -> SendReport:
    """Send `issue` (built once by the caller: checked and sent as built) to `to`
    (subscribers | tag:NAME | a@x,b@y).

    `check` is the pre-send check (the writer's `pre_send_errors`), run here with this
    send's audience. `confirm(plan)` is asked before a list send (not for test sends or
    resumes of a campaign the user already confirmed); returning False cancels with a
    DeliveryError. `web` (the writer's `make_live`; None: not checked, as --no-web-check)
    then puts the issue's page and images online, or checks they are, before anything is
    recorded or mailed: a list send is refused while one would not answer. Everything is
    recorded in the delivery log before the first
    message goes out.
    """
    audience = audience_for_issue(settings, to, issue.draft.topics if issue.draft else ())
    ps = provider_settings_for(settings, provider, concurrency, rate)
    _check_ready(settings, ps)
    # The outbox sends nothing anywhere: on a fresh machine it works before the
    # draft passes every check (the findings are shown as warnings instead).
    local = not provider_class(ps.name).remote
    warnings = _pre_send_check(settings, issue, audience, check, force or local, dry_run=False)
    warnings += hosting_warnings(settings)
    hashed = _issue_hash(issue)
    db = store.connect(settings.database)
    try:
        plan, changed = _plan(db, issue, audience, ps.name, warnings, retry_uncertain)
        refuse_resend(db, issue.slug, audience, resend,  # before asking, not after
                      subject=issue.subject, body=hashed)
        _refuse_sent_elsewhere(issue, audience, resend)
        if plan.resuming is None and plan.recipients == 0:  # not "Send to 0 recipients?"
            raise nobody_to_send_to(audience)
        # A resume is not asked again, unless what goes out differs from what was confirmed.
        if audience.kind == "list" and (plan.resuming is None or changed) and confirm is not None:
            if not confirm(plan):
                raise DeliveryError("send cancelled: nothing was sent")
        if web is not None and provider_class(ps.name).remote:  # the outbox mails nobody
            plan.warnings.extend(_go_live(settings, issue, audience, web))
        campaign, created = find_or_create_campaign(
            db,
            slug=issue.slug,
            draft_path=_draft_label(settings, issue.source),
            subject=issue.subject,
            audience=audience,
            provider=ps.name,
            resend=resend,
            body=hashed,
        )
    finally:
        db.conn.close()
    report = run_campaign(
        settings,
        campaign.id,
        message_factory(settings, issue, campaign.id),
        provider_settings=ps,
        retry_uncertain=retry_uncertain,
        on_progress=on_progress,
    )
    report.created = created
    report.warnings = plan.warnings
    return report


def retry_failed(
    settings: Settings,
    campaign_id: int,
    *,
    provider: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    retry_uncertain: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SendReport:
    """Send the failed rows of campaign `campaign_id` again (the draft is rebuilt)."""
    db = store.connect(settings.database)
    try:
        campaign = get_campaign(db, campaign_id)
    finally:
        db.conn.close()
    if campaign.counts.failed == 0 and not (retry_uncertain and campaign.counts.uncertain):
        raise DeliveryError(
            f"campaign {campaign_id} has no failed deliveries to retry "
            "(`newsletter campaigns " + str(campaign_id) + "` shows its rows)"
        )
    return _send_again(settings, campaign, provider=provider, concurrency=concurrency,
                       rate=rate, retry_failed=True, retry_uncertain=retry_uncertain,
                       on_progress=on_progress)


def settle_as_sent(settings: Settings, campaign_id: int) -> tuple[Campaign, int]:
    """The writer knows the uncertain messages of a campaign went out (the provider's
    log says so): mark them sent. Returns the campaign as it ends and how many (0 when
    none is uncertain: settling twice is no error)."""
    with CampaignLock(settings.database, campaign_id):
        db = store.connect(settings.database)
        try:
            get_campaign(db, campaign_id)  # no such campaign: an error
            n = mark_uncertain_sent(db, campaign_id)
            return get_campaign(db, campaign_id), n
        finally:
            db.conn.close()


def resend_uncertain(
    settings: Settings,
    campaign_id: int,
    *,
    provider: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> SendReport:
    """The writer chooses to send the uncertain readers of a campaign the issue (again):
    they are queued and sent now, the draft rebuilt as for --retry-failed. With none
    uncertain nothing is sent (`report.run` is None)."""
    db = store.connect(settings.database)
    try:
        campaign = get_campaign(db, campaign_id)
    finally:
        db.conn.close()
    if not campaign.counts.uncertain:
        return SendReport(campaign)
    return _send_again(settings, campaign, provider=provider, concurrency=concurrency,
                       rate=rate, retry_failed=False, retry_uncertain=True,
                       on_progress=on_progress)


def _send_again(
    settings: Settings, campaign: Campaign, *, provider: str | None,
    concurrency: int | None, rate: float | None, retry_failed: bool, retry_uncertain: bool,
    on_progress: ProgressCallback | None,
) -> SendReport:
    """Rebuild the campaign's draft and send its failed and/or uncertain rows again."""
    campaign_id = campaign.id
    ps = provider_settings_for(settings, provider, concurrency, rate)
    _check_ready(settings, ps)
    path = Path(campaign.draft_path)
    if not path.is_absolute():
        path = settings.root / path
    if not path.exists():
        raise DeliveryError(
            f"the draft of campaign {campaign_id} ({campaign.draft_path}) is gone: restore it "
            "to send its deliveries again"
        )
    issue = build_issue(settings, path)
    return run_campaign(
        settings,
        campaign_id,
        message_factory(settings, issue, campaign_id),
        provider_settings=ps,
        retry_failed=retry_failed,
        retry_uncertain=retry_uncertain,
        on_progress=on_progress,
    )


def dry_run(
    settings: Settings,
    issue: Issue,
    to: str,
    *,
    check: PreSendCheck,
    provider: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DryRunReport:
    """Build every message of a send and count it; nothing is sent or recorded.

    `issue` is built by the caller and `check` run on it as `send_draft()` does. Streams
    recipients from the database, so memory stays flat for any list size.
    """
    started = time.monotonic()
    audience = audience_for_issue(settings, to, issue.draft.topics if issue.draft else ())
    ps = provider_settings_for(settings, provider)
    provider_class(ps.name)  # an unknown provider is an error even in a dry run
    warnings = _pre_send_check(settings, issue, audience, check, force=True, dry_run=True)
    report = DryRunReport(issue.subject, audience, ps.name, warnings=[*issue.warnings, *warnings])
    make = message_factory(settings, issue)
    db = store.connect(settings.database)
    try:
        total = count_audience(db, audience)
        for row in iter_audience_rows(db, audience):
            message = make(row)
            size = len(message.as_bytes())
            report.messages += 1
            report.total_bytes += size
            report.largest_bytes = max(report.largest_bytes, size)
            if report.sample is None:
                report.sample = message
            if on_progress is not None and report.messages % 200 == 0:
                on_progress(report.messages, total)
    finally:
        db.conn.close()
    if report.messages == 0:
        raise nobody_to_send_to(audience)
    report.seconds = time.monotonic() - started
    return report


__all__ = [
    "Counts",
    "DryRunReport",
    "MakeLive",
    "NewsletterError",
    "PreSendCheck",
    "SendPlan",
    "SendReport",
    "dry_run",
    "message_factory",
    "parse_audience",
    "provider_settings_for",
    "resend_uncertain",
    "retry_failed",
    "run_campaign",
    "send_draft",
    "settle_as_sent",
]
