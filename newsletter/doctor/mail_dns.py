"""DNS for the From domain: SPF, DKIM for the provider's selector, DMARC.

Gmail's and Yahoo's rules for bulk senders (5,000 messages a day and more) ask for SPF
and DKIM, and a DMARC record (p=none is enough) that passes with the From domain
aligned. DKIM is what aligns with most providers (they send from their own bounce
domain, so SPF passes for that one, not the From domain): the selector's key must be
published under the From domain itself. Read with dnspython, from the system's resolver
or the server given (`--dns 127.0.0.1:5353`).
"""

from __future__ import annotations

import dns.exception
import dns.resolver

from newsletter.delivery.providers.registry import provider_class
from newsletter.doctor.report import Report
from newsletter.errors import NewsletterError
from newsletter.settings import Settings

DMARC_POLICIES = ("none", "quarantine", "reject")


class DNSTrouble(Exception):
    """The question could not be answered (timeout, no server): not the same as no record."""


def make_resolver(server: str | None, timeout: float) -> dns.resolver.Resolver:
    """The system's resolver, or one asking only `server` ("HOST" or "HOST:PORT")."""
    if server:
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host or server]
        resolver.port = int(port) if port else 53
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at `name` (each record's strings joined); [] when there are none."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DNSTrouble(f"could not ask DNS for {name} ({type(exc).__name__}: {exc})") from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def tags(record: str) -> dict[str, str]:
    """`v=DMARC1; p=none` → {"v": "DMARC1", "p": "none"} (names lower-cased)."""
    out = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def check_dns(settings: Settings, report: Report, server: str | None = None,
              timeout: float = 3.0) -> None:
    domain = settings.sender_address.rpartition("@")[2].lower().rstrip(".")
    if not domain:
        report.add("dns", "error", "no From address: set [newsletter] from = \"Name "
                   "<you@your-domain>\" (DNS is checked for its domain)")
        return
    try:
        cls = provider_class(settings.provider.name)
    except NewsletterError:
        cls = None  # the provider line says why; the DNS is checked without its hints
    resolver = make_resolver(server, timeout)
    # A provider that sends as a subdomain of From (Mailgun's `domain = "mg.example.com"`)
    # publishes SPF and DKIM there; DMARC's relaxed alignment takes it for the From domain.
    sending = str(settings.provider.get("domain") or "").lower().rstrip(".")
    signing = sending if sending.endswith("." + domain) else domain
    for check, where in ((_spf, signing), (_dkim, signing), (_dmarc, domain)):
        try:
            check(resolver, where, settings, cls, report)
        except DNSTrouble as exc:
            report.add(check.__name__.strip("_"), "error",
                       f"{exc}: check the network (or the server given with --dns)")


def _spf(resolver: dns.resolver.Resolver, domain: str, settings: Settings,
         cls: type | None, report: Report) -> None:
    include = getattr(cls, "spf_include", None)
    records = [t for t in txt(resolver, domain) if t.lower().startswith("v=spf1")]
    wanted = f"v=spf1 include:{include} ~all" if include else "v=spf1 include:<your provider> ~all"
    if not records:
        report.add("spf", "error", f"no SPF record for {domain}: add a TXT record \"{wanted}\" "
                   "(Gmail and Yahoo require SPF)")
    elif len(records) > 1:
        report.add("spf", "error", f"{domain} has {len(records)} SPF records, which receivers "
                   "treat as an error: merge them into one")
    elif records[0].lower().split()[-1] in ("+all", "all"):
        report.add("spf", "error", f"the SPF record of {domain} ends with +all, so it passes "
                   "anyone's mail: end it with ~all or -all")
    elif include and f"include:{include}" not in records[0].lower():
        report.add("spf", "warning", f"the SPF record of {domain} (\"{records[0]}\") does not "
                   f"include {include}: add include:{include} (unless {settings.provider.name} "
                   "sends from a return-path domain of its own, which has its own record)")
    else:
        report.add("spf", "ok", f"SPF for {domain}: \"{records[0]}\"")


def _dkim(resolver: dns.resolver.Resolver, domain: str, settings: Settings,
          cls: type | None, report: Report) -> None:
    name = settings.provider.name
    selector = settings.provider.get("dkim_selector") or getattr(cls, "default_dkim_selector",
                                                                 None)
    if not selector:
        report.add("dkim", "warning", f"no DKIM selector known for {name}: set [provider] "
                   "dkim_selector to the name before ._domainkey in the DNS records your "
                   "provider gave you, so doctor can check the key")
        return
    where = f"{selector}._domainkey.{domain}"
    keys = [tags(t) for t in txt(resolver, where)]
    keys = [k for k in keys if "p" in k]
    if not keys:
        report.add("dkim", "error", f"no DKIM key at {where}: publish the DKIM record {name} "
                   "shows for your domain (Gmail and Yahoo require DKIM, and it is what "
                   "aligns with From for DMARC)")
    elif not any(k["p"] for k in keys):
        report.add("dkim", "error", f"the DKIM key at {where} is empty (revoked): publish the "
                   f"current key from {name}")
    else:
        report.add("dkim", "ok", f"DKIM key found at {where} (signatures align with From)")


def _dmarc(resolver: dns.resolver.Resolver, domain: str, settings: Settings,
           cls: type | None, report: Report) -> None:
    # A subdomain without its own record falls under its organizational domain's.
    labels = domain.split(".")
    found: list[str] = []
    where = f"_dmarc.{domain}"
    for start in range(0, max(len(labels) - 1, 1)):
        where = "_dmarc." + ".".join(labels[start:])
        found = [t for t in txt(resolver, where) if t.upper().startswith("V=DMARC1")]
        if found:
            break
    fix = f"add a TXT record at _dmarc.{domain}: \"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\""
    if not found:
        report.add("dmarc", "error", f"no DMARC record for {domain}: {fix} (Gmail and Yahoo "
                   "require one from bulk senders)")
        return
    if len(found) > 1:
        report.add("dmarc", "error", f"{where} has {len(found)} DMARC records, so receivers "
                   "ignore them all: keep one")
        return
    record = tags(found[0])
    policy = record.get("p", "").lower()
    if policy not in DMARC_POLICIES:
        report.add("dmarc", "error", f"the DMARC record at {where} has no valid policy "
                   f"(p={policy or 'missing'}): {fix}")
        return
    if record.get("adkim", "r").lower() == "s" and record.get("aspf", "r").lower() == "s":
        note = "; strict alignment: DKIM must sign as exactly " + domain
    else:
        note = ""
    report.add("dmarc", "ok", f"DMARC at {where}: p={policy}"
               + (" (monitoring only: enough for Gmail's and Yahoo's rules)"
                  if policy == "none" else "") + note)
