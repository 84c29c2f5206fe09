"""Figures, their medians and ratios, and how they are printed and saved."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Figure:
    """One line of the table.

    ``value`` is the median of the measured runs of the system under test and
    ``baseline`` the median of the runs of what it is compared with, taken side by
    side in the same run; ``ratio`` is the figure the target applies to.
    """

    key: str
    title: str
    unit: str = ""
    value: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    runs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if value else "0"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table (what docs/benchmarks.md holds)."""
    rows = [("figure", "value", "baseline", "ratio", "target", "met")]
    for f in figures:
        met = "n/a" if f.met is None else ("yes" if f.met else "no")
        value = _fmt(f.value, f.unit) if f.error is None or f.value is not None else "n/a"
        baseline = f"{_fmt(f.baseline, f.unit)} ({f.baseline_name})" if f.baseline_name else ""
        rows.append((f.title, value, baseline, _fmt(f.ratio), f.target, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for f in figures:
        for note in f.notes:
            lines.append(f"\n{f.title}: {note}")
        if f.error:
            lines.append(f"\n{f.title}: {f.error}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    return info


def write_json(path: Path, mode: str, seconds: float, figures: list[Figure]) -> None:
    doc = {
        "mode": mode,
        "seconds": round(seconds, 1),
        "machine": machine(),
        "figures": {f.key: asdict(f) for f in figures},
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
