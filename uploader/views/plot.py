"""Drawing history as a PNG: one panel per metric, one line per pod and run in it.

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

_Series = dict[str, dict[tuple[str, str], tuple[list[Any], list[float]]]]  # name -> (pod, run) -> (xs, values)


def plot_history(entries: Iterable[Entry], title: str, path: str, x_axis: str = "time") -> list[str]:
    """Draw every metric of *entries* into the PNG *path*; return the names drawn (none: nothing written).

    *x_axis* is ``time`` (local time of each report) or ``step``: the job's own
    step (:attr:`Entry.step`), or where its run reported none, the n-th report
    of its name. Each pod and run is its own line, named in a legend when there
    are several. Raises ImportError when matplotlib is missing.
    """
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, not {x_axis!r}")
    series, counted = _series(entries, x_axis)
    if not series:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    # Job steps put every name on one axis; counts of reports do not (names are reported at different rates).
    fig, axes = plt.subplots(
        len(series),
        1,
        figsize=(8, 2.2 * len(series) + 0.6),
        dpi=100,
        sharex=x_axis == "time" or not counted,
        squeeze=False,
    )
    try:
        lines = {key for by_run in series.values() for key in by_run}
        for ax, (name, by_run) in zip(axes[:, 0], sorted(series.items()), strict=True):
            for key, (xs, values) in sorted(by_run.items()):
                ax.plot(xs, values, linewidth=1, marker="." if len(xs) <= 50 else None, label=_label(key, lines))
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
            if len(lines) > 1:
                ax.legend(fontsize="small", loc="best")
        axes[0, 0].set_title(title)
        _x_label(axes[-1, 0], x_axis, counted)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return sorted(series)


def _series(entries: Iterable[Entry], x_axis: str) -> tuple[_Series, bool]:
    """The metrics' points by name and line; and whether some line had no job step (its x is the n-th report)."""
    series: _Series = {}
    counted = False
    for e in entries:
        if e.kind != METRIC:
            continue
        xs, values = series.setdefault(e.name, {}).setdefault((e.pod, e.run), ([], []))
        if x_axis == "time":
            xs.append(datetime.datetime.fromtimestamp(e.ts))
        elif e.step is None:
            xs.append(len(xs))
            counted = True
        else:
            xs.append(e.step)
        values.append(float(e.value))
    return series, counted


def _label(key: tuple[str, str], lines: set[tuple[str, str]]) -> str:
    """A line's name in the legend: its run, and its pod where several pods are drawn."""
    pod, run = key
    return f"{pod} {run}" if len({p for p, _ in lines}) > 1 else run


def _x_label(ax: Any, x_axis: str, counted: bool) -> None:
    if x_axis == "time":
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call, unused-ignore]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call, unused-ignore]
        ax.set_xlabel("local time")
    elif counted:
        ax.set_xlabel("step: the job's global_step where it reported one, else the n-th report of each name")
    else:
        ax.set_xlabel("step (the job's own global_step)")
