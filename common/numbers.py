"""Written numbers: an image holding a row of 1 to MAX_DIGITS digits ("2026" on a form or a
photo), split into MNIST digits, left to right, for the same model as single digits.

    glyphs = load_number(path)   # per glyph, its readings: uint8 [k, 28, 28], k digits each

The row's ink is found as a single digit's is (`images.ink_crop(row=True)`: the clean path, or
the photo clean-up keeping the clusters beside the largest one), then split by `split_row`:
  1. connected components of the ink (at INK_LEVEL of its peak); specks go;
  2. pieces over one another (a five's bar) or one above the other (a stem cut by an erased
     grid line) become one glyph; short pieces join their nearest neighbour;
  3. a glyph wider than SPLIT_FROM x the row's digit height may hold touching digits: besides
     reading it whole, it is read cut in 2 (at each of its deepest ink valleys) up to
     MAX_PIECES pieces (at the columns with least ink near their even positions); beside other
     digits, one wider than WIDE x the height is never read whole. The model's confidences
     choose among the readings (digitq.client.numbers);
  4. each piece, cropped to its own ink, becomes an MNIST digit exactly as a single digit does
     (`images.digit_from_crop`: stroke width, 20-px box, centre of mass).
Never imports TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from digitq.common import images, photos
from digitq.common.errors import NoInkError

MAX_DIGITS = 10
"""Most digits a number may have; a row split into more is flagged (not a number), not refused."""

SPLIT_LIMIT = 2 * MAX_DIGITS
"""Most pieces `split_row` returns (the leftmost): bounds the work on a page of text or a drawing."""

INK_LEVEL = 0.35
"""Share of the crop's peak level from which a pixel is ink for the split (edges below it stay
with the piece they touch)."""

SPECK_AREA = 0.04
"""Components smaller than this share of the largest one, and shorter than SPECK_HEIGHT of the
row, are specks (dust, a full stop), not digits or parts of one."""

SPECK_HEIGHT = 0.3
"""See SPECK_AREA: as a share of the row's digit height."""

OVERLAP = 0.8
"""Two glyphs whose column ranges overlap by this share of the narrower one are one digit
(strokes of one digit over one another). Neighbouring digits, even slanted or touching, overlap
less."""

STACKED = 0.4
"""Two glyphs whose columns overlap by this share of the narrower one's, one above the other
(their rows overlapping by under a quarter of the shorter's), are the pieces of one digit."""

PIECE_HEIGHT = 0.5
"""A piece less than this share of the row's digit height tall (a five's bar, a stroke's broken
end) joins the glyph nearest to it; a reading of touching digits that cuts off such a piece is
no reading."""

SPLIT_FROM = 0.7
"""A glyph wider than this many times the row's digit height may hold touching digits: it is
also read cut in pieces, and the model's confidences choose (digitq.client.numbers)."""

PAIR_CUTS = 3
"""Candidate cuts of a glyph read as two touching digits (the deepest valleys of its ink)."""

PAIR_SPAN = 0.2
"""A touching pair's cut lies at least this share of the glyph's width from either end."""

MAX_PIECES = 4
"""Most touching digits one glyph is read as."""

WIDE = 1.15
"""A glyph wider than this many times the row's digit height (the median glyph's) holds touching
digits, unless it is all the row holds: its readings start with round(width / DIGIT_WIDTH x
height) pieces, and one digit is not among them (the model reads a squeezed pair confidently as
one digit). Handwritten digits are rarely wider than tall; MNIST's fit a 20x20 box."""

DIGIT_WIDTH = 0.7
"""A digit's expected width, as a share of the row's digit height: how many digits a wide glyph
holds (MNIST test digits' median width / height is about 0.7)."""

CUT_WINDOW = 0.35
"""A cut is looked for within this share of a digit's expected width either side of its even
position."""


def load_number(path: str | os.PathLike, *, max_pixels: int = images.MAX_IMAGE_PIXELS,
                max_bytes: int = images.MAX_FILE_BYTES) -> list[list[np.ndarray]]:
    """The candidate digits of the number written in an image file: for each glyph (a digit, or
    touching digits) left to right, its readings, each uint8 [k, 28, 28] (k digits, left to right),
    the likeliest by its width first. ImageError as `images.load_image` (NoInkError: blank)."""
    return number_from_gray(images.read_gray(path, max_pixels=max_pixels, max_bytes=max_bytes))


