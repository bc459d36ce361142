"""bench/results/serving.png: requests/s per server, labelled with the ratios.

One panel per wrk section measured (serving, and raw mode when present): a horizontal
bar per server, its requests/s, and its ratio to the section's baseline beside it.
procslice's serving rows on the socket-activated path (as deployed) are dark, those on
``--listen`` light.
Drawn with matplotlib (requirements/bench.txt, installed by ``make bench``); without
it the chart is skipped with a message and the rest of the run is unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = (
    ("serving", "Serving hello world: requests/s", "gunicorn + uvicorn-worker"),
    ("raw", "Raw mode (asyncio.Protocol): requests/s", "bare uvloop"),
)
PROCSLICE = "#1f6f8b"  # procslice as deployed (socket-activated), and raw mode
PROCSLICE_LISTEN = "#8fbfd0"  # procslice on --listen, the path no deployment uses
BASELINE = "#999999"
PEER = "#c9a227"


def _colour(row: dict[str, Any]) -> str:
    if row["subject"] == row["baseline"]:
        return BASELINE
    if not row["subject"].startswith("procslice"):
        return PEER
    if row["bench"] == "serving" and not row["subject"].endswith("-activated"):
        return PROCSLICE_LISTEN
    return PROCSLICE


def draw(rows: list[dict[str, Any]], path: Path, subtitle: str = "") -> Path | None:
    """Write the chart to ``path``; None (and why on stdout) when it cannot be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print(
            "bench: matplotlib is not installed (make bench installs requirements/bench.txt): "
            "no chart",
            flush=True,
        )
        return None
    panels = []
    for bench, title, baseline in PANELS:
        chosen = [row for row in rows if row["bench"] == bench and "error" not in row["raw"]]
        if chosen:
            panels.append((title, baseline, chosen))
    if not panels:
        return None
    heights = [len(chosen) for _, _, chosen in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, 1.2 + 0.45 * sum(heights) + 0.6 * len(panels)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, baseline, chosen) in zip(axes[:, 0], panels, strict=True):
        labels = [row["label"] for row in chosen]
        values = [row["raw"]["rps"] for row in chosen]
        colours = [_colour(row) for row in chosen]
        positions = list(range(len(chosen)))[::-1]
        ax.barh(positions, values, color=colours, height=0.65)
        ax.set_yticks(positions, labels, fontsize=9)
        ax.set_title(title, fontsize=11, loc="left")
        ax.set_xlim(0, max(values) * 1.22)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value / 1000:.0f}k"))
        for position, row, value in zip(positions, chosen, values, strict=True):
            ratio = row["ratio"]
            text = f"{value:,.0f}" + ("" if ratio is None else f"  {ratio:.2f}x")
            ax.text(value, position, "  " + text, va="center", fontsize=8)
        ax.set_xlabel(f"requests/s (ratio vs {baseline})", fontsize=8)
    if subtitle:
        fig.suptitle(subtitle, fontsize=8, x=0.01, ha="left", color="#555555")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
