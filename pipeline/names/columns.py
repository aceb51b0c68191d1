"""Names beside ids in a result table (pure): an investigation's `key_arn` column gets a `key_arn_name` column
right after it (`alias/payments-prod`), an account id column a `..._name` one, as of each row's time."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipeline.names.resolve import NameIndex

# column -> the kind of id it holds
ID_COLUMNS: dict[str, str] = {
    "key_arn": "key",
    "resource_arn": "key",
    "resource": "key",
    "secret_id": "secret",
    "account_id": "account",
    "recipient_account_id": "account",
    "principal_account_id": "account",
    "key_account": "account",
}
# the first of these a row has is the time names are resolved at
TIME_COLUMNS: tuple[str, ...] = ("event_time", "first_seen", "hour", "last_seen")


def with_names(table: pa.Table, index: NameIndex, default_time: dt.datetime) -> pa.Table:
    """`table` with a `<column>_name` column after each id column that has at least one known name."""
    if not len(index) or not table.num_rows:
        return table
    times = _row_times(table, default_time)
    for column, kind in ID_COLUMNS.items():
        if column not in table.column_names or f"{column}_name" in table.column_names:
            continue
        values = table.column(column).to_pylist()
        names = [
            ", ".join(index.names(_kind(column, kind, value), value, at)) or None if isinstance(value, str) else None
            for value, at in zip(values, times, strict=True)
        ]
        if any(names):
            position = table.column_names.index(column) + 1
            table = table.add_column(position, f"{column}_name", pa.array(names, pa.string()))
    return table


def _kind(column: str, kind: str, value: str) -> str:
    """A `resource` / `resource_arn` column holds keys and secrets alike: its ARN says which."""
    return "secret" if column.startswith("resource") and ":secretsmanager:" in value else kind


def _row_times(table: pa.Table, default: dt.datetime) -> list[dt.datetime]:
    column = next((name for name in TIME_COLUMNS if name in table.column_names), None)
    if column is None or not pa.types.is_timestamp(table.schema.field(column).type):
        return [default] * table.num_rows
    return [value or default for value in table.column(column).to_pylist()]
