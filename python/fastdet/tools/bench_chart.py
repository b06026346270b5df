"""fastdet bench's chart: COCO mAP (y) against latency (x, log scale), each family a line through
its models, published points hollow and measured points filled. matplotlib is optional and
imported only here, when a chart is drawn."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastdet._optional import require

# One colour per family (a colour-blind safe pair).
COLORS = {"YOLOv7": "#1f6fb4", "DAMO-YOLO": "#d9711c"}
# Where a point's label may go, in points from the point, tried in order: each family starts on
# its own side, so the two families' labels part where their points are close (YOLOv7l and
# DAMO-YOLOl are a few tenths of a ms and of mAP apart in the seed table).
_PLACES = {
    "right-below": ((7, -6), "left", "top"),
    "left-above": ((-7, 6), "right", "bottom"),
    "right-above": ((7, 6), "left", "bottom"),
    "left-below": ((-7, -6), "right", "top"),
    "above": ((0, 10), "center", "bottom"),
    "below": ((0, -10), "center", "top"),
    "right": ((10, 0), "left", "center"),
    "left": ((-10, 0), "right", "center"),
    "far-right-below": ((14, -16), "left", "top"),
    "far-left-above": ((-14, 16), "right", "bottom"),
}
_FIRST_CHOICE = {"YOLOv7": "left-above", "DAMO-YOLO": "right-below"}


@dataclass(frozen=True)
class Series:
    """One line: a family's models, smallest first, on one source of figures."""

    family: str
    label: str
    measured: bool
    points: list[tuple[float, float, str]]  # (latency ms, mAP, point label), in line order
    marker: str = "o"


def require_matplotlib() -> Any:
    """matplotlib's Figure class, or an ImportError saying which extra installs it."""
    require("matplotlib", "fastdet bench's chart")
    from matplotlib.figure import Figure

    return Figure


def _overlap(a: Any, b: Any) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _place_labels(figure: Any, ax: Any, labels: list[tuple[float, float, str, str, str]]) -> None:
    """Annotates each (x, y, text, family, colour), trying _PLACES in turn for a spot that
    covers no marker and no earlier label and stays inside the axes; else the least covered."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patheffects import withStroke
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(figure).get_renderer()
    inside = ax.get_window_extent(renderer)
    taken = []
    for x, y, *_ in labels:  # markers are about 8 points wide
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - 6, py - 6, px + 6, py + 6))
    for x, y, text, family, color in labels:
        first = _FIRST_CHOICE.get(family, "right-below")
        order = [first, *(name for name in _PLACES if name != first)]
        best = None
        for name in order:
            (dx, dy), ha, va = _PLACES[name]
            note = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                fontsize=9, color=color, zorder=4,
                path_effects=[withStroke(linewidth=3, foreground="white")],  # legible over lines
            )  # fmt: skip
            box = note.get_window_extent(renderer).expanded(1.06, 1.15)
            outside = box.width * box.height - _overlap(box, inside)
            cost = sum(_overlap(box, other) for other in taken) + 4 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        if best is not None:
            taken.append(best[2])


def render_chart(series: Sequence[Series]) -> str:
    """The chart as an inline <svg> element (text drawn as paths: no fonts needed to view it)."""
    if not any(s.points for s in series):
        return "<p>(no points to plot)</p>"
    figure_class = require_matplotlib()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # The Figure API draws without pyplot: no global state and no GUI backend; the Agg
    # renderer measures the labels.
    figure = figure_class(figsize=(12.0, 6.6), dpi=96)
    figure.subplots_adjust(left=0.07, right=0.98, top=0.97, bottom=0.1)
    ax = figure.add_subplot()
    xs, ys = [], []
    labels = []
    for s in series:
        if not s.points:
            continue
        x = [p[0] for p in s.points]
        y = [p[1] for p in s.points]
        xs += x
        ys += y
        color = COLORS.get(s.family, "#555555")
        ax.plot(
            x,
            y,
            linestyle="-" if s.measured else "--",
            linewidth=2.0 if s.measured else 1.4,
            marker=s.marker,
            markersize=8,
            color=color,
            markerfacecolor=color if s.measured else "white",
            markeredgewidth=1.8,
            label=f"{s.family}: {s.label}",
            zorder=3,
        )
        labels += [(px, py, text, s.family, color) for px, py, text in s.points]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.8, max(xs) * 1.8)  # room for the labels at both ends
    ax.set_ylim(min(ys) - 2.0, max(ys) + 2.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency per image, batch 1 (ms, log scale)", fontsize=11)
    ax.set_ylabel("COCO mAP val 50-95", fontsize=11)
    ax.grid(True, which="major", color="#d5dbe1", linewidth=0.8)
    ax.grid(True, which="minor", axis="x", color="#eef1f4", linewidth=0.6)
    ax.tick_params(labelsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=9, frameon=False)
    _place_labels(figure, ax, labels)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.find("<svg") :]
