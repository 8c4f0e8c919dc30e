"""Sampling profiles of the gunicorn workers with py-spy, when ``--profile`` asks for them.

py-spy attaches from outside (no code change, little overhead) and writes collapsed stacks;
``summarise`` turns them into the share of samples spent under each function of ours and
under the main libraries, which is what the report quotes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from .server import RESULTS, ROOT

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def available() -> bool:
    return PY_SPY.exists() or shutil.which("py-spy") is not None


@contextlib.contextmanager
def maybe(settings, server, name: str, duration: float):
    """Profile ``server``'s workers for ``duration`` seconds while the body runs."""
    if not settings.profile or not available():
        yield None
        return

    def stop(recorder: subprocess.Popen) -> None:
        try:
            recorder.wait(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            recorder.terminate()

    with _recording(
        name, server.process.pid, "--subprocesses", rate=200, duration=duration, stop=stop
    ) as output:
        yield output


@contextlib.contextmanager
def _recording(name: str, pid: int, *options: str, rate: int, duration: float, stop):
    """py-spy records ``pid`` into ``profile-<name>.txt`` while the body runs; ``stop`` ends
    it, and what it recorded is summarised beside it."""
    output = RESULTS / f"profile-{name}.txt"
    command = [
        str(PY_SPY if PY_SPY.exists() else shutil.which("py-spy")),
        "record",
        "--pid",
        str(pid),
        *options,
        "--nonblocking",
        "--rate",
        str(rate),
        "--duration",
        str(int(duration)),
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    recorder = subprocess.Popen(  # noqa: S603 - py-spy from our venv, fixed arguments
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield output
    finally:
        stop(recorder)
        if output.exists():
            (RESULTS / f"profile-{name}-summary.txt").write_text(summarise(output))


OURS = ("accounts/", "credits/", "reports/", "config/")
LIBRARIES = {
    "django/db/": "Django ORM and database layer",
    "psycopg/": "psycopg (waiting on PostgreSQL included)",
    "rest_framework/": "Django REST framework",
    "django/core/handlers": "Django request handling",
    "django/middleware": "Django middleware",
    "django/contrib/sessions": "Django sessions",
    "gunicorn/": "gunicorn",
    "json/": "json",
    "zoneinfo": "zoneinfo",
}


def summarise(path: Path, top: int = 30) -> str:
    """Inclusive share of samples per function of ours and per library, from collapsed stacks."""
    ours: Counter = Counter()
    libraries: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        if any("process " in frame and "idle" in frame for frame in frames[:1]):
            continue
        total += samples
        seen_ours, seen_libraries = set(), set()
        for frame in frames:
            if any(part in frame for part in OURS) and ".venv" not in frame:
                seen_ours.add(frame.split(" (", 1)[0] + " " + _where(frame))
            for marker, label in LIBRARIES.items():
                if marker in frame:
                    seen_libraries.add(label)
        for frame in seen_ours:
            ours[frame] += samples
        for label in seen_libraries:
            libraries[label] += samples
        leaves[frames[-1].split(" (", 1)[0] + " " + _where(frames[-1])] += samples
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (workers busy or waiting)", "", "Our functions (inclusive):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in ours.most_common(top)]
    lines += ["", "Libraries (inclusive):"]
    lines += [f"  {100 * n / total:5.1f}%  {label}" for label, n in libraries.most_common()]
    lines += ["", "Leaf frames (self time):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaves.most_common(top)]
    return "\n".join(lines) + "\n"


def _where(frame: str) -> str:
    inside = frame.split(" (", 1)[1].rstrip(")") if " (" in frame else ""
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in inside:
            inside = inside.split(marker, 1)[1]
    return f"({inside})"


@contextlib.contextmanager
def maybe_in_process(settings, name: str, duration: float = 600):
    """Profile this process (a task called directly) until the body ends."""
    import os

    if not settings.profile or not available():
        yield None
        return

    def stop(recorder: subprocess.Popen) -> None:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()

    with _recording(name, os.getpid(), rate=100, duration=duration, stop=stop) as output:
        yield output
