"""`consentry report`: the compliance report, a self-contained HTML page (inline CSS and SVG, no
network) and the same figures as JSON, from the audit table (consentry.domain.audit computes)."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import orjson

CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2430}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d8dde6}
table{border-collapse:collapse}td,th{padding:.2rem .7rem;border-bottom:1px solid #eef0f4;text-align:left}
.ok{color:#116b2f;font-weight:600}.bad{color:#a4141c;font-weight:600}.muted{color:#667}"""


def _time(us: int | None) -> str:
    return "—" if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 2 * 86_400:
        return f"{value / 86_400:,.1f} days"
    if value >= 2 * 3_600:
        return f"{value / 3_600:,.1f} h"
    return f"{value:,.1f} s"


def _plot(values: list[float], label: str) -> str:
    """The cumulative distribution of `values` (seconds) as an inline SVG."""
    w, h, pad = 560, 180, 30
    if not values:
        return f'<svg role="img" aria-label="{label}: no data" width="{w}" height="40"><text x="0" y="20">no data</text></svg>'
    ordered = sorted(values)
    top = max(ordered[-1], 1e-9)
    def x(v: float) -> str:
        return f"{pad + (w - 2 * pad) * v / top:.1f}"

    def y(share: float) -> str:
        return f"{h - pad - (h - 2 * pad) * share:.1f}"

    # A step at each objection: the share of objections done within that time.
    steps = [f"{pad},{y(0)}"]
    for i, v in enumerate(ordered):
        steps += [f"{x(v)},{y(i / len(ordered))}", f"{x(v)},{y((i + 1) / len(ordered))}"]
    points = " ".join(steps)
    return (f'<svg role="img" aria-label="{html.escape(label)}" width="{w}" height="{h}">'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#99a"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#99a"/>'
            f'<polyline fill="none" stroke="#2a62c9" stroke-width="2" points="{points}"/>'
            f'<text x="{pad}" y="{h - 8}" font-size="11">0 s</text><text x="{w - pad - 40}" y="{h - 8}" font-size="11">{top:,.1f} s</text>'
            f'<text x="{pad + 4}" y="{pad - 8}" font-size="11">share of objections (cumulative)</text></svg>')


def _rows(items: list[tuple[Any, ...]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in items)


def render_html(f: dict[str, Any]) -> str:
    chain = f.get("chain")
    chain_html = ('<p class="muted">not verified</p>' if chain is None else
                  f'<p class="{"ok" if chain["ok"] else "bad"}" id="chain">{html.escape(chain["summary"])}</p>'
                  + "<table><tr><th>partition</th><th>hash of its last record (anchor)</th></tr>" + _rows(list(chain["anchors"].items())) + "</table>")
    days = f["objections_by_day_and_channel"]
    channels = sorted({c for counts in days.values() for c in counts})
    by_day = "<table><tr><th>day</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in channels) + "<th>total</th></tr>" + _rows(
        [(day, *(counts.get(c, 0) for c in channels), sum(counts.values())) for day, counts in sorted(days.items())]) + "</table>"
    te, tp = f["time_to_enforced_s"], f["time_to_purged_s"]
    pct = "<table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>" + "".join(
        f"<tr><td>{name}</td><td>{d['count']}</td>" + "".join(f"<td>{_secs(d[k])}</td>" for k in ("p50", "p90", "p99", "max")) + "</tr>"
        for name, d in (("received → enforced", te), ("received → purged", tp))) + "</table>"
    pending = f["not_yet_purged"]
    rec = f["reconciliation"]
    found = rec["rows_found_last_pass"]
    runs = f["runs_with_users_who_objected_later"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Consentry compliance report</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>{CSS}</style></head><body>
<h1>Consentry compliance report</h1>
<p>Objections received from <b>{_time(f["window"]["from_us"])}</b> to <b>{_time(f["window"]["to_us"])}</b> (exclusive); generated {_time(f["generated_at_us"])}, from the audit trail.</p>
<h2>Audit chain</h2>{chain_html}
<h2>Objections received by channel and day</h2><p><b id="received">{f["objections_received"]}</b> objections.</p>{by_day}
<h2>Time to enforced and to purged</h2>{pct}
<h3>received → enforced</h3>{_plot(te["values"], "time to enforced")}<h3>received → purged</h3>{_plot(tp["values"], "time to purged")}
<h2>Objections not yet purged</h2><p><b id="not-purged">{len(pending)}</b></p>
<table><tr><th>objection</th><th>user</th><th>received</th><th>age</th></tr>{_rows([(o["objection_id"], o["user_id"], _time(o["received_at_us"]), _secs(o["age_s"])) for o in pending])}</table>
<h2>Reconciliation</h2><p>{rec["passes"]} passes recorded; last {_time(rec["last_at_us"])}. Rows of objected users found by the last pass (must be 0):
<b id="reconcile" class="{"ok" if not found else "bad"}">{"—" if found is None else found}</b>; rows deleted by every pass: {rec["rows_deleted_total"]}.</p>
<h2>Purges not yet vacuumed</h2><p><b id="unvacuumed">{f["purges_not_yet_vacuumed"]}</b> purges removed rows after the last vacuum ({_time(f["last_vacuum_at_us"])}): their files are still on disk.</p>
<h2>Training runs that read data of users who objected later</h2><p><b id="runs">{len(runs)}</b> runs.</p>
<table><tr><th>run</th><th>users</th></tr>{_rows([(run, ", ".join(users)) for run, users in runs.items()])}</table>
<h2>Posts kept out of training, by reason</h2><table>{_rows(sorted(f["posts_dropped_by_reason"].items()))}</table>
</body></html>"""


def render_json(f: dict[str, Any]) -> bytes:
    return orjson.dumps(f, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
