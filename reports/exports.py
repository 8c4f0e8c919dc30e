"""CSV files as people download them: streamed, UTF-8, RFC 4180, safe to open in a spreadsheet.

Rows are written as they are read and sent in chunks of about 64 KB, so a file of millions of
ledger rows takes the memory of one chunk (the ledger is read with a server-side cursor).
Quoting is the ``csv`` module's (RFC 4180, CRLF line ends); the header row is always there,
even when no row follows.

Formula injection: a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula. Such cells in **text columns** (names, emails, models,
features: whatever people or API callers typed) get a leading single quote, which spreadsheets
show as text. Columns Creditdesk formats itself (timestamps, UUIDs, ids, counts, credits) are
left alone: they hold only digits, a sign, a decimal point, dashes and colons, and a negative
adjustment must stay the number ``-1.5000`` rather than become the text ``'-1.5000``. JSON is
data for programs and is never altered.
"""

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.http import StreamingHttpResponse
from django.utils.text import slugify
from rest_framework.renderers import BaseRenderer

from accounts.models import Subscription

from .selectors import CREDITS, CreditUsageExport, environment_label

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 64 * 1024
LEDGER_CHUNK_ROWS = 2000

CREDIT_USAGE_COLUMNS = ("Timestamp", "User", "Environment", "EnvironmentId", "Credits")
CREDIT_USAGE_TEXT_COLUMNS = frozenset({"User", "Environment"})


def neutralise(value: str) -> str:
    """``value`` as a spreadsheet shows it as text, never runs it (OWASP's CSV injection)."""
    return f"'{value}" if value.startswith(FORMULA_TRIGGERS) else value


@dataclass(frozen=True)
class CsvTable:
    columns: Sequence[str]
    rows: Iterable[Sequence[str | int | None]]  # formatted cells; None is an empty cell
    text_columns: frozenset[str]


class _Echo:
    """A file whose ``write`` hands back the line, so ``csv.writer`` can feed a stream."""

    def write(self, line: str) -> str:
        return line


def csv_chunks(table: CsvTable) -> Iterator[bytes]:
    writer = csv.writer(_Echo())
    is_text = [name in table.text_columns for name in table.columns]
    lines, size = [writer.writerow(table.columns)], 0
    for row in table.rows:
        line = writer.writerow(
            [
                neutralise(cell) if text and cell else cell
                for cell, text in zip(row, is_text, strict=True)
            ]
        )
        lines.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(lines).encode()
            lines, size = [], 0
    yield "".join(lines).encode()


class CSVRenderer(BaseRenderer):
    """``text/csv``, chosen with ``?format=csv`` or ``Accept: text/csv``.

    ``render`` turns a ``CsvTable`` into a stream of byte chunks for a
    ``StreamingHttpResponse`` (see ``csv_response``); errors are answered in JSON instead.
    """

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: CsvTable, accepted_media_type=None, renderer_context=None):
        return csv_chunks(data)


def csv_response(renderer: CSVRenderer, table: CsvTable, *, filename: str):
    response = StreamingHttpResponse(
        renderer.render(table), content_type=f"{renderer.media_type}; charset={renderer.charset}"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_filename(*, subscription: Subscription, report: str, timeframe_label: str) -> str:
    """e.g. ``acme_usage-by-agent_2026-10.csv``: ASCII only, so every browser keeps it."""
    name = slugify(subscription.name) or f"subscription-{subscription.pk}"
    return f"{name}_{report}_{timeframe_label}.csv"


# --- The credit usage export ------------------------------------------------------------------


def utc_iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def credit_usage_cells(row) -> list[str]:
    """One ledger row as the export's cells (CSV and JSON alike). The user is the person's
    email, or the API key's name when a key acted alone."""
    return [
        utc_iso(row.timestamp),
        row.user__email or row.api_key__name or "",
        environment_label(row.environment__project__name, row.environment__name),
        str(row.environment__public_id or ""),
        f"{row.credits.quantize(CREDITS):f}",
    ]


def credit_usage_table(export: CreditUsageExport) -> CsvTable:
    """The export's rows, read from a server-side cursor as the file is sent."""
    return CsvTable(
        columns=CREDIT_USAGE_COLUMNS,
        rows=map(credit_usage_cells, export.events.iterator(chunk_size=LEDGER_CHUNK_ROWS)),
        text_columns=CREDIT_USAGE_TEXT_COLUMNS,
    )
