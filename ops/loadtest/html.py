"""
The HTML report: one self-contained page (inline CSS and SVG, no script, nothing
fetched from the network) with the verdict, the criteria, counts and timers, and
charts over time of offered vs achieved rate, operations in flight, latency
percentiles, failures by cause and RTP loss.
"""

from __future__ import annotations

import html
import json
from typing import Any

WIDTH, HEIGHT = 760, 220
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 150, 24, 30
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")

Series = dict[str, list[tuple[float, float]]]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** len(str(int(value))))
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= magnitude * step:
            return magnitude * step
    return magnitude


def line_chart(title: str, unit: str, series: Series) -> str:
    """An SVG line chart of ``series`` (name -> [(t seconds, value)])."""
    points = [p for values in series.values() for p in values]
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    y_max = _nice_max(max((y for _, y in points), default=0.0))
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + plot_w * x / x_max

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h * (1 - y / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{MARGIN_LEFT}" y="16" class="title">{html.escape(title)}</text>',
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        y = y_max * i / 4
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{sy(y):.1f}" '
            f'y2="{sy(y):.1f}" stroke="#eee"/>'
            f'<text x="{MARGIN_LEFT - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>'
        )
    for i in range(6):
        x = x_max * i / 5
        parts.append(
            f'<text x="{sx(x):.1f}" y="{HEIGHT - 10}" text-anchor="middle">{x:.0f}s</text>'
        )
    parts.append(
        f'<text x="12" y="{MARGIN_TOP + plot_h / 2}" transform="rotate(-90 12 '
        f'{MARGIN_TOP + plot_h / 2})" text-anchor="middle">{html.escape(unit)}</text>'
    )
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        if values:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
            )
        ly = MARGIN_TOP + 14 * index + 8
        lx = MARGIN_LEFT + plot_w + 10
        parts.append(
            f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{ly + 1}">{html.escape(name)}</text>'
        )
    if not points:
        parts.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{MARGIN_TOP + plot_h / 2}" '
            'text-anchor="middle">no data</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def charts(timeline: list[dict[str, Any]]) -> list[str]:
    """The five charts of the timeline."""

    def column(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(row["t"], row[key] * scale) for row in timeline if row.get(key) is not None]

    causes = sorted({cause for row in timeline for cause in row["failures"]})
    failures: Series = {
        cause: [(row["t"], float(row["failures"].get(cause, 0))) for row in timeline]
        for cause in causes
    } or {"failures": [(row["t"], 0.0) for row in timeline]}
    return [
        line_chart(
            "Offered vs achieved rate",
            "per second",
            {
                "offered": column("offered"),
                "started": column("started"),
                "succeeded": column("succeeded"),
            },
        ),
        line_chart("In flight", "operations", {"in flight": column("in_flight")}),
        line_chart(
            "Latency (registration / call setup)",
            "ms",
            {"p50": column("p50_ms"), "p95": column("p95_ms")},
        ),
        line_chart("Failures by cause", "per second", failures),
        line_chart("RTP loss", "percent", {"loss": column("rtp_loss_percent")}),
    ]


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:900px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}
svg{display:block;margin:12px 0;font-size:11px}svg .title{font-weight:bold;font-size:13px}
pre{background:#f6f8fa;padding:8px;overflow:auto}
"""


def _cell(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value * scale:.{digits}f}"
    return html.escape(str(value))


def render(report: dict[str, Any]) -> str:
    """The whole page for a JSON report."""
    e = html.escape
    verdict = report["result"]
    rows = []
    rows.append(
        f"<h1>warden-loadtest: <span class='{verdict}'>{e(verdict.upper())}</span></h1>"
        f"<p>{e(report['started_at'])} to {e(report['ended_at'])}, "
        f"{report['duration_s']:.1f} s, exit status {report['exit_code']}"
        f"{', ' + e(report['unreachable']) if report['unreachable'] else ''}"
        f"{', stopped early: ' + e(report['interrupted']) if report['interrupted'] else ''}</p>"
    )
    rows.append("<h2>Criteria</h2><table><tr><th>criterion</th><th>value</th>"
                "<th>threshold</th><th>result</th></tr>")  # fmt: skip
    for c in report["criteria"]:
        mark = "pass" if c["passed"] else "fail"
        rows.append(
            f"<tr><td title='{e(c['description'])}'>{e(c['name'])}</td>"
            f"<td>{_cell(c['value'], digits=4)}</td><td>{c['threshold']:g}</td>"
            f"<td class='{mark}'>{mark}</td></tr>"
        )
    rows.append("</table><h2>Phases</h2><table><tr><th>phase</th><th>attempted</th>"
                "<th>ok</th><th>failed</th><th>success %</th><th>failures</th></tr>")  # fmt: skip
    for name, p in report["phases"].items():
        causes = ", ".join(f"{k}: {v}" for k, v in p["failures"].items())
        rows.append(
            f"<tr><td>{e(name)}</td><td>{p['attempted']}</td><td>{p['succeeded']}</td>"
            f"<td>{p['failed']}</td><td>{_cell(p['success_rate'])}</td><td>{e(causes)}</td></tr>"
        )
    rows.append("</table><h2>Timers (ms)</h2><table><tr><th>timer</th><th>count</th>"
                "<th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>")  # fmt: skip
    for name, s in report["timers"].items():
        cells = "".join(
            f"<td>{_cell(s[k], 1.0, 1)}</td>"
            for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
        )
        rows.append(f"<tr><td>{e(name)}</td><td>{s['count']}</td>{cells}</tr>")
    rows.append("</table><h2>Responses</h2><table><tr><th>method</th><th>codes</th></tr>")
    for method, codes in report["responses"].items():
        text = ", ".join(f"{c}: {n}" for c, n in codes.items())
        rows.append(f"<tr><td>{e(method)}</td><td>{e(text)}</td></tr>")
    rows.append("</table>")
    rtp = report["rtp"]
    if rtp is not None:
        rows.append(
            "<h2>RTP</h2><table><tr><th>calls</th><th>sent</th><th>lost</th><th>loss %</th>"
            "<th>jitter p95 ms</th><th>latency mean ms</th><th>MOS mean</th><th>MOS min</th>"
            f"</tr><tr><td>{rtp['calls']}</td><td>{rtp['packets_sent']}</td>"
            f"<td>{rtp['packets_lost']}</td><td>{_cell(rtp['loss_percent'], digits=3)}</td>"
            f"<td>{_cell(rtp['jitter_ms']['p95'])}</td><td>{_cell(rtp['latency_ms']['mean'])}</td>"
            f"<td>{_cell(rtp['mos']['mean'])}</td><td>{_cell(rtp['mos']['min'])}</td></tr></table>"
        )
    rows.append("<h2>Over time</h2>")
    rows.extend(charts(report["timeline"]))
    config = json.dumps(report["config"], indent=1, sort_keys=True)
    rows.append(f"<h2>Configuration</h2><pre>{e(config)}</pre>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>warden-loadtest {e(verdict)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(rows)
        + "</body></html>\n"
    )
