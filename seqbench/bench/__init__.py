"""Performance benchmarks: measured numbers written to reports/bench/, never timed tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad one is argparse's one-line usage error)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def machine() -> dict[str, Any]:
    """Where and when a benchmark ran: every result file starts with this."""
    return {"date": dt.date.today().isoformat(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def write_result(out: str | Path, stem: str, result: dict[str, Any],
                 markdown: Callable[[dict[str, Any]], str]) -> None:
    """`<out>/<stem>.json` (the numbers) and `<out>/<stem>.md` (the page a person reads)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(f"wrote {out / f'{stem}.md'}")
