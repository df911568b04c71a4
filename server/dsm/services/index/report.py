"""`dsm report --html`: one self-contained HTML file (inline CSS and SVG, no external assets).

It renders the same answers the API gives (schema, economy, distributions, anomalies), each
section labelled with its source, coverage and as-of time, for people who do not use Studio.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from shared_schema.analytics import (
    AnomalyReport,
    CurrencyReport,
    Distribution,
    EconomyReport,
    HistogramBin,
    SchemaReport,
)
from shared_schema.index import IndexBasis

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#1d2330}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccd}
table{border-collapse:collapse;width:100%;margin:8px 0}td,th{padding:3px 6px;text-align:left;
border-bottom:1px solid #e4e6ee;vertical-align:top}th{background:#f3f4f8}
.basis{font-size:12px;color:#445;background:#f6f7fb;border-left:4px solid #6a7bd8;padding:6px 10px}
.sample{border-left-color:#d8a23a}.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fff4db;border:1px solid #d8a23a;padding:8px 12px;margin:12px 0}
svg text{font:11px system-ui,sans-serif;fill:#334}
"""


def _fmt(value: float) -> str:
    if abs(value) >= 1e6 or (value and abs(value) < 0.01):
        return f"{value:.3g}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def basis_line(basis: IndexBasis) -> str:
    c = basis.coverage
    as_of = basis.as_of.strftime("%Y-%m-%d %H:%M UTC") if basis.as_of else "never crawled"
    label = (
        "EMULATOR sample game (generated, not real players)"
        if basis.sample_data
        else basis.backend.value
    )
    note = f" — {escape(basis.note)}" if basis.note else ""
    klass = "basis sample" if basis.sample_data else "basis"
    return (
        f'<p class="{klass}" data-source="{basis.backend.value}">Source: <b>{escape(label)}</b> · '
        f"coverage {c.entries_indexed:,} of {c.entries_listed:,} listed entries "
        f"({c.share:.0%}{', complete' if c.complete else ', incomplete'}) · as of {as_of}{note}</p>"
    )


def histogram_svg(bins: list[HistogramBin], title: str, width: int = 460, height: int = 160) -> str:
    if not bins:
        return "<p>No numeric values.</p>"
    top = max(b.count for b in bins) or 1
    bar = (width - 40) / len(bins)
    rects = []
    for i, b in enumerate(bins):
        h = (height - 40) * b.count / top
        x = 30 + i * bar
        y = height - 20 - h
        rects.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#6a7bd8"><title>{_fmt(b.low)}–{_fmt(b.high)}: {b.count}</title></rect>'
        )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><text x="30" y="12">{escape(title)} (max bin {top})</text>'
        f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#889"/>'
        f'{"".join(rects)}<text x="30" y="{height - 6}">{_fmt(bins[0].low)}</text>'
        f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">{_fmt(bins[-1].high)}</text></svg>'
    )


def line_svg(
    points: list[tuple[float, float]], title: str, width: int = 460, height: int = 160
) -> str:
    if len(points) < 2:
        return "<p>Not enough history to draw a line.</p>"
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x = (x1 - x0) or 1
    span_y = (y1 - y0) or 1
    coords = " ".join(
        f"{30 + (x - x0) / span_x * (width - 40):.1f},{height - 20 - (y - y0) / span_y * (height - 40):.1f}"
        for x, y in points
    )
    return (
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><text x="30" y="12">{escape(title)}</text>'
        f'<polyline fill="none" stroke="#d85a3a" stroke-width="2" points="{coords}"/>'
        f'<text x="30" y="{height - 6}">{_fmt(y0)}</text>'
        f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">{_fmt(y1)}</text></svg>'
    )


