"""CSV files as people download them: streamed, UTF-8 with a byte-order mark, RFC 4180, safe to
open in a spreadsheet.

Rows are written as they are read and sent in chunks of about 64 KB, so a file of millions of
ledger rows takes the memory of one chunk. Quoting is the ``csv`` module's (RFC 4180, CRLF
line ends); the header row is always there, even when no row follows.

The credit usage export, the one file that can hold millions of rows, is written by
PostgreSQL itself: ``COPY (the scoped queryset, its cells formatted in SQL) TO STDOUT WITH
CSV``, passed on as it arrives: Python only copies bytes, instead of formatting each row.
The bytes are the ones the ``csv`` module writes for the same cells (the tests compare
them).

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

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Case, F, Func, QuerySet, TextField, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, Left, NullIf
from django.db.models.lookups import In, IsNull
from django.http import StreamingHttpResponse
from django.utils.text import slugify
from rest_framework.renderers import BaseRenderer

from accounts.models import Subscription
from core.display import format_credits

from .costs import RoundMoney, row_cost
from .selectors import CreditUsageExport, environment_label

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Every CSV starts with the UTF-8 byte-order mark: without it, spreadsheets that guess the
# encoding (Excel's default) garble non-ASCII names. Programs read it with "utf-8-sig".
BOM = "\ufeff"
CHUNK_BYTES = 64 * 1024

CREDIT_USAGE_COLUMNS = (
    "Timestamp",
    "User",
    "Environment",
    "EnvironmentId",
    "Credits",
    "BaseCredits",
    "GrantCredits",
    "ExcessCredits",
    "Cost",
    "Currency",
)


def neutralise(value: str) -> str:
    """``value`` as a spreadsheet shows it as text, never runs it (OWASP's CSV injection)."""
    return f"'{value}" if value.startswith(FORMULA_TRIGGERS) else value


@dataclass(frozen=True)
class CsvTable:
    columns: Sequence[str]
    rows: Iterable[Sequence[str | int | None]]  # formatted cells; None is an empty cell
    text_columns: frozenset[str]


@dataclass(frozen=True)
class CopiedCsvTable:
    """A table that PostgreSQL writes as CSV: ``rows`` selects one text cell per column,
    formatted and neutralised in SQL, with NULL for an empty cell (PostgreSQL writes an empty
    string as ``""``, the ``csv`` module as nothing)."""

    columns: Sequence[str]
    rows: QuerySet
    using: str  # the database alias, chosen when the table is made (a replica, for reports)


class _Echo:
    """A file whose ``write`` hands back the line, so ``csv.writer`` can feed a stream."""

    def write(self, line: str) -> str:
        return line


def csv_chunks(table: CsvTable | CopiedCsvTable) -> Iterator[bytes]:
    if isinstance(table, CopiedCsvTable):
        yield from _copied_chunks(table)
        return
    writer = csv.writer(_Echo())
    is_text = [name in table.text_columns for name in table.columns]
    lines, size = [BOM + writer.writerow(table.columns)], 0
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

    def render(
        self, data: CsvTable | CopiedCsvTable, accepted_media_type=None, renderer_context=None
    ):
        return csv_chunks(data)


def report_table(report, rows) -> CsvTable:
    """The rows of a catalogue report (``reports.catalogue.Report``) as its CSV file: what the
    report endpoint streams and a scheduled email attaches."""
    return CsvTable(
        columns=report.column_names,
        rows=(report.cells(row) for row in rows),
        text_columns=report.text_columns,
    )


def csv_response(renderer: CSVRenderer, table: CsvTable | CopiedCsvTable, *, filename: str):
    response = StreamingHttpResponse(
        renderer.render(table), content_type=f"{renderer.media_type}; charset={renderer.charset}"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _copied_chunks(table: CopiedCsvTable) -> Iterator[bytes]:
    """The header row as the ``csv`` module writes it, then PostgreSQL's CSV of ``rows``.

    COPY hands over one row at a time; rows are sent in chunks of about ``CHUNK_BYTES``.
    Stopping early (a download given up, an email attachment over its budget) cancels the
    COPY; inside a transaction a savepoint takes the cancellation, so the transaction goes on.
    """
    yield (BOM + csv.writer(_Echo()).writerow(table.columns)).encode()
    try:
        sql, params = table.rows.query.get_compiler(using=table.using).as_sql()
    except EmptyResultSet:  # e.g. ``none()``: nothing to ask PostgreSQL
        return
    connection = connections[table.using]
    # COPY takes no bound parameters: they are bound client-side, as Django's cursors do.
    select = connection.ops.compose_sql(sql, params)
    with (
        transaction.atomic(using=table.using),
        connection.cursor() as cursor,
        cursor.copy(f"COPY ({select}) TO STDOUT WITH (FORMAT csv)") as copy,
    ):
        rows, size = [], 0
        for row in copy:
            rows.append(row)
            size += len(row)
            if size >= CHUNK_BYTES:
                yield _crlf(rows)
                rows, size = [], 0
        if rows:
            yield _crlf(rows)


def _crlf(rows: list) -> bytes:
    """COPY ends a row with LF, the ``csv`` module with CRLF; a line break inside a quoted
    cell stays as it is in both. Each of ``rows`` is one whole row (libpq's COPY protocol)."""
    data = b"".join(rows)
    if data.count(b"\n") == len(rows):  # no line break inside a cell: the usual case
        return data.replace(b"\n", b"\r\n")
    return b"".join(bytes(row[:-1]) + b"\r\n" for row in rows)


def csv_filename(*, subscription: Subscription, report: str, timeframe_label: str) -> str:
    """e.g. ``acme_usage-by-agent_2026-10.csv``: ASCII only, so every browser keeps it."""
    name = slugify(subscription.name) or f"subscription-{subscription.pk}"
    return f"{name}_{report}_{timeframe_label}.csv"


# --- The credit usage export ------------------------------------------------------------------


def utc_iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def credit_usage_cells(row, currency: str | None) -> list[str]:
    """One ledger row as the export's cells (JSON). The user is
    the person's email, or the API key's name when a key acted alone; the cost is the row's,
    rounded once, in ``currency`` (empty without one). PostgreSQL writes the same cells
    (``_credit_usage_sql_cells``); a test compares the two byte for byte."""
    cost = row_cost(row.cost, currency)
    return [
        utc_iso(row.timestamp),
        row.user__email or row.api_key__name or "",
        environment_label(row.environment__project__name, row.environment__name),
        str(row.environment__public_id or ""),
        format_credits(row.credits, grouped=False),
        format_credits(row.credits - row.grant_credits - row.excess_credits, grouped=False),
        format_credits(row.grant_credits, grouped=False),
        format_credits(row.excess_credits, grouped=False),
        "" if cost is None else f"{cost if cost else abs(cost):f}",  # never "-0.00"
        currency or "",
    ]


class _UtcIso(Func):
    """``utc_iso`` in PostgreSQL: microseconds only when there are some, as ``isoformat``."""

    arity = 1
    template = (
        "replace(to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        "'.000000Z', 'Z')"
    )
    output_field = TextField()


def _formula_safe(text):
    """``neutralise`` in SQL, for a text cell that is NULL when empty."""
    return Case(
        When(In(Left(text, 1), FORMULA_TRIGGERS), then=Concat(Value("'"), text)),
        default=text,
        output_field=TextField(),
    )


def _credit_usage_sql_cells(currency: str | None) -> tuple:
    """``credit_usage_cells`` as PostgreSQL expressions, NULL for an empty cell."""
    environment = NullIf(F("environment__name"), Value(""))
    cost = (
        (Value(None, TextField()), Value(None, TextField()))
        if currency is None
        else (Cast(RoundMoney("cost", currency=currency), TextField()), Value(currency))
    )
    return (
        _UtcIso("timestamp"),
        _formula_safe(
            Coalesce(NullIf(F("user__email"), Value("")), NullIf(F("api_key__name"), Value("")))
        ),
        _formula_safe(
            Case(
                When(
                    IsNull(environment, False),
                    then=Concat(F("environment__project__name"), Value(" / "), environment),
                ),
                output_field=TextField(),
            )
        ),
        Cast("environment__public_id", TextField()),  # lower case with dashes, as str(UUID)
        Cast("credits", TextField()),  # numeric(18, 4): four places, as ungrouped format_credits
        Cast(F("credits") - F("grant_credits") - F("excess_credits"), TextField()),
        Cast("grant_credits", TextField()),
        Cast("excess_credits", TextField()),
        *cost,
    )


def credit_usage_table(export: CreditUsageExport) -> CopiedCsvTable:
    """The export's rows as the file is sent: written by PostgreSQL's COPY."""
    events = export.events
    return CopiedCsvTable(
        columns=CREDIT_USAGE_COLUMNS,
        rows=events.values_list(*_credit_usage_sql_cells(export.currency)),
        using=events.db,
    )