def number_from_gray(gray: np.ndarray) -> list[list[np.ndarray]]:
    """`load_number` of grey levels (uint8 2-D)."""
    return [[np.stack([images.digit_from_crop(piece) for piece in reading]) for reading in glyph]
            for glyph in split_row(images.ink_crop(gray, row=True))]


def split_row(crop: np.ndarray) -> list[list[list[np.ndarray]]]:
    """The glyphs of a row's ink crop (2-D, ink bright on 0), left to right; for each, its readings
    (1 digit, or cut into 2, 3, ... where it is wide enough to hold touching digits), the
    likeliest by width first; each reading a list of float32 crops cut to their own ink.
    NoInkError if the crop holds no ink."""
    cv2 = photos.cv2()
    ink = crop.astype(np.float32)
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0:
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    binary = (ink >= INK_LEVEL * peak).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    comps = [(int(x), int(y), int(w), int(h), int(a)) for x, y, w, h, a in stats[1:]]
    if not comps:
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    biggest = max(a for *_, a in comps)
    tall = sorted(h for *_, h, a in comps if a >= 0.25 * biggest)
    height = tall[len(tall) // 2]  # a first guess of the row's digit height: its large components'
    # 1. specks go; each remaining component is a glyph: [left, right, top, bottom, labels]
    glyphs = [[x, x + w, y, y + h, [i + 1]] for i, (x, y, w, h, a) in enumerate(comps)
              if a >= SPECK_AREA * biggest or h >= SPECK_HEIGHT * height]
    # 2. glyphs over one another are one digit; a short piece joins its nearest neighbour
    glyphs = _merge(glyphs, height)
    tall = sorted(g[3] - g[2] for g in glyphs)
    # The row's digit height: its tallest glyph's, up to 1.25x the median's (a wide digit is
    # shorter, in MNIST's 20x20 box as on paper; a glyph much taller than the rest is no guide).
    height = max(min(tall[-1], 1.25 * tall[len(tall) // 2]), 1)
    # 3. and 4. wide glyphs get readings cut in pieces; every piece is cropped to its own ink
    near = cv2.dilate(binary, np.ones((3, 3), np.uint8)) > 0  # the anti-aliased edge beside the ink
    found: list[list[list[np.ndarray]]] = []
    for left, right, _, _, members in glyphs[:SPLIT_LIMIT]:
        mask = np.isin(labels[:, left:right], members)
        levels = np.where(cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, ink[:, left:right], 0)
        levels = np.where(near[:, left:right], levels, 0)
        readings = []
        for cuts in _readings(mask & (binary[:, left:right] > 0), height, alone=len(glyphs) == 1):
            pieces = [_trim(levels[:, start:stop], INK_LEVEL * peak) for start, stop in cuts]
            pieces = [p for p in pieces if p is not None]
            if len(pieces) > 1 and min(p.shape[0] for p in pieces) < PIECE_HEIGHT * height:
                continue  # a cut that leaves a stroke's end (a seven's bar) as a digit of its own
            if pieces:
                readings.append(pieces)
        if not readings:  # every cut left such a piece: one wide digit after all
            whole = _trim(levels, INK_LEVEL * peak)
            readings = [[whole]] if whole is not None else []
        if readings:
            found.append(readings)
    if not found:
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    return found


def _trim(piece: np.ndarray, level: float) -> np.ndarray | None:
    """`piece` cut to the rows and columns that reach `level` (None if none does)."""
    rows = np.flatnonzero(piece.max(axis=1) >= level)
    cols = np.flatnonzero(piece.max(axis=0) >= level)
    if not len(rows) or not len(cols):
        return None
    return piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _merge(glyphs: list, height: int) -> list:
    """Glyphs ([left, right, top, bottom, labels]) over one another merged into one, and short
    pieces (under PIECE_HEIGHT of `height`: a five's bar, a broken stroke) merged into the
    nearest glyph; left to right."""
    glyphs = sorted(glyphs, key=lambda g: g[0])
    merged = True
    while merged and len(glyphs) > 1:
        merged = False
        pairs = [(a, b) for a in range(len(glyphs)) for b in range(a + 1, len(glyphs))]
        for a, b in pairs:
            if _belong_together(glyphs[a], glyphs[b], height):
                break
        else:
            short = [i for i, g in enumerate(glyphs) if g[3] - g[2] < PIECE_HEIGHT * height]
            if not short:
                break
            i = short[0]
            others = [j for j in range(len(glyphs)) if j != i]
            a, b = i, min(others, key=lambda j: _gap(glyphs[i], glyphs[j]))
        ga, gb = glyphs[a], glyphs[b]
        glyphs = [g for k, g in enumerate(glyphs) if k not in (a, b)]
        glyphs.append([min(ga[0], gb[0]), max(ga[1], gb[1]), min(ga[2], gb[2]), max(ga[3], gb[3]), ga[4] + gb[4]])
        glyphs.sort(key=lambda g: g[0])
        merged = True
    return sorted(glyphs, key=lambda g: (g[0] + g[1]) / 2)


def _gap(a: list, b: list) -> float:
    """Distance between two glyphs' boxes (0 when they overlap in columns), rows counting less."""
    dx = max(0, max(a[0], b[0]) - min(a[1], b[1]))
    dy = max(0, max(a[2], b[2]) - min(a[3], b[3]))
    return dx + 0.5 * dy


def _belong_together(a: list, b: list, height: int) -> bool:
    """Whether two glyphs ([left, right, top, bottom, labels]) are parts of one digit: their
    columns overlap by OVERLAP of the narrower one's."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    if overlap <= 0:
        return False
    narrower = min(a[1] - a[0], b[1] - b[0])
    if overlap >= OVERLAP * narrower:
        return True
    # a digit broken across (a grid line erased through a nine's stem): pieces one above the other
    rows = min(a[3], b[3]) - max(a[2], b[2])
    return overlap >= STACKED * narrower and rows < 0.25 * min(a[3] - a[2], b[3] - b[2])


def _readings(mask: np.ndarray, height: int, alone: bool = False) -> list[list[tuple[int, int]]]:
    """The ways to read one glyph (its mask, bool 2-D, its columns only): lists of column ranges
    [start, stop), the likeliest by width first. A glyph up to SPLIT_FROM x `height` wide is one
    digit; a wider one may be 1 to MAX_PIECES touching digits, each cut at the columns with least
    ink near their even positions."""
    width = mask.shape[1]
    if width <= SPLIT_FROM * height:
        return [[(0, width)]]
    likely = max(1, int(round(width / (DIGIT_WIDTH * height)))) if width > WIDE * height else 1
    counts = sorted(range(1, min(MAX_PIECES, likely + 1) + 1), key=lambda n: (abs(n - likely), n))
    if width > WIDE * height and not alone:  # beside other digits, one this wide is touching digits
        counts.remove(1)
    projection = np.convolve(mask.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    readings = []
    for n in counts:
        if n == 2:  # a touching pair: each of the deepest valleys of the ink is a candidate cut
            readings += [[(0, c), (c, width)] for c in _valleys(projection)]
        cuts = _cuts(projection, n)
        if cuts not in readings:
            readings.append(cuts)
    return readings


def _valleys(projection: np.ndarray) -> list[int]:
    """Up to PAIR_CUTS columns where a touching pair may be cut: the local minima of the ink per
    column between PAIR_SPAN of the glyph's width from either end, least ink first, at least 2
    columns apart."""
    width = len(projection)
    low, high = int(PAIR_SPAN * width), int((1 - PAIR_SPAN) * width) + 1
    inner = np.arange(max(low, 1), min(high, width - 1))
    minima = [int(c) for c in inner if projection[c] <= projection[c - 1] and projection[c] <= projection[c + 1]]
    chosen: list[int] = []
    for c in sorted(minima, key=lambda c: (projection[c], abs(c - width / 2))):
        if all(abs(c - o) >= 2 for o in chosen):
            chosen.append(c)
        if len(chosen) == PAIR_CUTS:
            break
    return chosen


def _cuts(projection: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Column ranges of `n` pieces of a glyph with this ink per column, cut at the columns with
    least ink near their even positions (touching digits meet in a thin bridge)."""
    width = len(projection)
    step = width / n
    cuts = [0]
    for i in range(1, n):
        target = i * step
        low = max(cuts[-1] + 1, int(target - CUT_WINDOW * step))
        high = min(width - 1, int(target + CUT_WINDOW * step) + 1)
        if low >= high:
            continue
        window = projection[low:high]
        # The least ink; among (nearly) equal minima, the one nearest the even position.
        distance = np.abs(np.arange(low, high) - target) / step
        cuts.append(low + int(np.argmin(window + 0.5 * distance * (1 + window.min()))))
    cuts.append(width)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
