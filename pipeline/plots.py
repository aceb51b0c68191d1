"""Matplotlib figures for the notebooks and the HTML report, from the polars frames `pipeline.analysis` returns.

Figures are built with the object API (`matplotlib.figure.Figure`), never pyplot: no global figure state, no
GUI backend, safe in a headless kernel or a web process. `to_data_uri` embeds a figure in HTML as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as dt
import io

import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline import safe_text

# Outcome colours: success, authorization denial, any other error.
OUTCOME_COLOURS: dict[str, str] = {"ok": "#2b8a3e", "denied": "#c92a2a", "error": "#e67700"}
_MAX_SERIES = 8  # more colours than this is unreadable: the rest are summed as "other"
_HOUR = dt.timedelta(hours=1)


def _figure(width: float = 9.0, height: float = 3.6) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


def _empty(axes: Axes, message: str = "no events in this period") -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#868e96")
    axes.set_xticks([])
    axes.set_yticks([])


def _keep_top_series(frame: pl.DataFrame, series: str, value: str) -> pl.DataFrame:
    """Fold all but the largest `_MAX_SERIES` series into one named "other"."""
    top = frame.group_by(series).agg(pl.col(value).sum()).sort(value, descending=True).head(_MAX_SERIES)[series]
    return frame.with_columns(
        pl.when(pl.col(series).is_in(top.implode())).then(pl.col(series)).otherwise(pl.lit("other")).alias(series)
    )


def stacked_over_time(
    frame: pl.DataFrame, *, time: str, series: str, value: str, title: str, bucket: dt.timedelta = _HOUR
) -> Figure:
    """Stacked bars of `value` per `time` bucket of width `bucket`, one colour per `series` (e.g. calls per hour
    by operation); the largest series get their own colour, the rest are summed as "other"."""
    figure, axes = _figure()
    axes.set_title(title)
    if frame.is_empty():
        _empty(axes)
        return figure
    folded = _keep_top_series(frame.with_columns(pl.col(series).fill_null("(none)")), series, value)
    wide = (
        folded.group_by(time, series)
        .agg(pl.col(value).sum())
        .pivot(on=series, index=time, values=value)
        .fill_null(0)
        .sort(time)
    )
    times = wide[time].to_list()
    width = bucket / dt.timedelta(days=1) * 0.9  # matplotlib's date unit is the day
    bottom = [0.0] * len(times)
    for name in [column for column in wide.columns if column != time]:
        heights = [float(v) for v in wide[name].to_list()]
        axes.bar(times, heights, width=width, bottom=bottom, label=safe_text.plot_label(name), align="edge")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_ylabel(value)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.autofmt_xdate()
    return figure


def top_bars(frame: pl.DataFrame, *, label: str, value: str, title: str, max_label: int = 60) -> Figure:
    """Horizontal bars, largest on top (top principals, keys, secrets, context cardinality)."""
    figure, axes = _figure(height=max(2.4, 0.32 * frame.height + 1.0))
    axes.set_title(title)
    if frame.is_empty():
        _empty(axes)
        return figure
    ordered = frame.sort(value)
    labels = [safe_text.plot_label(_shorten(str(text), max_label)) for text in ordered[label].to_list()]
    axes.barh(labels, [float(v) for v in ordered[value].to_list()], color="#1c7ed6")
    axes.set_xlabel(value)
    axes.tick_params(axis="y", labelsize="small")
    return figure


def timeline(frame: pl.DataFrame, *, title: str) -> Figure:
    """One dot per call: time on x, operation on y, coloured by outcome (ok / denied / error).

    `frame` needs `event_time`, `event_name` and `outcome_class` (as `analysis.principal_events` returns).
    """
    figure, axes = _figure(height=max(2.6, 0.3 * frame["event_name"].n_unique() + 1.4) if frame.height else 2.6)
    axes.set_title(title)
    if frame.is_empty():
        _empty(axes)
        return figure
    names = sorted(frame["event_name"].unique().to_list())
    rows = {name: index for index, name in enumerate(names)}
    for outcome, colour in OUTCOME_COLOURS.items():
        part = frame.filter(pl.col("outcome_class") == outcome)
        if part.is_empty():
            continue
        axes.scatter(
            part["event_time"].to_list(),
            [rows[name] for name in part["event_name"].to_list()],
            s=14,
            color=colour,
            label=f"{outcome} ({part.height})",
            alpha=0.75,
        )
    axes.set_yticks(range(len(names)), [safe_text.plot_label(name) for name in names], fontsize="small")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.autofmt_xdate()
    return figure


def _shorten(text: str, limit: int) -> str:
    # ARNs are long; their distinctive part is at the end.
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def to_data_uri(figure: Figure, dpi: int = 96) -> str:
    """The figure as a `data:image/png;base64,...` URI, for a self-contained HTML page."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
