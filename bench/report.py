"""Results: one row per measured line, printed as a markdown table and written as JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PASS, SHORT, INFO, NOT_BUILT, FAILED = "pass", "short", "info", "n/a (not built)", "error"


@dataclass
class Row:
    """One line of the table: what the product did, what PostgreSQL alone did, and the verdict."""

    figure: str
    metric: str
    product: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    status: str = INFO
    notes: str = ""
    details: dict = field(default_factory=dict)


def not_built(figure: str, metric: str, target: str, missing: str) -> Row:
    return Row(
        figure,
        metric,
        "n/a (not built)",
        target=target,
        status=NOT_BUILT,
        notes=f"{missing} is not there yet",
    )


def failed(figure: str, error: BaseException) -> Row:
    return Row(
        figure,
        "figure failed",
        f"error: {type(error).__name__}",
        status=FAILED,
        notes=str(error).splitlines()[0][:200] if str(error) else "",
    )


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(seconds: list[float]) -> dict:
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 2) if seconds else 0.0,
    }


def machine() -> dict:
    memory_kib = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - the developer's git
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return out + ("+uncommitted" if dirty else "")
    except OSError:
        return ""


def markdown(rows: list[Row], context: dict) -> str:
    header = (
        "| # | Figure | Measure | Creditdesk | PostgreSQL alone | Ratio | Target | Result |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        number, _, title = row.figure.partition(" ")
        lines.append(
            f"| {number} | {title} | {row.metric} | {row.product} | {row.baseline or '-'} | "
            f"{row.ratio or '-'} | {row.target or '-'} | {row.status} |"
        )
    notes = [f"- {row.figure}, {row.metric}: {row.notes}" for row in rows if row.notes]
    m = context["machine"]
    description = (
        f"{context['events']:,} events; {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{context['postgresql']}; Python {m['python']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}; revision {context['revision']}; {context['started']}"
    )
    return "\n".join([description, "", *lines, "", *notes]) + "\n"


def write_json(path: Path, rows: list[Row], context: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**context, "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
