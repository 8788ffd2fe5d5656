"""When a prediction should not be trusted: the flag each `digitq predict` row carries.

Flags, strongest first (a row carries one, "" when none applies):
  blank          the image holds no ink that could be a digit (blank paper, only ruled lines,
                 shading or specks): no prediction at all.
  not-one-digit  the cleaned-up 28x28 image does not look like one handwritten digit: its ink is
                 much wider than tall (several digits, a shoe), filled in rather than written
                 with a pen's stroke (a blob), or grey all over (a garment, noise, a photo of a
                 thing). `shape_flags`.
  unsure         the model's confidence (the top probability) is under --min-confidence.
  (numbers)      not-a-number: more than MAX_DIGITS digits; a number is `unsure` or
                 `not-one-digit` when one of its digits is.

The shape test looks only at the 28x28 digit the model is given, so it costs a few vectorised
NumPy operations per chunk. Its limits sit at the 99.5th-99.8th percentiles of MNIST's test
digits after the clean-up (it flags about 1% of them); which features to combine was chosen on
Fashion-MNIST test items 0-1499 and bench/written_numbers.py's noise and drawings (seed 0), and
the benchmark reports other items (5000-6499, seed 1). Never imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

BLANK = "blank"
NOT_ONE_DIGIT = "not-one-digit"
UNSURE = "unsure"
NOT_A_NUMBER = "not-a-number"
FLAGS = (BLANK, NOT_ONE_DIGIT, UNSURE, NOT_A_NUMBER)
"""Every flag a row may carry ("" for none)."""

DEFAULT_MIN_CONFIDENCE = 0.6
"""Top probability under which a prediction is flagged `unsure` (--min-confidence). Set on the
MNIST test set with the default model (fast-cnn, label smoothing 0.1: a clean digit's top
probability is near 0.94): with the shape test, 1.9% of its right predictions there are flagged,
71% of its wrong ones and 94% of non-digit images (BENCHMARKS.md, "Unsure flag"; 0.7 flags 2.9%
of the right ones). The cnn at this setting: 1.5%, 67%, 93%."""

MAX_ASPECT = 1.65
"""Widest ink box, as width / height of the strong ink (>= STRONG) in the 28x28 digit, that is
one digit. MNIST test digits after the clean-up: 99.5% are at most 1.65 (the widest are
sprawling 2s and 7s); two digits side by side are wider."""

MAX_SOLID = 0.33
"""Largest share of the strong ink that is inside a 4x4 block of strong ink (ink filling an area
rather than drawn with a pen: a pen's stroke is 2-4 px wide at 28x28). MNIST test digits after
the clean-up: 99.8% are at most 0.33."""

MAX_INK = 0.6
"""Most ink (the digit's levels summed, in 20x20 boxes of full ink: the digit box) that one digit
holds. MNIST test digits after the clean-up: 99.8% hold at most 0.57; a filled shape fills its box."""

MAX_GREY = 0.71
"""Largest share of the ink's pixels (>= 48) that are mid-grey (under 208). A pen's stroke is
saturated with thin anti-aliased edges (MNIST test digits after the clean-up: median 0.39, 99.8%
at most 0.71); a photo of a thing, a texture or noise is grey all over."""

STRONG = 128
"""Level (of 255) from which a pixel of the 28x28 digit is ink for the shape test."""


def shape_features(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(aspect, solid, ink, grey) of each 28x28 digit (uint8 [n, 28, 28]), float64 [n] each: see
    MAX_ASPECT, MAX_SOLID, MAX_INK and MAX_GREY. Whole-stack NumPy operations: no loop per image."""
    n = digits.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    strong = digits >= STRONG
    rows, cols = strong.any(axis=2), strong.any(axis=1)
    size = strong.shape[1]
    height = size - np.argmax(rows[:, ::-1], axis=1) - np.argmax(rows, axis=1)
    width = size - np.argmax(cols[:, ::-1], axis=1) - np.argmax(cols, axis=1)
    aspect = np.where(rows.any(axis=1), width / np.maximum(height, 1), 0.0)
    block = strong[:, : size - 3, : size - 3].copy()  # 4x4 blocks all strong, by their top-left pixel
    for dy in range(4):
        for dx in range(4):
            if dy or dx:
                block &= strong[:, dy : size - 3 + dy, dx : size - 3 + dx]
    solid = block.sum(axis=(1, 2)) / np.maximum(strong.sum(axis=(1, 2)), 1)
    flat = digits.reshape(n, -1)
    ink = flat.sum(axis=1, dtype=np.int64) / (255.0 * 400)
    inked = (flat >= 48).sum(axis=1)
    grey = (inked - (flat >= 208).sum(axis=1)) / np.maximum(inked, 1)
    return aspect.astype(np.float64), solid.astype(np.float64), ink.astype(np.float64), grey.astype(np.float64)


def shape_flags(digits: np.ndarray) -> list[str]:
    """NOT_ONE_DIGIT or "" for each 28x28 digit (uint8 [n, 28, 28]); see MAX_ASPECT, MAX_SOLID,
    MAX_INK and MAX_GREY."""
    aspect, solid, ink, grey = shape_features(digits)
    odd = (aspect > MAX_ASPECT) | (solid > MAX_SOLID) | (ink > MAX_INK) | (grey > MAX_GREY)
    return [NOT_ONE_DIGIT if o else "" for o in odd.tolist()]


def is_blank_message(message: str) -> bool:
    """Whether a per-file message is digitq.common.errors.NoInkError's (a worker sends messages, not
    exceptions): such a file is a row flagged `blank`, not an error."""
    return message.startswith("no ink found")


def flag_for(confidence: float | None, shape: str, min_confidence: float) -> str:
    """A row's flag from its confidence (None: no prediction, a blank image) and its shape flag."""
    if confidence is None:
        return BLANK
    if shape:
        return shape
    return UNSURE if confidence < min_confidence else ""
