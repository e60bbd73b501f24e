"""The performance page's charts: bench/RESULTS.md's figures → docs/_static/bench-*.svg.

Run by hand after updating RESULTS.md (``python -m bench.charts``) and commit the SVGs;
the docs build only reads them. Plain SVG written here, so nothing beyond the standard
library is needed. Each figure below names the RESULTS.md section it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "_static"
COLORS = ["#1d4ed8", "#0f766e", "#b45309", "#be185d"]
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"


@dataclass(frozen=True)
class Chart:
    """Horizontal bars: a group of bars per row label, one bar per series."""

    name: str
    title: str
    note: str
    unit: str
    series: list[str]
    rows: list[tuple[str, list[float]]]


CHARTS = [
    Chart(  # "Throughput (issues 5 and 10)": 5,000 rows, 1,536 dims, no index
        "bench-throughput",
        "Rows embedded per second, by the API's latency per request",
        "5,000 rows of ~670 characters, 1,536 dimensions, one loopback fake API; 2 cores",
        "rows/s",
        ["0 ms", "50 ms", "200 ms"],
        [
            ("django-autoembed, defaults", [3335, 3357, 2819]),
            ("django-autoembed, tuned", [3282, 3019, 2532]),
            ("pgai 0.12.1, batch 500", [427, 364, 345]),
            ("pgai 0.12.1, defaults", [290, 232, 153]),
            ("the guide's design", [282, 154, 47]),
        ],
    ),
    Chart(  # "Every label, existing rows (issue 34)": --backfill, index built, API at 200 ms
        "bench-backfill",
        "Backfill of existing rows, HNSW index included",
        "API at 200 ms; ours until the vectors and the rebuilt index are ready; "
        "pgai builds no index below 100,000 rows",
        "rows/s",
        ["5,000 rows", "50,000 rows"],
        [
            ("django-autoembed, defaults", [1322, 1811]),
            ("pgai 0.12.1, batch 500", [510, 533]),
            ("pgai 0.12.1, defaults", [178, 178]),
        ],
    ),
    Chart(  # "Long documents in chunks": three rounds of 2026-12-04, medians
        "bench-chunks",
        "Long documents: chunks embedded per second",
        "2,000 documents of 3,311–18,043 tokens, 512-token chunks, API at 200 ms; "
        "ours with its index build, pgai without",
        "chunks/s",
        ["median of three rounds"],
        [
            ("django-autoembed, defaults", [1363]),
            ("pgai 0.12.1, batch 500", [450]),
            ("pgai 0.12.1, defaults", [427]),
        ],
    ),
    Chart(  # "The push path (issue 18)": 10,000 rows in 20 statements, first insert to last vector
        "bench-push",
        "The push path against the pull worker",
        "10,000 rows inserted in 20 statements, API at 200 ms, endpoint behind gunicorn "
        "(4 workers); first insert to last vector",
        "rows/s",
        ["end to end"],
        [
            ("pull worker, defaults", [1528]),
            ("push path, defaults", [1033]),
            ("push path, the guide's settings", [9]),
        ],
    ),
]

LEFT, RIGHT, TOP, BAR, GAP, WIDTH = 230, 90, 74, 16, 14, 860


def _number(value: float) -> str:
    return f"{value:,.0f}"


def render(chart: Chart) -> str:
    """The chart as an SVG document."""
    many = len(chart.series) > 1
    group = BAR * len(chart.series) + GAP
    legend = 28 if many else 0
    height = TOP + legend + group * len(chart.rows) + 36
    top = max(v for _, values in chart.rows for v in values)
    scale = (WIDTH - LEFT - RIGHT) / top
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="{FONT}" font-size="13" role="img" '
        f'aria-labelledby="title">',
        f'<title id="title">{escape(chart.title)}</title>',
        f'<rect width="{WIDTH}" height="{height}" rx="10" fill="#ffffff"/>',
        f'<text x="20" y="30" font-size="16" font-weight="600" fill="#111827">'
        f"{escape(chart.title)}</text>",
        f'<text x="20" y="52" font-size="12" fill="#4b5563">{escape(chart.note)}</text>',
    ]
    if many:
        x = LEFT
        for n, name in enumerate(chart.series):
            out.append(
                f'<rect x="{x}" y="{TOP - 8}" width="12" height="12" fill="{COLORS[n]}"/>'
                f'<text x="{x + 18}" y="{TOP + 3}" fill="#374151">{escape(name)}</text>'
            )
            x += 30 + 8 * len(name)
    y = TOP + legend
    for label, values in chart.rows:
        middle = y + BAR * len(values) / 2
        out.append(
            f'<text x="{LEFT - 10}" y="{middle + 4:.0f}" text-anchor="end" fill="#111827">'
            f"{escape(label)}</text>"
        )
        for n, value in enumerate(values):
            length = max(1.0, value * scale)
            out.append(
                f'<rect x="{LEFT}" y="{y}" width="{length:.1f}" height="{BAR - 3}" '
                f'fill="{COLORS[n]}"/><text x="{LEFT + length + 6:.1f}" y="{y + BAR - 5}" '
                f'font-size="12" fill="#374151">{_number(value)}</text>'
            )
            y += BAR
        y += GAP
    out.append(
        f'<line x1="{LEFT}" y1="{TOP + legend - 6}" x2="{LEFT}" y2="{y - GAP + 4}" '
        f'stroke="#9ca3af"/><text x="{WIDTH - 20}" y="{height - 14}" text-anchor="end" '
        f'font-size="12" fill="#6b7280">{escape(chart.unit)} · bench/RESULTS.md</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    for chart in CHARTS:
        path = OUT / f"{chart.name}.svg"
        path.write_text(render(chart), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
