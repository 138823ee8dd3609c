"""The HTML report: list size over time and each issue's results, as charts and tables.

The charts are pygal's static SVG, put inline with pygal's scripts left out: the file
needs no network and no JavaScript, opens from a mail attachment or a USB stick, and
prints. pygal is pure Python with no dependencies of its own, which is why it was chosen
over plotting libraries that ship a browser bundle or a numeric stack.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import pygal
from pygal.style import Style

from newsletter.stats.numbers import Growth, IssueResult, Transactional

_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1f2328",
    foreground_strong="#1f2328",
    foreground_subtle="#57606a",
    colors=("#0b6bcb", "#b35900", "#1a7f37", "#8250df", "#cf222e"),
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=14,
    title_font_size=18,
)
_CHART = {"style": _STYLE, "js": [], "disable_xml_declaration": True, "width": 900,
          "height": 380, "explicit_size": False, "legend_at_bottom": True,
          "print_values": False, "show_y_guides": True, "truncate_label": -1}


def _ticks(low: int, high: int) -> list[int]:
    """Whole-number y labels from low to high, about six of them (readers come whole)."""
    span = max(1, high - low)
    step = 1
    while span / step > 6:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50…
    first = (low // step) * step
    return list(range(first, high + step, step))


def render(name: str, results: Sequence[IssueResult], growth: Growth,
           extra: Transactional) -> str:
    """The whole report as one self-contained HTML document."""
    e = html.escape
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(name)}: results and list growth</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{e(name)}</h1>",
        f'<p class="lede">Results and list growth, {e(when)}. Counted from the delivery log '
        "and the record of every join and leave"
        + ("; opens and clicks from [analytics], turned on by the writer.</p>"
           if any(r.engagement is not None for r in results) else ": no tracking.</p>"),
        "<h2>List size</h2>",
        _figure(_growth_chart(growth), "Active readers at the end of each "
                f"{growth.period}, for {growth.segment}."),
        _figure(_flow_chart(growth), f"Readers who joined and left, per {growth.period}."),
        "<h2>Issues</h2>",
    ]
    if results:
        parts += [
            _figure(_issues_chart(results), "Per issue, as a share of the messages sent."),
            _issues_table(results),
        ]
    else:
        parts.append("<p>No issue has been sent to the list yet.</p>")
    if any(r.engagement is not None for r in results):
        parts += ["<h2>Opens and clicks</h2>", _engagement_tables(results)]
    parts += [
        f"<h2>Per {growth.period}</h2>",
        _growth_table(growth),
        "<h2>Other mail</h2>",
        "<p>Confirmation, manage-link and welcome emails are counted apart from issues: "
        f"{extra.confirmations_sent} confirmations, {extra.manage_links_sent} manage links "
        f"and {extra.welcomes_sent} welcomes sent; {extra.queued_or_failed} waiting or failed."
        "</p>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


# pygal puts its tooltip script's settings in each chart even when no script is loaded:
# they do nothing without it, and the report carries no script at all.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)


def _figure(svg: str, caption: str) -> str:
    svg = _SCRIPT.sub("", svg)
    return (f'<figure class="chart">{svg}<figcaption>{html.escape(caption)}</figcaption>'
            "</figure>")


def _labels(growth: Growth) -> list[str]:
    fmt = "%d %b %Y" if growth.period == "week" else "%b %Y"
    return [b.start.strftime(fmt) for b in growth.buckets]


def _thin(labels: list[str]) -> list[str]:
    """At most ~12 x labels, so long histories stay readable."""
    step = max(1, len(labels) // 12)
    return [label if i % step == 0 else "" for i, label in enumerate(labels)]


def _growth_chart(growth: Growth) -> str:
    values = [b.active for b in growth.buckets]
    chart = pygal.Line(title="Active readers", show_dots=len(values) <= 40, fill=True,
                       y_labels=_ticks(0, max(values, default=0)), **_CHART)
    chart.x_labels = _thin(_labels(growth))
    chart.add("Active", values)
    return str(chart.render(is_unicode=True))


def _flow_chart(growth: Growth) -> str:
    b = growth.buckets
    top = max((x.joined for x in b), default=0)
    bottom = min((-(x.unsubscribed + x.bounced + x.complained) for x in b), default=0)
    chart = pygal.Bar(title="Joined and left", y_labels=_ticks(bottom, top), **_CHART)
    chart.x_labels = _thin(_labels(growth))
    chart.add("Joined", [b.joined for b in growth.buckets])
    chart.add("Unsubscribed", [-b.unsubscribed for b in growth.buckets])
    chart.add("Bounced or complained", [-(b.bounced + b.complained) for b in growth.buckets])
    return str(chart.render(is_unicode=True))


def _issues_chart(results: Sequence[IssueResult]) -> str:
    shown = list(reversed(results[:20]))  # oldest on the left
    chart = pygal.Bar(title="Per issue (% of sent)", value_formatter=lambda v: f"{v:.2f}%",
                      **_CHART)
    chart.x_labels = [f"#{r.id}" for r in shown]
    chart.add("Unsubscribed", [100 * r.rate(r.unsubscribes) for r in shown])
    chart.add("Bounced", [100 * r.rate(r.hard_bounces + r.soft_bounces) for r in shown])
    chart.add("Complaints", [100 * r.rate(r.complaints) for r in shown])
    chart.add("Failed", [100 * r.rate(r.failed) for r in shown])
    return str(chart.render(is_unicode=True))


def _growth_table(growth: Growth, shown: int = 24) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td>{b.joined}</td><td>{b.confirmed}</td><td>{b.unsubscribed}"
        f"</td><td>{b.bounced}</td><td>{b.complained}</td><td>{b.active}</td></tr>"
        for label, b in list(zip(_labels(growth), growth.buckets, strict=True))[-shown:][::-1]
    )
    caption = (f"The last {shown} ({len(growth.buckets)} in all: `newsletter stats --json` "
               "has every one), newest first" if len(growth.buckets) > shown else "Newest first")
    return (f"<table><caption>{caption}</caption><thead><tr><th scope=col>Period"
            "</th><th scope=col>Joined</th><th scope=col>Confirmed</th><th scope=col>"
            "Unsubscribed</th><th scope=col>Bounced</th><th scope=col>Complained</th>"
            f"<th scope=col>Active</th></tr></thead><tbody>{rows}</tbody></table>")


def _issues_table(results: Sequence[IssueResult]) -> str:
    e = html.escape

    def pct(r: IssueResult, n: int) -> str:
        return f"{n} <small>({100 * r.rate(n):.1f}%)</small>"

    rows = "".join(
        f"<tr><td>#{r.id}</td><td>{e(r.subject)}<br><small>{e(r.created_at[:10])} · to "
        f"{e(r.audience)}</small></td><td>{r.sent}</td><td>{pct(r, r.failed)}</td>"
        f"<td>{r.uncertain}</td><td>{pct(r, r.hard_bounces)} / {r.soft_bounces}</td>"
        f"<td>{pct(r, r.complaints)}</td><td>{pct(r, r.unsubscribes)}</td></tr>"
        for r in results
    )
    return ("<table><thead><tr><th scope=col>#</th><th scope=col>Issue</th><th scope=col>"
            "Sent</th><th scope=col>Failed</th><th scope=col>Uncertain</th><th scope=col>"
            "Bounced (hard / soft)</th><th scope=col>Complaints</th><th scope=col>"
            f"Unsubscribed</th></tr></thead><tbody>{rows}</tbody></table>")


def _engagement_tables(results: Sequence[IssueResult]) -> str:
    """[analytics]: people who opened and clicked per issue, links, machines apart."""
    e = html.escape
    rows, links = [], []
    for r in results:
        g = r.engagement
        if g is None:
            continue
        machine = ", ".join(f"{n} {e(why)}" for why, n in g.machine.items()) or "none"
        rows.append(
            f"<tr><td>#{r.id}</td><td>{e(r.subject)}</td><td>{g.openers} <small>"
            f"({100 * r.rate(g.openers):.1f}%)</small></td><td>{g.clickers} <small>"
            f"({100 * r.rate(g.clickers):.1f}%)</small></td><td>{g.machine_opens} / "
            f"{g.machine_clicks}<br><small>{machine}</small></td></tr>")
        links += [f"<tr><td>#{r.id}</td><td>{e(link.url)}</td><td>{link.clicks}</td>"
                  f"<td>{link.clickers}</td></tr>" for link in g.links]
    return (
        "<p>People only: machine events (link scanners, pre-fetchers, Apple Mail Privacy "
        "Protection) are counted apart.</p>"
        "<table><thead><tr><th scope=col>#</th><th scope=col>Issue</th><th scope=col>Opened"
        "</th><th scope=col>Clicked</th><th scope=col>Machine opens / clicks</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        "<table><caption>Clicks per link</caption><thead><tr><th scope=col>#</th>"
        "<th scope=col>Link</th><th scope=col>Clicks</th><th scope=col>People</th></tr>"
        f"</thead><tbody>{''.join(links)}</tbody></table>")


_CSS = """
body{margin:0;background:#f6f8fa;color:#1f2328;font:16px/1.5 system-ui,-apple-system,
'Segoe UI',Roboto,sans-serif}
main{max-width:960px;margin:0 auto;padding:24px 16px 64px}
h1{font-size:2rem;margin:0 0 4px}h2{margin-top:40px;border-bottom:1px solid #d0d7de}
.lede{color:#57606a;margin-top:0}
figure.chart{margin:16px 0;background:#fff;border:1px solid #d0d7de;border-radius:8px;
padding:8px}
figure.chart svg{width:100%;height:auto;display:block}
figcaption{color:#57606a;font-size:.9rem;padding:4px 8px}
table{border-collapse:collapse;width:100%;background:#fff;margin:16px 0;font-size:.95rem}
caption{text-align:left;color:#57606a;padding:4px 0}
th,td{border-bottom:1px solid #d0d7de;padding:6px 8px;text-align:right;vertical-align:top}
th:nth-child(2),td:nth-child(2),th:first-child,td:first-child{text-align:left}
small{color:#57606a}
"""
