"""Webhooks through handle(): requests signed as each provider signs them, tampered, unsigned,
stale and replayed ones, checked against reader status and events in a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter import store
from newsletter.audience.subscribers import add_subscriber
from newsletter.errors import ConfigError
from newsletter.feedback.webhooks import WebhookResponse, handle, ses
from newsletter.settings import Settings, WebhookSettings, settings_from_dict
from tests.conftest import DEFAULT_TOML

from . import webhook_signers as sign

READER, OTHER, THIRD = "reader@example.com", "other@example.com", "third@example.com"


@pytest.fixture(scope="module")
def sns_host() -> Iterator[sign.SnsHost]:
    host = sign.SnsHost()
    yield host
    host.close()


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    db = store.connect(tmp_path / "newsletter.db")
    for email in (READER, OTHER, THIRD):
        add_subscriber(db, email)
    return db


@pytest.fixture
def make_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sns_host: sign.SnsHost
) -> Callable[..., Settings]:
    for name, value in sign.ENV.items():
        monkeypatch.setenv(name, value)

    def make(bounces: dict[str, Any] | None = None, **webhooks: Any) -> Settings:
        data = tomllib.loads(DEFAULT_TOML)
        data["webhooks"] = {**sign.TABLE, "insecure_test_only_sns_host": sns_host.netloc,
                            **webhooks}
        if bounces is not None:
            data["bounces"] = bounces
        return settings_from_dict(tmp_path, data)

    return make


@pytest.fixture
def post(db: sqlite_utils.Database, make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    settings = make_settings()

    def run(request: Any, settings: Settings = settings) -> WebhookResponse:
        return handle(request, settings, db)

    return run


def status(db: sqlite_utils.Database, email: str) -> str:
    return db.execute("SELECT status FROM subscribers WHERE email = ?", [email]).fetchone()[0]


def webhook_events(db: sqlite_utils.Database) -> list[tuple[str, str, str, str]]:
    return db.execute(
        "SELECT email, kind, source, external_id FROM events WHERE source LIKE 'webhook:%' "
        "ORDER BY id"
    ).fetchall()


def assert_untouched(db: sqlite_utils.Database) -> None:
    assert {status(db, e) for e in (READER, OTHER, THIRD)} == {"active"}
    assert webhook_events(db) == []
    assert db.execute("SELECT count(*) FROM webhook_tokens").fetchone()[0] == 0


# --- Postmark -------------------------------------------------------------------------------

def pm_bounce(email: str = READER, kind: str = "HardBounce", ident: int = 42,
              at: str = "2026-12-01T10:00:00.1234567Z") -> dict[str, Any]:
    return {"RecordType": "Bounce", "ID": ident, "Type": kind, "TypeCode": 1, "Email": email,
            "BouncedAt": at, "Description": "The server was unable to deliver your message"}


def test_postmark_hard_bounce_stops_once(post: Callable[..., Any], db) -> None:
    assert post(sign.postmark(pm_bounce())).status == 200
    assert status(db, READER) == "bounced"
    assert webhook_events(db) == [(READER, "hard_bounce", "webhook:postmark",
                                   "postmark:bounce:42")]
    # Postmark retries on a timeout: the same event is applied once.
    assert post(sign.postmark(pm_bounce())).status == 200
    assert len(webhook_events(db)) == 1


def test_postmark_wrong_or_missing_credentials_change_nothing(post, db) -> None:
    wrong = post(sign.postmark(pm_bounce(), password="guess"))
    unsigned = post(sign.request("postmark", json.dumps(pm_bounce()).encode()))
    assert (wrong.status, unsigned.status) == (401, 401)
    assert wrong.text == unsigned.text == "refused\n"
    assert_untouched(db)


def test_postmark_soft_bounces_count_toward_the_policy(make_settings, db) -> None:
    settings = make_settings(bounces={"soft_limit": 2})
    # On two days after the reader joined (soft bounces from before they joined don't count).
    day = [(dt.datetime.now(dt.UTC) + dt.timedelta(days=n)).strftime("%Y-%m-%dT10:00:00Z")
           for n in (1, 2)]
    first = sign.postmark(pm_bounce(kind="SoftBounce", ident=1, at=day[0]))
    assert handle(first, settings, db).status == 200
    assert status(db, READER) == "active"
    second = sign.postmark(pm_bounce(kind="Transient", ident=2, at=day[1]))
    assert handle(second, settings, db).status == 200
    assert status(db, READER) == "bounced"


def test_postmark_complaint_and_subscription_change(post, db) -> None:
    complaint = {"RecordType": "SpamComplaint", "ID": 7, "Type": "SpamComplaint",
                 "Email": READER, "BouncedAt": "2026-12-01T10:00:00Z"}
    change = {"RecordType": "SubscriptionChange", "MessageID": "abc", "Recipient": OTHER,
              "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "ChangedAt": "2026-12-01T10:00:00Z"}
    reactivated = {**change, "Recipient": THIRD, "SuppressSending": False}
    for payload in (complaint, change, reactivated):
        assert post(sign.postmark(payload)).status == 200
    assert (status(db, READER), status(db, OTHER), status(db, THIRD)) == (
        "complained", "unsubscribed", "active")


def test_unknown_event_types_are_acknowledged_and_ignored(post, db) -> None:
    assert post(sign.postmark({"RecordType": "Open", "Recipient": READER})).status == 200
    assert post(sign.postmark(pm_bounce(kind="AutoResponder"))).status == 200
    assert post(sign.sendgrid([{"event": "open", "email": READER, "sg_event_id": "o1"}])
                ).status == 200
    assert post(sign.resend({"type": "email.opened", "data": {"to": [READER]}})).status == 200
    assert {status(db, e) for e in (READER, OTHER, THIRD)} == {"active"}
    assert webhook_events(db) == []


# --- SendGrid -------------------------------------------------------------------------------

def sg(event: str, email: str, ident: str, **extra: Any) -> dict[str, Any]:
    return {"email": email, "timestamp": int(time.time()), "event": event, "sg_event_id": ident,
            "sg_message_id": "m.1", **extra}


def test_sendgrid_batch_applies_each_event(post, db) -> None:
    batch = [sg("bounce", READER, "e1", type="bounce", reason="550 5.1.1 no such user"),
             sg("spamreport", OTHER, "e2"), sg("group_unsubscribe", THIRD, "e3"),
             sg("processed", READER, "e4"),
             {"event": "dropped", "reason": "Invalid", "email": "not an address"}]
    response = post(sign.sendgrid(batch))
    assert response.status == 200
    assert (status(db, READER), status(db, OTHER), status(db, THIRD)) == (
        "bounced", "complained", "unsubscribed")
    assert [row[3] for row in webhook_events(db)] == ["sendgrid:e1", "sendgrid:e2", "sendgrid:e3"]


def test_sendgrid_deferred_and_blocked_are_soft(post, db) -> None:
    post(sign.sendgrid([sg("deferred", READER, "d1"),
                        sg("bounce", OTHER, "b1", type="blocked", reason="blocked")]))
    assert (status(db, READER), status(db, OTHER)) == ("active", "active")
    assert [row[1] for row in webhook_events(db)] == ["soft_bounce", "soft_bounce"]


def test_sendgrid_tampered_unsigned_stale_or_other_key_refused(post, db) -> None:
    good = sign.sendgrid([sg("bounce", READER, "e1", type="bounce")])
    tampered = sign.request("sendgrid", good.body.replace(READER.encode(), OTHER.encode()),
                            dict(good.headers))
    unsigned = sign.request("sendgrid", good.body)
    stale = sign.sendgrid([sg("bounce", READER, "e1")], timestamp=int(time.time()) - 3600)
    other_key = sign.sendgrid([sg("bounce", READER, "e1")],
                              key=ec.generate_private_key(ec.SECP256R1()))
    answers = [post(r) for r in (tampered, unsigned, stale, other_key)]
    assert [a.status for a in answers] == [403, 401, 403, 403]
    assert {a.text for a in answers} == {"refused\n"}
    assert_untouched(db)


# --- Mailgun --------------------------------------------------------------------------------

def mg(event: str, email: str = READER, ident: str = "ev1", **extra: Any) -> dict[str, Any]:
    return {"event": event, "id": ident, "recipient": email, "timestamp": time.time(),
            "delivery-status": {"code": 550, "description": "mailbox unavailable"}, **extra}


def test_mailgun_permanent_failure_stops_and_temporary_counts(post, db) -> None:
    assert post(sign.mailgun(mg("failed", severity="permanent"))).status == 200
    assert post(sign.mailgun(mg("failed", OTHER, "ev2", severity="temporary"))).status == 200
    assert post(sign.mailgun(mg("complained", THIRD, "ev3"))).status == 200
    assert (status(db, READER), status(db, OTHER), status(db, THIRD)) == (
        "bounced", "active", "complained")
    assert webhook_events(db)[0] == (READER, "hard_bounce", "webhook:mailgun", "mailgun:ev1")
    assert webhook_events(db)[1][1] == "soft_bounce"


def test_mailgun_unsubscribed(post, db) -> None:
    assert post(sign.mailgun(mg("unsubscribed"))).status == 200
    assert status(db, READER) == "unsubscribed"


def test_mailgun_replayed_token_refused(post, db) -> None:
    first = sign.mailgun(mg("failed", severity="temporary"), token="t" * 50)
    assert post(first).status == 200
    # The same signed request again (a second soft bounce would count): refused.
    replay = sign.request("mailgun", first.body.replace(b'"ev1"', b'"ev9"'))
    assert post(sign.mailgun(mg("failed", ident="ev9", severity="temporary"),
                             token="t" * 50)).status == 403
    assert post(replay).status == 403
    assert len(webhook_events(db)) == 1


def test_mailgun_bad_signature_and_stale_refused(post, db) -> None:
    wrong_key = sign.mailgun(mg("failed", severity="permanent"), key="key-wrong")
    stale = sign.mailgun(mg("failed", severity="permanent"), timestamp=int(time.time()) - 900)
    unsigned = sign.request("mailgun", json.dumps({"event-data": mg("failed")}).encode())
    assert [post(r).status for r in (wrong_key, stale, unsigned)] == [403, 403, 401]
    assert_untouched(db)


# --- Resend (Svix) --------------------------------------------------------------------------

def rs(kind: str, email: str = READER, bounce_type: str = "Permanent") -> dict[str, Any]:
    return {"type": kind, "created_at": "2026-12-01T10:00:00.000Z",
            "data": {"email_id": "em_1", "to": [email], "subject": "Issue 1",
                     "bounce": {"type": bounce_type, "message": "550 no such user"}}}


def test_resend_bounce_and_complaint(post, db) -> None:
    assert post(sign.resend(rs("email.bounced"), msg_id="msg_1")).status == 200
    assert post(sign.resend(rs("email.complained", OTHER))).status == 200
    assert post(sign.resend(rs("email.bounced", THIRD, "Transient"))).status == 200
    assert (status(db, READER), status(db, OTHER), status(db, THIRD)) == (
        "bounced", "complained", "active")
    assert webhook_events(db)[0] == (READER, "hard_bounce", "webhook:resend",
                                     "resend:msg_1:email.bounced")


def test_resend_accepts_any_of_several_signatures(post, db) -> None:
    # While a secret rotates, Svix sends one signature per secret.
    old = "v1," + "A" * 43 + "="
    assert post(sign.resend(rs("email.bounced"), extra_signatures=(old,))).status == 200
    assert status(db, READER) == "bounced"


def test_resend_bad_stale_replayed_refused(post, db) -> None:
    forged = sign.resend(rs("email.bounced"), secret="whsec_" + "Zm9yZ2Vk" * 3)
    stale = sign.resend(rs("email.bounced"), timestamp=int(time.time()) - 301)
    unsigned = sign.request("resend", json.dumps(rs("email.bounced")).encode())
    assert [post(r).status for r in (forged, stale, unsigned)] == [403, 403, 401]
    assert_untouched(db)
    first = sign.resend(rs("email.bounced", bounce_type="Transient"), msg_id="msg_x")
    assert post(first).status == 200
    assert post(first).status == 403  # the same svix-id again
    assert len(webhook_events(db)) == 1


# --- SES through SNS ------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_signed_v1_and_v2(post, db, sns_host: sign.SnsHost, version: str) -> None:
    message = sns_host.notification(sign.ses_bounce(READER), version)
    assert post(sign.ses_request(message)).status == 200
    assert status(db, READER) == "bounced"
    assert webhook_events(db) == [(READER, "hard_bounce", "webhook:ses",
                                   f"ses:{message['MessageId']}")]


def test_ses_complaint_transient_and_certificate_cached(post, db, sns_host) -> None:
    before = sns_host.cert_gets
    complaint = {"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": OTHER}, {"emailAddress": THIRD}],
        "complaintFeedbackType": "abuse", "timestamp": "2026-12-01T10:00:00.000Z"}}
    assert post(sign.ses_request(sns_host.notification(complaint))).status == 200
    assert post(sign.ses_request(
        sns_host.notification(sign.ses_bounce(READER, "Transient")))).status == 200
    assert (status(db, READER), status(db, OTHER), status(db, THIRD)) == (
        "active", "complained", "complained")
    assert sns_host.cert_gets - before <= 1  # fetched at most once for this URL, then cached


def test_ses_tampered_foreign_cert_host_stale_refused(post, db, sns_host) -> None:
    good = sns_host.notification(sign.ses_bounce(READER))
    # The right certificate, but served from a host that is not SNS's (nor the test host).
    elsewhere = sns_host.cert_url.replace("127.0.0.1", "localhost")
    tampered = {**good, "Message": json.dumps(sign.ses_bounce(OTHER))}
    foreign = sns_host.message("Notification", {"Message": json.dumps(sign.ses_bounce(READER))},
                               cert_url=elsewhere)
    old = sns_host.message("Notification", {"Message": json.dumps(sign.ses_bounce(READER)),
                                            "Timestamp": "2026-01-01T00:00:00.000Z"})
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    gets = sns_host.cert_gets
    answers = [post(sign.ses_request(m)) for m in (tampered, foreign, old, unsigned)]
    assert [a.status for a in answers] == [403, 403, 403, 401]
    assert sns_host.cert_gets == gets  # nothing fetched from the foreign host
    assert_untouched(db)


def test_ses_topic_restriction(make_settings, db, sns_host) -> None:
    settings = make_settings(ses_topic_arns=["arn:aws:sns:eu-west-1:1:other-topic"])
    message = sign.ses_request(sns_host.notification(sign.ses_bounce(READER)))
    assert handle(message, settings, db).status == 403
    assert_untouched(db)


def test_ses_subscription_confirmed_by_get(post, db, sns_host) -> None:
    url = f"http://{sns_host.netloc}/?Action=ConfirmSubscription&Token=tok1"
    message = sns_host.message("SubscriptionConfirmation", {
        "Message": "You have chosen to subscribe", "Token": "tok1", "SubscribeURL": url})
    response = post(sign.ses_request(message))
    assert (response.status, response.text) == (200, "subscription confirmed\n")
    assert sns_host.confirmations[-1] == "/?Action=ConfirmSubscription&Token=tok1"


def test_ses_subscription_logged_when_auto_confirm_is_off(
    make_settings, db, sns_host, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(ses_confirm_subscriptions=False)
    url = f"http://{sns_host.netloc}/?Action=ConfirmSubscription&Token=tok2"
    message = sns_host.message("SubscriptionConfirmation", {
        "Message": "subscribe?", "Token": "tok2", "SubscribeURL": url})
    with caplog.at_level(logging.WARNING):
        assert handle(sign.ses_request(message), settings, db).status == 200
    assert url in caplog.text
    assert not any("tok2" in path for path in sns_host.confirmations)


def test_ses_subscribe_url_on_a_foreign_host_is_refused(post, sns_host) -> None:
    message = sns_host.message("SubscriptionConfirmation", {
        "Message": "subscribe?", "Token": "t",
        "SubscribeURL": f"http://localhost:{sns_host.netloc.split(':')[1]}/?Token=t3"})
    assert post(sign.ses_request(message)).status == 403
    assert not any("t3" in path for path in sns_host.confirmations)


@pytest.mark.parametrize("url, ok", [
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", True),
    ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem", False),
    ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
    ("https://evilsns.us-east-1.amazonaws.com/x.pem", False),
    ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
    ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
    ("http://127.0.0.1:9/x.pem", False),  # the test host only when explicitly set
])
def test_sns_url_rule(url: str, ok: bool) -> None:
    assert ses.allowed_url(url, WebhookSettings()) is ok


# --- What every provider shares -------------------------------------------------------------

def test_event_times_are_the_providers_in_utc(post, db) -> None:
    post(sign.postmark(pm_bounce(at="2026-11-30T23:30:00.1234567-05:00")))
    row = db.execute("SELECT created_at FROM events WHERE source = 'webhook:postmark'").fetchone()
    assert row[0] == "2026-12-01T04:30:00Z"


def test_refusals_log_no_secret(post, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        post(sign.postmark(pm_bounce(), password="guess"))
        post(sign.mailgun(mg("failed"), key="key-wrong"))
        post(sign.resend(rs("email.bounced"), timestamp=1))
    assert caplog.text  # refusals are logged …
    for secret in (sign.POSTMARK_PASSWORD, "guess", sign.MAILGUN_KEY, sign.RESEND_SECRET):
        assert secret not in caplog.text  # … without what was sent or expected


def test_body_over_the_cap_is_refused(make_settings, db) -> None:
    settings = make_settings(max_body_bytes=2048)
    big = sign.sendgrid([sg("bounce", READER, f"e{i}", type="bounce") for i in range(40)])
    assert handle(big, settings, db).status == 413
    assert_untouched(db)


def test_unknown_or_unconfigured_provider_is_404(make_settings, db) -> None:
    settings = make_settings(ses_enabled=False)
    assert handle(sign.request("sparkpost", b"[]"), settings, db).status == 404
    message = sign.request("ses", b"{}")
    assert handle(message, settings, db).status == 404


def test_missing_secret_env_is_503_and_changes_nothing(post, db, monkeypatch) -> None:
    monkeypatch.delenv("NL_MAILGUN_KEY")
    response = post(sign.mailgun(mg("failed", severity="permanent")))
    assert response.status == 503
    assert MAILGUN_SECRET_NOT_IN(response.text)
    assert_untouched(db)


def MAILGUN_SECRET_NOT_IN(text: str) -> bool:  # noqa: N802
    return sign.MAILGUN_KEY not in text and "NL_MAILGUN_KEY" not in text


def test_signed_but_unreadable_body_is_400(post, db) -> None:
    response = post(sign.postmark({"RecordType": "Bounce", "Type": "HardBounce", "ID": 1}))
    assert response.status == 400
    assert_untouched(db)


def test_settings_list_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        WebhookSettings.from_table({
            "mailgun_signing_key_env": "key-abcdef0123456789",  # a secret, not a variable name
            "postmark_user_env": "PM_USER",
            "max_body_bytes": "big",
            "ses_enabled": "yes",
            "colour": "blue",
        })
    text = str(caught.value)
    for needle in ("webhooks.colour", "webhooks.mailgun_signing_key_env must name an environment",
                   "postmark_password_env", "webhooks.max_body_bytes", "webhooks.ses_enabled"):
        assert needle in text
    assert "\n" not in text


def test_bad_settings_are_refused_when_they_load_never_answered_500(make_settings, db) -> None:
    # Once a 500 at the first request; now the server cannot start with them (issue 17).
    with pytest.raises(ConfigError, match="webhooks.max_body_bytes must be a whole number"):
        make_settings(max_body_bytes=-1)
    assert_untouched(db)


# --- which send a report is about -----------------------------------------------------------

# (the id the provider's send API answered, as the delivery log keeps it; the id its webhook
# names for the same message)
SENT_IDS = {
    "postmark": ("b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"),
    "sendgrid": ("W86EgYT6SQKk0lRflfLRsA",
                 "W86EgYT6SQKk0lRflfLRsA.filterdrecv-5bf99c48d-2x4bq-1-5E3AAB52-31.0"),
    "mailgun": ("<20261201100000.1.5A1B@mg.example.com>", "20261201100000.1.5A1B@mg.example.com"),
    "resend": ("4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"),
    "ses": ("0100018c-5e1a-4f2b-a9e8-7d3c2b1a0f9e-000000",
            "0100018c-5e1a-4f2b-a9e8-7d3c2b1a0f9e-000000"),
}


def soft_bounce(provider: str, message_id: str, when: dt.datetime, n: int,
                sns_host: sign.SnsHost) -> Any:
    """A soft bounce of READER about `message_id` at `when`, signed as `provider` signs it."""
    at = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if provider == "postmark":
        return sign.postmark({**pm_bounce(kind="SoftBounce", ident=n, at=at),
                              "MessageID": message_id})
    if provider == "sendgrid":
        return sign.sendgrid([sg("deferred", READER, f"d{n}", sg_message_id=message_id,
                                 timestamp=int(when.timestamp()))])
    if provider == "mailgun":
        return sign.mailgun(mg("failed", ident=f"ev{n}", severity="temporary",
                               timestamp=when.timestamp(),
                               message={"headers": {"message-id": message_id}}))
    if provider == "resend":
        return sign.resend({"type": "email.bounced", "created_at": at, "data": {
            "email_id": message_id, "to": [READER],
            "bounce": {"type": "Transient", "message": "452 mailbox full"}}})
    bounce = sign.ses_bounce(READER, "Transient")
    bounce["mail"]["messageId"] = message_id
    bounce["bounce"]["timestamp"] = at
    return sign.ses_request(sns_host.notification(bounce))


@pytest.mark.parametrize("provider", sorted(SENT_IDS))
def test_soft_bounces_about_one_send_count_once_whatever_day_they_come(
    provider: str, make_settings, db, sns_host
) -> None:
    # A provider reports each failed retry of one message, over a day or more: that is one
    # send that did not arrive, not several; a soft bounce about the next send is the second.
    settings = make_settings(bounces={"soft_limit": 2})
    reader = db.execute("SELECT id FROM subscribers WHERE email = ?", [READER]).fetchone()[0]
    stored, named = SENT_IDS[provider]
    for campaign, provider_id in ((1, stored), (2, "another-message-id")):
        db.execute("INSERT INTO campaigns (id, slug, draft_path, subject, audience, kind, "
                   "provider, created_at) VALUES (?, ?, 'drafts/x.md', 'Issue', 'subscribers', "
                   "'list', ?, '2026-12-01T09:00:00Z')", [campaign, f"issue-{campaign}", provider])
        db.execute("INSERT INTO deliveries (campaign_id, subscriber_id, email, state, "
                   "provider_message_id, updated_at, sent_at) VALUES (?, ?, ?, 'sent', ?, "
                   "'2026-12-01T09:00:00Z', '2026-12-01T09:00:00Z')",
                   [campaign, reader, READER, provider_id])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for n, days in enumerate((1, 2), start=1):  # the first send, retried on the next day
        assert handle(soft_bounce(provider, named, now + dt.timedelta(days=days), n, sns_host),
                      settings, db).status == 200
        assert status(db, READER) == "active"
    assert db.execute("SELECT campaign_id FROM events WHERE kind = 'soft_bounce'").fetchall() == [
        (1,), (1,)]
    third = soft_bounce(provider, "another-message-id" if provider != "sendgrid"
                        else "another-message-id.filter0", now + dt.timedelta(days=3), 3, sns_host)
    assert handle(third, settings, db).status == 200
    assert status(db, READER) == "bounced"