def _currency(report: CurrencyReport) -> str:
    p = report.percentiles
    rows = "".join(
        f"<tr><td>{escape(h.entry.datastore)}/{escape(h.entry.key)}</td>"
        f'<td class="num">{_fmt(h.value)}</td><td class="num">{(h.share or 0):.1%}</td></tr>'
        for h in report.top_holders
    )
    gini = f"{report.gini:.3f}" if report.gini is not None else "n/a (fewer than 2 holders)"
    history = [(pt.at.timestamp(), pt.total) for pt in report.history]
    return (
        f"<h3>{escape(report.field)}</h3><p>Total supply <b>{_fmt(report.total_supply)}</b> held by "
        f"{report.holders:,} entries · Gini <b>{gini}</b> · median {_fmt(p.p50) if p else 'n/a'} · "
        f"top 1% hold {(report.top_1_percent_share or 0):.1%}</p>"
        f"{histogram_svg(report.histogram, report.field + ' per player (log10 bins)')}"
        f"{line_svg(history, 'total supply by day (from indexed revisions)')}"
        f"<table><tr><th>Top holder</th><th>Amount</th><th>Share</th></tr>{rows}</table>"
    )


def render(
    *,
    title: str,
    schema: SchemaReport,
    economy: EconomyReport,
    distributions: list[Distribution],
    anomalies: AnomalyReport,
) -> str:
    parts = [f"<h1>{escape(title)}</h1>"]
    parts.append(
        f"<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by DataStore Manager Pro from its "
        "local search index. Every figure comes from indexed entries.</p>"
    )
    if schema.basis.sample_data:
        parts.append(
            '<div class="banner">This report is about the emulator\'s generated sample game: '
            "no real players.</div>"
        )
    parts.append("<h2>Schema</h2>" + basis_line(schema.basis))
    for store in schema.stores:
        rows = "".join(
            f"<tr><td>{escape(f.path)}</td><td>"
            + ", ".join(f"{t.type.value} {t.share:.0%}" for t in f.types)
            + f'</td><td class="num">{f.presence:.1%}</td><td>{escape(", ".join(f.examples))}</td></tr>'
            for f in store.fields
        )
        drift = "".join(f"<li>{escape(d.path)}: {d.kind.value}</li>" for d in store.drift)
        parts.append(
            f"<h3>{escape(store.datastore)} ({store.entries:,} entries)</h3>"
            f"<table><tr><th>Field</th><th>Types</th><th>Present</th><th>Examples</th></tr>{rows}</table>"
            + (
                f"<p>Drift since the previous crawl:</p><ul>{drift}</ul>"
                if drift
                else f"<p>{escape(store.drift_note or 'No drift since the previous crawl.')}</p>"
            )
        )
    parts.append("<h2>Economy</h2>" + basis_line(economy.basis))
    parts += [_currency(c) for c in economy.currencies] or ["<p>No currency fields found.</p>"]
    parts.append("<h2>Distributions</h2>")
    for d in distributions:
        parts.append(basis_line(d.basis))
        if d.percentiles:
            p = d.percentiles
            parts.append(
                f"<h3>{escape(d.field)}</h3><p>{d.numeric:,} values · p5 {_fmt(p.p5)} · median "
                f"{_fmt(p.p50)} · p95 {_fmt(p.p95)} · max {_fmt(p.max)}</p>"
                + histogram_svg(d.histogram, d.field)
            )
        elif d.value_counts:
            rows = "".join(
                f'<tr><td>{escape(v.value_json)}</td><td class="num">{v.count:,}</td></tr>'
                for v in d.value_counts
            )
            parts.append(f"<h3>{escape(d.field)}</h3><table>{rows}</table>")
    parts.append("<h2>Anomalies</h2>" + basis_line(anomalies.basis))
    rows = "".join(
        f"<tr><td>{a.kind.value}</td><td>{escape(a.entry.datastore)}/{escape(a.entry.key)}</td>"
        f"<td>{escape(a.reason)}</td></tr>"
        for a in anomalies.anomalies
    )
    parts.append(
        f"<table><tr><th>Kind</th><th>Entry</th><th>Why</th></tr>{rows}</table>"
        if rows
        else "<p>No anomalies found.</p>"
    )
    body = "\n".join(parts)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
