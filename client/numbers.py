"""`digitq predict --number`: each image holds a written number (a row of 1 to 10 digits); its row
gives the number as a string, one confidence per digit and one for the whole.

The client splits each image into digits (digitq.common.numbers), sends them as ordinary digits
(the same chunks, the same model, the same clean-up per digit), and joins the digit rows of each
file again here (`compose_numbers`). The whole number's confidence is the product of its digits'
(the chance that all are right, if each confidence were that digit's chance).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from digitq.common.doubt import BLANK, NOT_A_NUMBER, NOT_ONE_DIGIT, UNSURE
from digitq.common.errors import ImageError, InvalidRequest
from digitq.common.numbers import MAX_DIGITS

MAX_CANDIDATES = 100
"""Most candidate digits one file sends (its glyphs' readings): a row of 20 glyphs read one way
each is 20 to 80. Beyond it only each glyph's likeliest reading is sent."""

FILES_PER_CHUNK = 5000 // MAX_CANDIDATES
"""Files per predict task with --number (a task carries at most 5,000 digits)."""

NUMBER_COLUMNS = ["path", "number", "confidence", "digit_confidences", "flag", "error"]
"""A --number row's columns: the number as a string (leading zeros kept), the whole number's
confidence, each digit's (space-separated in CSV, a list in JSON), its flag, its error."""


@dataclass
class NumberRow:
    path: str
    number: str | None = None
    confidences: list[float] = field(default_factory=list)
    flag: str = ""
    error: str | None = None

    columns = NUMBER_COLUMNS
    probs = None  # no single digit's probabilities (what the gallery reads)

    @property
    def classified(self) -> bool:
        """A number read, or a blank image (flagged blank): not a failed file."""
        return self.number is not None or self.flag == BLANK

    @property
    def confidence(self) -> float | None:
        """The whole number's: the product of its digits' confidences."""
        return math.prod(self.confidences) if self.confidences else None

    def values(self) -> list:
        """The NUMBER_COLUMNS values in order ("" where there is none), as the CSV writes them."""
        if self.number is None:
            return [self.path, "", "", "", self.flag, self.error or ""]
        return [self.path, self.number, round(self.confidence, 6), " ".join(f"{c:.4f}" for c in self.confidences),
                self.flag, self.error or ""]

    def as_dict(self) -> dict:
        d = dict(zip(NUMBER_COLUMNS, self.values()))
        if self.number is not None:
            d["digit_confidences"] = [round(c, 6) for c in self.confidences]
        return d


def check_number_options(number: bool, min_confidence: float, gallery: str | None, remote: bool) -> None:
    """Refuse bad --number / --min-confidence combinations, one line each (InvalidRequest: exit 2)."""
    if not 0.0 <= min_confidence <= 1.0:
        raise InvalidRequest(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    if number and remote:
        raise InvalidRequest("--number splits each image into digits here; with --remote the workers read them")
    if number and gallery is not None:
        raise InvalidRequest("--gallery draws single digits; leave it out with --number")


def preprocess_numbers(folder: Path, paths: list[Path]) -> tuple[list, list, bytes, int]:
    """As digitq.client.predict._preprocess_chunk, each file split into the candidate digits of
    its number (digitq.common.numbers.load_number): one entry per candidate digit, named
    (relative name, glyph, reading, piece) with error None; or one entry (name, None, 0, 0) with
    the file's error."""
    from digitq.common.numbers import load_number

    names, errors, digits = [], [], []
    for p in paths:
        name = os.path.relpath(p, folder)
        try:
            glyphs = load_number(p)
        except ImageError as exc:
            names.append((name, None, 0, 0))
            errors.append(str(exc))
            continue
        if sum(len(stack) for readings in glyphs for stack in readings) > MAX_CANDIDATES:
            glyphs = [readings[:1] for readings in glyphs]  # at most SPLIT_LIMIT x MAX_PIECES digits
        for g, readings in enumerate(glyphs):
            for r, stack in enumerate(readings):
                names.extend((name, g, r, k) for k in range(len(stack)))
                errors.extend([None] * len(stack))
                digits.append(stack.tobytes())
    packed = b"".join(digits)
    return names, errors, packed, len(packed) // 784


def compose_numbers(rows: Iterable) -> Iterator[NumberRow]:
    """Join the candidate digit rows of each file (consecutive rows whose path is (name, glyph,
    reading, piece), as digitq.client.predict.predict_folder yields them with `number=True`)
    into one NumberRow: for each glyph, the reading whose digits' confidences have the largest
    product (a touching pair read as one digit scores low; a wide 0 cut in two scores lower
    than whole).

    Its flag: blank (no ink), not-a-number (more than MAX_DIGITS digits), not-one-digit or unsure
    when one of its digits is (the digit rows' flags already hold --min-confidence)."""
    group: list = []
    for row in rows:
        if group and row.path[0] != group[0].path[0]:
            yield _number_of(group)
            group = []
        group.append(row)
    if group:
        yield _number_of(group)


def _number_of(group: list) -> NumberRow:
    first = group[0]
    name = first.path[0]
    if first.probs is None:
        return NumberRow(name, flag=first.flag, error=first.error)
    readings: dict = {}
    for row in group:
        _, g, r, _ = row.path
        readings.setdefault(g, {}).setdefault(r, []).append(row)
    chosen = []
    for g in sorted(readings):
        chosen.extend(max(readings[g].values(), key=_log_score))
    best = [max(range(10), key=lambda d: row.probs[d]) for row in chosen]
    confidences = [float(row.probs[d]) for row, d in zip(chosen, best)]
    flags = {row.flag for row in chosen}
    if len(chosen) > MAX_DIGITS:
        flag = NOT_A_NUMBER
    elif NOT_ONE_DIGIT in flags:
        flag = NOT_ONE_DIGIT
    elif UNSURE in flags:
        flag = UNSURE
    else:
        flag = ""
    assert BLANK not in flags  # a blank file is one row without probabilities
    return NumberRow(name, "".join(map(str, best)), confidences, flag)


def _log_score(rows: list) -> float:
    """A reading's score: the sum of its digits' log confidences."""
    return sum(math.log(max(max(row.probs), 1e-9)) for row in rows)
