"""Drawing a pod's history as a PNG: one panel per metric.

matplotlib is an optional extra (``runai[plot]``), imported only when a plot
is asked for.
"""
from __future__ import annotations

import datetime
from typing import Any, Iterable

from runai.reporter.spool import METRIC

from .history import Entry

__all__ = ["X_AXES", "plot_history"]

X_AXES = ("time", "step")


def plot_history(entries: Iterable[Entry], title: str, path: str, x_axis: str = "time") -> list[str]:
    """Draw every metric of *entries* into the PNG *path*; return the names drawn (none: nothing written).

    *x_axis* is ``time`` (local time of each report) or ``step`` (the n-th
    report of its name). Raises ImportError when matplotlib is missing.
    """
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, not {x_axis!r}")
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[Any], list[float]]] = {}
    for e in entries:
        if e.kind == METRIC:
            xs, values = series.setdefault(e.name, ([], []))
            xs.append(datetime.datetime.fromtimestamp(e.ts) if x_axis == "time" else len(xs))
            values.append(float(e.value))
    if not series:
        return []
    # Names are reported at different rates, so by step each panel keeps its own x axis.
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.2 * len(series) + 0.6), dpi=100,
                             sharex=x_axis == "time", squeeze=False)
    try:
        for ax, (name, (xs, values)) in zip(axes[:, 0], sorted(series.items()), strict=True):
            ax.plot(xs, values, linewidth=1, marker="." if len(xs) <= 50 else None)
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
        axes[0, 0].set_title(title)
        if x_axis == "time":
            locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call, unused-ignore]
            axes[-1, 0].xaxis.set_major_locator(locator)
            axes[-1, 0].xaxis.set_major_formatter(
                mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call, unused-ignore]
            axes[-1, 0].set_xlabel("local time")
        else:
            axes[-1, 0].set_xlabel("step (the n-th report of each name)")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return sorted(series)
