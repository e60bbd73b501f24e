"""bench/results/throughput.json → bench/throughput.png (rows/s against API latency)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERIES = {  # name in the JSON: (label, style)
    "ours best, 1536d": ("django-autoembed (tuned)", "o-"),
    "ours default, 1536d": ("django-autoembed (defaults)", "o--"),
    "pgai batch 500, 1536d": ("pgai 0.12.1 (batch 500)", "s-"),
    "pgai default, 1536d": ("pgai 0.12.1 (defaults)", "s--"),
    "guide design, 1536d": ("guide's design (1 call/row, 10x10)", "^-"),
}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads((HERE / "results" / "throughput.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, (label, style) in SERIES.items():
        points = data["series"].get(key)
        if not points:
            continue
        xs = sorted(int(x) for x in points)
        ax.plot(xs, [points[str(x)]["rows_s"] for x in xs], style, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("fake API latency per request (ms)")
    ax.set_ylabel("rows embedded per second (log)")
    ax.set_title(
        f"{data['rows']:,} rows of ~670 chars, 1536 dims, one run\n{data['machine']}", fontsize=8
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "throughput.png")
    print(f"wrote {HERE / 'throughput.png'}")


if __name__ == "__main__":
    main()
