"""PNG charts for reports and benchmarks (matplotlib, imported lazily: the ``plot`` extra).

Every function returns the PNG as bytes, so that callers decide where it goes (a file beside
an HTML page, a base64 ``<img>``, both). The Agg backend is forced: no display is needed and
the bytes do not depend on one. Metadata (matplotlib's version, a creation date) is left out
so that the same figures give the same bytes.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

from ..errors import UnsupportedError

BEFORE_COLOUR = "#c8ccd4"
AFTER_COLOUR = "#2f6db5"
PEER_COLOUR = "#d9822b"
# one inch per this many layers keeps the labels of a 150-layer network readable
LAYERS_PER_INCH = 5.5


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UnsupportedError("charts need matplotlib; install the plot extra: pip install 'prunectl[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    figure.clf()
    _pyplot().close(figure)
    return buffer.getvalue()


def width_chart(layers: Sequence[dict[str, Any]], title: str = "Output channels per layer") -> bytes:
    """Horizontal bars, one per layer in forward order: the original width behind the kept one.

    ``layers`` are report.json's entries: ``{"name", "type", "before", "after"}``.
    """
    plt = _pyplot()
    names = [layer["name"] for layer in layers]
    height = max(2.5, len(names) / LAYERS_PER_INCH + 1.2)
    figure, axes = plt.subplots(figsize=(9, height))
    rows = list(range(len(names)))
    axes.barh(rows, [layer["before"] for layer in layers], color=BEFORE_COLOUR, label="before", height=0.8)
    axes.barh(rows, [layer["after"] for layer in layers], color=AFTER_COLOUR, label="after", height=0.5)
    axes.set_yticks(rows, names, fontsize=7 if len(names) > 40 else 9)
    axes.invert_yaxis()  # forward order reads top to bottom
    axes.set_xlabel("output channels")
    axes.set_title(title, loc="left")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    axes.margins(y=0.01)
    return _png(figure)


def history_chart(steps: Sequence[dict[str, Any]], size_key: str = "params") -> bytes:
    """Accuracy against model size (``params`` or ``macs``) over the steps of an ``auto`` run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    sizes = [step[size_key] / 1e6 for step in steps]
    accuracy = [step["accuracy"] for step in steps]
    axes.plot(sizes, accuracy, "-o", color=AFTER_COLOUR)
    for step, x, y in zip(steps, sizes, accuracy):
        axes.annotate(str(step["step"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel(f"{'parameters' if size_key == 'params' else 'MACs'} (millions)")
    axes.set_ylabel("accuracy")
    axes.set_title("Accuracy vs size (label: step)", loc="left")
    axes.grid(alpha=0.3)
    return _png(figure)


def grouped_bars(categories: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str,
                 reference: float | None = None) -> bytes:
    """Bars for each category, one colour per series (benchmarks: tools or models side by side).

    ``reference`` draws a dashed horizontal line (e.g. 1.0 for "no speed-up").
    """
    plt = _pyplot()
    colours = [AFTER_COLOUR, PEER_COLOUR, "#6a9f58", "#9b6ab5", BEFORE_COLOUR]
    figure, axes = plt.subplots(figsize=(min(16.0, max(6.0, 0.45 * len(categories) * max(1, len(series)) + 2)), 4.6))
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        offsets = [i - 0.4 + width * (index + 0.5) for i in range(len(categories))]
        bars = axes.bar(offsets, values, width=width, label=label, color=colours[index % len(colours)])
        axes.bar_label(bars, labels=[f"{v:.2f}" if v == v else "n/a" for v in values], padding=2,
                       fontsize=7 if len(categories) * len(series) <= 30 else 5.5)
    if reference is not None:
        axes.axhline(reference, color="#555555", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0, ha="right"
                    if len(categories) > 4 else "center", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title, loc="left")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def line_chart(xs: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str,
               labels: Sequence[str] | None = None) -> bytes:
    """One line per series against ``xs`` (benchmarks: cost against model size)."""
    plt = _pyplot()
    colours = [AFTER_COLOUR, PEER_COLOUR, "#6a9f58", "#9b6ab5"]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for index, (label, values) in enumerate(series.items()):
        points = [(x, y) for x, y in zip(xs, values) if y == y]  # NaN: that tool could not run this size
        axes.plot([p[0] for p in points], [p[1] for p in points], "-o", label=label, color=colours[index % 4])
    for x, text in zip(xs, labels or []):
        axes.annotate(text, (x, axes.get_ylim()[0]), textcoords="offset points", xytext=(2, 4), fontsize=7,
                      rotation=90)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, loc="left")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)
