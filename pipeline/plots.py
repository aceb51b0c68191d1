"""Matplotlib figures for the notebooks and the HTML report, from the polars frames `pipeline.analysis` returns.

Figures are built with the object API (`matplotlib.figure.Figure`), never pyplot: no global figure state, no
GUI backend, safe in a headless kernel or a web process. `to_data_uri` embeds a figure in HTML as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence

import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline import safe_text

# Outcome colours: success, authorization denial, any other error.
OUTCOME_COLOURS: dict[str, str] = {"ok": "#2b8a3e", "denied": "#c92a2a", "error": "#e67700"}
# One colour per operation, the same in the report and the notebooks whatever the period shows (a colour
# that moved between charts would make a reader compare the wrong bars).
OPERATION_COLOURS: dict[str, str] = {
    "Decrypt": "#1c7ed6",
    "GenerateDataKey": "#0ca678",
    "Encrypt": "#74b816",
    "GetSecretValue": "#f59f00",
    "DescribeKey": "#868e96",
    "ReEncrypt": "#ae3ec9",
    "Sign": "#d6336c",
    "ListSecrets": "#e8590c",
    "PutSecretValue": "#5c940d",
    "RotateSecret": "#3bc9db",
    "ScheduleKeyDeletion": "#c92a2a",
    "DisableKey": "#862e9c",
    "PutKeyPolicy": "#364fc7",
    "PutResourcePolicy": "#0b7285",
    "AccessDenied": "#c92a2a",
    "other": "#ced4da",
}
ALERT_COLOUR = "#e03131"
_SPARE_COLOURS = ("#495057", "#a61e4d", "#5f3dc4", "#1864ab", "#087f5b", "#d9480f", "#e64980", "#2f9e44")
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


def colour(name: str) -> str:
    """The fixed colour of an operation (or error code); other names get a stable colour from their text."""
    if name in OPERATION_COLOURS:
        return OPERATION_COLOURS[name]
    return _SPARE_COLOURS[sum(name.encode()) % len(_SPARE_COLOURS)]


def stacked_over_time(
    frame: pl.DataFrame,
    *,
    time: str,
    series: str,
    value: str,
    title: str,
    bucket: dt.timedelta = _HOUR,
    marks: Sequence[tuple[dt.datetime, str]] = (),
) -> Figure:
    """Stacked bars of `value` per `time` bucket of width `bucket` (hourly rows are summed into wider buckets),
    one fixed colour per `series` (`colour`); the largest series get their own bar, the rest are summed as
    "other". `marks` (time, label): the alerts of the period, a red triangle each at the top of the axis."""
    figure, axes = _figure()
    axes.set_title(title)
    if frame.is_empty():
        _empty(axes)
        return figure
    if bucket > _HOUR:
        frame = frame.with_columns(pl.col(time).dt.truncate(f"{int(bucket.total_seconds())}s"))
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
        label = safe_text.plot_label(name)
        axes.bar(times, heights, width=width, bottom=bottom, label=label, align="edge", color=colour(name))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if marks:  # a red triangle above the bars per alert: visible without hiding the bars under it
        axes.scatter(
            [moment for moment, _ in marks],
            [1.0] * len(marks),
            transform=axes.get_xaxis_transform(),
            marker="v",
            s=46,
            color=ALERT_COLOUR,
            edgecolors="white",
            linewidths=0.5,
            clip_on=False,
            zorder=5,
            label=f"alert ({len(marks)})",
        )
    if len(times) == 1:  # one bucket: show a bucket either side, not one bar filling the axis
        axes.set_xlim(times[0] - bucket, times[0] + 2 * bucket)
    axes.set_ylabel(f"{value} per {_bucket_name(bucket)}")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.autofmt_xdate()
    return figure


def _bucket_name(bucket: dt.timedelta) -> str:
    hours = int(bucket.total_seconds() // 3600)
    return {1: "hour", 24: "day", 168: "week"}.get(hours, f"{hours} h")


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
