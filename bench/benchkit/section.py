"""What a benchmark section is: how it runs, what it returns, how it renders its table and its plot."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Result:
    """A section's result: a dataclass whose fields are the keys it has in suite.json."""

    def to_dict(self) -> dict:
        """The result as suite.json holds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The result from suite.json (its "stamp" left out); a key the result does not have is an error."""
        return cls(**{k: v for k, v in data.items() if k != "stamp"})


@dataclass(frozen=True)
class Context:
    """What a section's table and plot may use besides its own result (which is a dict, as suite.json
    holds it: results kept from earlier runs may come from an older suite and lack newer keys)."""

    args: argparse.Namespace
    machine: dict
    quick: bool = False
    """The result being drawn is from a --quick (smoke) run."""


@dataclass(frozen=True)
class Section:
    """One benchmark: its name for --only, its report title and what it does."""

    name: str
    title: str
    result: type[Result]
    """The dataclass run returns."""
    run: Callable[[Any], Result]
    """Runs the benchmark on a Harness; returns its result."""
    render: Callable[[dict, Context], list[str]]
    """The section's Markdown lines under its title and stamp."""
    plot: Callable[[dict, Path, Context], None]
    """Draws the section's plot into a PNG file."""
    summary: Callable[[dict], list[str]]
    """The section's rows of the report's summary table."""
    repeats: Callable[[argparse.Namespace], int | None] = lambda args: None
    """How many times its timed pairs repeat (for the stamp), or None if it runs once."""
