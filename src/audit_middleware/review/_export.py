"""Exports of a filtered range as CSV or JSON Lines, streamed in chunks of bounded size.

Rows come from ``EventQuery.stream`` (keyset pages); each chunk is sent as soon as it holds
about 64 KiB, so the memory an export needs does not grow with its size.

JSON Lines: one object a line, ``{"event_id": ..., "event": <the event JSON verbatim>}`` (the
exact text Telemetry received, nanoseconds and offset intact); a row this version cannot read is
``{"event_id": ..., "unreadable": {"error": ..., "event_json": ...}}``, and in the CSV its id
with ``changes`` saying why. CSV: one header line, then one
line per event; ``changes`` as compact JSON. A cell that a spreadsheet would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) is prefixed with ``'``: the
user agent and the path are whatever the client sent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable

from audit_middleware.storage._reader import AuditRecord, UnreadableRecord

__all__ = ["CSV_COLUMNS", "csv_chunks", "jsonl_chunks"]

_CHUNK_BYTES = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


# The event's columns between event_id and changes, each with how its cell is written: numbers
# and the timestamp as they are, any text through _cell (a spreadsheet must not run it).
_EVENT_CELLS: tuple[tuple[str, Callable[[object], str]], ...] = (
    ("timestamp", str),
    ("action", _cell),
    ("action_context", _cell),
    ("entity_type", _cell),
    ("entity_id", str),
    ("user_id", str),
    ("organization_id", str),
    ("ip_address", _cell),
    ("user_agent", _cell),
    ("request_path", _cell),
    ("status_code", str),
    ("break_glass_id", _cell),
    ("impersonation_id", _cell),
)

CSV_COLUMNS = ("event_id", *(name for name, _ in _EVENT_CELLS), "changes")
"""The CSV export's columns, in order."""


def csv_row(record: AuditRecord | UnreadableRecord) -> list[str]:
    """One event as CSV cells, in ``CSV_COLUMNS`` order."""
    if isinstance(record, UnreadableRecord):
        # Listed, not hidden: its id, and why it cannot be read where changes would be.
        blank = [""] * (len(CSV_COLUMNS) - 2)
        return [str(record.event_id), *blank, _cell(f"unreadable event: {record.error}")]
    event = record.event
    changes = (
        None
        if event.changes is None
        else json.dumps(event.changes, ensure_ascii=False, separators=(",", ":"))
    )
    cells = (write(getattr(event, name)) for name, write in _EVENT_CELLS)
    return [str(record.event_id), *cells, _cell(changes)]


async def csv_chunks(
    records: AsyncIterator[AuditRecord | UnreadableRecord],
) -> AsyncIterator[bytes]:
    """The CSV export of ``records``, in chunks of about 64 KiB."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    async for record in records:
        writer.writerow(csv_row(record))
        if buffer.tell() >= _CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def jsonl_chunks(
    records: AsyncIterator[AuditRecord | UnreadableRecord],
) -> AsyncIterator[bytes]:
    """The JSON Lines export of ``records``, in chunks of about 64 KiB."""
    lines: list[str] = []
    size = 0
    async for record in records:
        if isinstance(record, UnreadableRecord):
            unreadable = {"error": record.error, "event_json": record.event_json}
            line = json.dumps({"event_id": str(record.event_id), "unreadable": unreadable})
            line += "\n"
        else:
            line = f'{{"event_id":"{record.event_id}","event":{record.event.to_json()}}}\n'
        lines.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            yield "".join(lines).encode()
            lines, size = [], 0
    yield "".join(lines).encode()
