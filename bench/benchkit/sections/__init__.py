"""The registry of benchmark sections: which exist (the names --only takes), in which order they run and in
which order the report shows them. Adding a section: a module here with a SECTION, and a line below."""

from __future__ import annotations

from benchkit.section import Section
from benchkit.sections import ceiling, onednn, overhead, predict, queue, scaling, tta

SECTIONS: dict[str, Section] = {s.name: s for s in (
    overhead.SECTION,
    tta.SECTION,
    ceiling.SECTION,
    queue.SECTION,  # before predict: predict_throughput.py is the longest-running client of the stack
    predict.SECTION,
    scaling.SECTION,
    onednn.SECTION,
)}
"""Every section, in run order."""

BENCHMARKS = tuple(SECTIONS)
"""The sections' names, in run order."""

REPORT_ORDER = ("overhead", "tta", "ceiling", "predict", "queue", "scaling", "onednn")
"""The order of the report's sections and summary rows."""
