"""Number formatting for the report: "-" wherever a figure is missing."""

from __future__ import annotations

import os
from pathlib import Path


def fs(x, digits=1, unit=" s") -> str:
    """Seconds (or another unit), with thousands separators."""
    return "-" if x is None else f"{x:,.{digits}f}{unit}"


def pct(x) -> str:
    """A share as a whole percentage."""
    return "-" if x is None else f"{x * 100:.0f}%"


def cpu_share(run) -> str:
    """The share of the CPUs other processes used while a run was measured."""
    return pct(((run or {}).get("cpu") or {}).get("other_share"))


def fr(x, digits=2) -> str:
    """A ratio: "1.23x"."""
    return "-" if x is None else f"{x:.{digits}f}x"


def ms(x) -> str:
    """Seconds as milliseconds."""
    return "-" if x is None else f"{x * 1000:,.1f} ms"


def plural(count: int, noun: str) -> str:
    """"1 epoch", "20 epochs"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def rel(path: Path, base: Path) -> str:
    """path relative to base, with forward slashes (a Markdown link)."""
    return os.path.relpath(path, base).replace(os.sep, "/")
