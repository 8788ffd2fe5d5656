"""The clean-up of photos and scans of paper: find the digit's ink under uneven light, without
ruled or squared lines and specks, and give its strokes MNIST's width.

`digitq.common.images` calls `photo_ink` for every image that is not already clean (see
`images.is_clean`: a small image whose whole 1-pixel border is one even background), and
`normalise_stroke` for every digit crop. Both use OpenCV (`opencv-python-headless`), imported
on first use, so plain MNIST-like PNGs never pay its import (about 0.25 s).

Steps of `photo_ink`, each a function below:
  1. `_work_image`: shrink a large photo (area averaging) to WORK_SIDE pixels on its longer side.
  2. `_background`: the paper's brightness everywhere, from morphological closings of a
     BACKGROUND_SIDE-pixel thumbnail (ink strokes are narrower than the kernel, light
     gradients and shadow edges are wider; a wider kernel where a marker's strokes or filled
     loops are not), smoothed and enlarged again.
  3. `_contrast`: each pixel's contrast against its own background, relative to the light
     there (dark ink on paper: (paper - pixel) / paper), so a stroke in a shadow keeps its
     contrast; the ink's side (darker or lighter than the paper) is the side with the heavier tail.
  4. `_remove_lines`: straight lines crossing (almost) the whole frame, found by a
     probabilistic Hough transform, are erased; strokes crossing them, or running along them
     darker than the line, stay.
  5. `_digit_cluster`: connected components; the digit is the largest, plus the pieces
     near it; specks, lines and the remains of page edges are dropped.
The crop of the kept ink (levels from its contrast, 0 outside the kept components) then goes
through `normalise_stroke` and the usual MNIST steps in `images`.
"""

from __future__ import annotations

import math

import numpy as np

from digitq.common.errors import NoInkError

WORK_SIDE = 1200
"""Longer side, in pixels, a larger photo is shrunk to before the clean-up (area averaging).
A digit a twentieth of a 40 Mpx photo's width keeps about 60 px; the clean-up of a 40 Mpx
photo then costs a few MB beyond the decoded grey image (today's 40 MB)."""

BACKGROUND_SIDE = 160
"""Longer side, in pixels, of the thumbnail the background is estimated on."""

BACKGROUND_KERNEL = 0.25
"""Size of the closing (dark ink) or opening (light ink) that removes the ink from the
thumbnail, as a share of its longer side (41 px of 160): wider than a marker stroke on a
tight crop."""

SHADOW_KERNEL = 0.07
"""Size of the narrow closing, as a share of the thumbnail's longer side (11 px of 160): wider
than a pen's stroke, narrow enough to follow a shadow that only clips a corner of the frame."""

MARKER_DEPTH = 0.5
"""Where the narrow closing's paper is darker than this share of the wide one's, the narrow
kernel sat inside a marker stroke (ink takes 60-90% of the light, a shadow 20-50%): the wide
one's paper is used there."""

FILLED_KERNEL = 0.6
"""A last, widest closing, as a share of the thumbnail's longer side, for marker ink the wide one
leaves: a loop filled in by a marker on a tight crop, a blob a third of the frame across. Used,
as the wide one is, only where the paper under it would be MARKER_DEPTH darker."""

POLARITY_KERNEL = 0.5
"""Size of the median filter whose differences decide the ink's side, as a share of the
thumbnail's longer side: wider than a marker digit's loops, which a narrower median takes
for paper (and the paper inside them for light ink)."""

NOISE_SIGMAS = 6.0
"""A pixel's contrast must exceed this many noise standard deviations (from the median
absolute deviation of all contrasts) to be a candidate for ink."""

MIN_CONTRAST = 0.06
"""Smallest contrast, as a share of the local paper brightness, that can be ink."""

INK_SHARE = 0.4
"""Ink is what reaches this share of the digit's own ink contrast (the 90th percentile over
its largest component): pale lines and shading below it drop out, pencil stays."""

LINE_SPAN = 0.85
"""A straight line is a printed ruled or grid line if it spans this share of the frame (in
its direction) or more; a digit's own stroke, with the margin around a digit, never does."""

LINE_GAP = 0.12
"""Gaps in a line (faint stretches below the ink threshold), as a share of the frame's shorter
side, that the line detector bridges."""

LINE_REACH = 3
"""Pixels either side of a detected line's centre that are erased with it (a blurred printed
line is 2-6 px wide; the detector's segments wander by a pixel or two)."""

LINE_INK = 1.8
"""Ink over a printed line whose contrast is this many times the line's own stays: a pen's
stroke along a pale ruled or grid line (printed lines are paler than pen ink; pencil as pale
as the lines is erased with them, as before)."""

LINE_ANGLE = 20.0
"""Printed lines are within this many degrees of horizontal or vertical (tilted photos)."""

CLUSTER_GAP = 0.015
"""Pieces of ink closer than this share of the frame's longer side belong to one cluster (18 px
of a 1200-px photo): a digit's broken strokes stay together, far specks do not join."""

MIN_PIECE = 0.02
"""Pieces inside the digit's cluster smaller than this share of its largest piece are specks;
clusters near the digit with less than this share of its ink do not join it."""

NEAR = 0.25
"""Clusters within this share of the digit's size from its box join it."""

BORDER_WEIGHT = 0.1
"""A cluster's ink counts this much less if it reaches the frame's edge, and this much less
again if it runs along it (for a fifth of its size or more): the remains of a shadow narrower
than the background's kernel, or of the page's edge, do; a photographed digit rarely does (but
wins if it is all there is)."""

ROW_GAP = 1.5
"""A written number (`row`): a cluster joins the row if the gap to its nearer end is at most this
many times the largest digit's height (digits are spaced well under one height apart)."""

MIN_DIGIT = 0.02
"""The digit's longest connected stroke must span at least this share of the frame's longer
side (and 6 px): a photo with only specks, noise or paper texture is 'no ink found', not a digit."""

STROKE_BOX = 20
"""Side of MNIST's digit box, in pixels: stroke widths below are measured at that scale."""

STROKE_RANGE = (1.3, 4.5)
"""Stroke widths (pixels at STROKE_BOX) left alone. MNIST's test digits measure, by
`stroke_width` on their crops enlarged to 80 px: 1.25 (1st percentile), 1.52 (5th), 1.95
(25th), 2.30 (median), 3.68 (95th), 4.42 (99th): about 1.5% are below 1.3, under 1% above 4.5.
A ballpoint at 20 px measures about 1, a fine-liner 0.3-0.6, a marker 2.5-4."""

STROKE_TARGET = (2.0, 3.5)
"""Widths a thinner or a thicker stroke is brought to (MNIST's 25th and 90th percentiles: a
thin pen's small loops stay open)."""

STROKE_MIN_SIDE = 40
"""Crops whose longer side is at most this many pixels are left alone: they are already near
MNIST's scale (an MNIST digit's crop is 20), and their strokes cannot fade when scaled."""

MEASURE_SIDE = 160
"""Crops over twice this longer side (pixels) have their stroke width measured on a copy shrunk
to it (8x the digit box: a stroke of MNIST's thinnest 1.3 px is 10 px wide there)."""

FINE_SIDE = 80
"""Longer side, in pixels, of the crop on which strokes are thickened or thinned: 4x the digit
box, so the last shrink to 20 px averages 4x4 blocks of a binary image, as MNIST was made."""

_cv2 = None


def cv2():
    """OpenCV, imported on first use (its import costs about 0.25 s)."""
    global _cv2
    if _cv2 is None:
        import cv2 as module

        module.setNumThreads(1)  # small images: threads cost more than they save; callers run processes
        _cv2 = module
    return _cv2


# --- the photo clean-up -----------------------------------------------------------------------


def photo_ink(gray: np.ndarray, *, row: bool = False) -> np.ndarray:
    """The digit's ink in a photo or scan (uint8 2-D grey levels in): float32 crop around it,
    ink bright (up to 255) on 0, ready for `normalise_stroke` and scaling.

    Raises NoInkError "no ink found ..." when nothing in the image looks like a digit: blank
    paper, paper with only lines, shading or specks. With `row` (a written number), the
    clusters in a row beside the largest one are kept too (see `_digit_cluster`).
    """
    work = _work_image(gray)
    contrast = _contrast(work, _background(work))
    floor = max(NOISE_SIGMAS * _noise(contrast), MIN_CONTRAST)
    candidates = contrast > floor
    if not candidates.any():
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    candidates = _remove_lines(candidates, contrast)
    first = _digit_cluster(candidates, contrast, floor, row)
    (box, kept), _ = first
    level = float(np.percentile(contrast[box][kept], 90))
    ink = candidates & (contrast > max(floor, INK_SHARE * level))
    (box, kept), (top, bottom, left, right) = _digit_cluster(ink, contrast, floor, row)
    # Levels: the faint edge pixels next to the kept ink stay grey (anti-aliasing), as in MNIST.
    kept = cv2().dilate(kept.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    levels = np.clip((contrast[top:bottom, left:right] - floor) / max(level - floor, 1e-3), 0, 1)
    return np.where(kept, levels * 255, 0).astype(np.float32)


def _work_image(gray: np.ndarray) -> np.ndarray:
    """The image shrunk to WORK_SIDE on its longer side by area averaging (as is, if smaller)."""
    height, width = gray.shape
    scale = WORK_SIDE / max(height, width)
    if scale >= 1:
        return gray
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2().resize(gray, size, interpolation=cv2().INTER_AREA)


def _background(work: np.ndarray) -> tuple[np.ndarray, bool]:
    """(the paper's brightness at every pixel, float32 like `work`; True if the ink is darker).

    On a BACKGROUND_SIDE thumbnail: a median filter wider than any stroke gives a first guess of
    the paper whichever the ink's side; the side whose differences from it carry more energy
    beyond the noise (as `images._stretch_ink` decides, but against the local paper) holds the
    ink. A grey closing (dark ink) or opening (light ink) of the thumbnail then removes the ink
    and keeps the paper's shading, shadow edges included, which a median would round off.
    """
    c = cv2()
    height, width = work.shape
    scale = min(1.0, BACKGROUND_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumb = c.resize(work, size, interpolation=c.INTER_AREA) if scale < 1 else work
    k = max(3, int(round(BACKGROUND_KERNEL * max(size))) | 1)
    wide = max(3, int(round(POLARITY_KERNEL * max(size))) | 1)
    median = c.medianBlur(thumb, min(wide, 255)) if min(size) >= 2 else thumb
    residual = thumb.astype(np.float32) - median
    spread = 4 * 1.4826 * float(np.median(np.abs(residual))) + 2
    dark_energy = float(np.sum(np.clip(-residual - spread, 0, None) ** 2))
    light_energy = float(np.sum(np.clip(residual - spread, 0, None) ** 2))
    dark_ink = dark_energy >= light_energy
    # In the dark-ink domain (light ink inverted), a closing removes what is darker and narrower
    # than its kernel. The narrow one follows shadows; the wide one also removes marker strokes
    # wider than the narrow kernel, recognised by their depth: far darker than a shadow.
    dark = thumb if dark_ink else 255 - thumb
    narrow = max(3, int(round(SHADOW_KERNEL * max(size))) | 1)
    close = lambda side: c.morphologyEx(dark, c.MORPH_CLOSE, c.getStructuringElement(c.MORPH_ELLIPSE, (side, side)),
                                        borderType=c.BORDER_REPLICATE).astype(np.float32)
    paper = close(narrow)
    for wide_paper, filled in ((close(k), False), (_close_filled(dark), True)):
        inside_marker = (paper < MARKER_DEPTH * wide_paper).astype(np.uint8)
        if filled:  # a filled loop lies inside the frame; a dark shadow runs along its edge
            inside_marker = _inside_frame(inside_marker)
        inside_marker = c.dilate(inside_marker, np.ones((narrow, narrow), np.uint8))  # and the stroke's edges
        paper = np.where(inside_marker > 0, wide_paper, paper)
    paper = c.GaussianBlur(paper, (0, 0), 1.0, borderType=c.BORDER_REPLICATE)
    if not dark_ink:
        paper = 255 - paper
    if scale < 1:
        paper = c.resize(paper, (width, height), interpolation=c.INTER_LINEAR)
    return paper, dark_ink


def _close_filled(dark: np.ndarray) -> np.ndarray:
    """The FILLED_KERNEL closing of a thumbnail (dark ink), float32: done at half its size, as
    what it removes is large, and the cost goes with the kernel's area times the pixels."""
    c = cv2()
    height, width = dark.shape
    half = c.resize(dark, (max(1, width // 2), max(1, height // 2)), interpolation=c.INTER_AREA)
    side = max(3, int(round(FILLED_KERNEL * max(half.shape))) | 1)
    closed = c.morphologyEx(half, c.MORPH_CLOSE, c.getStructuringElement(c.MORPH_ELLIPSE, (side, side)),
                            borderType=c.BORDER_REPLICATE)
    return c.resize(closed, (width, height), interpolation=c.INTER_LINEAR).astype(np.float32)


def _inside_frame(mask: np.ndarray) -> np.ndarray:
    """`mask` (uint8 0/1 2-D) without its connected pieces that touch the frame's edge."""
    count, labels = cv2().connectedComponents(mask, connectivity=8)
    edge = np.unique(np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1])))
    keep = np.ones(count, np.uint8)
    keep[edge] = 0
    keep[0] = 0
    return keep[labels]


def _contrast(work: np.ndarray, background: tuple[np.ndarray, bool]) -> np.ndarray:
    """Each pixel's ink contrast against the paper under it, float32: about 0 on paper, up to 1."""
    paper, dark_ink = background
    pixels = work.astype(np.float32)
    if dark_ink:  # light multiplies: relative to the paper's brightness there
        return (paper - pixels) / np.maximum(paper, 16.0)
    return (pixels - paper) / np.maximum(255.0 - paper, 16.0)


def _noise(contrast: np.ndarray) -> float:
    """One standard deviation of the paper's noise in `contrast` (1.4826 x median absolute deviation)."""
    sample = contrast[:: max(1, contrast.shape[0] // 300), :: max(1, contrast.shape[1] // 300)]
    middle = float(np.median(sample))
    return 1.4826 * float(np.median(np.abs(sample - middle)))


def _remove_lines(mask: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """`mask` (bool 2-D) without the printed lines crossing the frame.

    Lines: probabilistic Hough segments within LINE_ANGLE of horizontal (or vertical) spanning
    LINE_SPAN of the frame's width (or height). Erased: the ink within LINE_REACH px of a segment, except
    where the ink runs across the line for longer than the line is thick (the run half of the
    band's ink reaches): a stroke crossing it, or lying along it and thicker together. Ink over
    a line also stays where its `contrast` is LINE_INK x the line's own (the median of what
    would be erased): a pen's stroke running along a pale printed line.
    """
    c = cv2()
    height, width = mask.shape
    side = min(height, width)
    if side < 24:
        return mask
    binary = mask.astype(np.uint8)
    segments = c.HoughLinesP(binary, 1, math.pi / 180, threshold=max(10, int(0.25 * side)),
                             minLineLength=int(0.5 * side), maxLineGap=max(3, int(LINE_GAP * side)))
    if segments is None:
        return mask
    across = {"h": np.zeros_like(binary), "v": np.zeros_like(binary)}
    for direction, (x1, y1, x2, y2) in _frame_lines(segments.reshape(-1, 4).astype(np.float64), width, height):
        c.line(across[direction], (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), 1, thickness=3)
    erased = np.zeros_like(binary)
    bands = {}
    for direction, lines in across.items():
        if not lines.any():
            continue
        band = bands[direction] = c.dilate(lines, np.ones((2 * LINE_REACH + 1, 2 * LINE_REACH + 1), np.uint8)) & binary
        across = lambda length: np.ones((length, 1) if direction == "h" else (1, length), np.uint8)
        # The lines' thickness: the run across them that half of the band's ink reaches.
        total, thick = float(band.sum()), 1
        while thick < 2 * LINE_REACH + 3 and float((c.morphologyEx(band, c.MORPH_OPEN, across(thick + 1))).sum()) >= total / 2:
            thick += 1
        strokes = c.morphologyEx(binary, c.MORPH_OPEN, across(thick + 2))  # ink running across for longer
        erased |= band & (1 - strokes)
    if len(bands) == 2:  # where a grid's lines cross, each keeps the other's pixels: both bands go
        erased |= bands["h"] & bands["v"]
    if erased.any():
        line = float(np.median(contrast[erased > 0]))
        erased &= (contrast <= LINE_INK * line).astype(np.uint8)
    return (binary & (1 - erased)).astype(bool)


def _frame_lines(segments: np.ndarray, width: int, height: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The printed lines among Hough segments (x1, y1, x2, y2): segments within LINE_ANGLE of
    horizontal ("h") or vertical ("v") on one straight line (within 2 px and 2 degrees) are
    grouped, as a digit's strokes split a line into pieces; a group whose pieces span LINE_SPAN
    of the frame is a line. Each is returned extended from edge to edge, by its longest piece."""
    groups: list[dict] = []
    for x1, y1, x2, y2 in segments:
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1)) % 180
        if angle <= LINE_ANGLE or angle >= 180 - LINE_ANGLE:
            direction, lo, hi = "h", min(x1, x2), max(x1, x2)
        elif abs(angle - 90) <= LINE_ANGLE:
            direction, lo, hi = "v", min(y1, y2), max(y1, y2)
        else:
            continue
        theta = math.atan2(y2 - y1, x2 - x1)
        normal = (-math.sin(theta), math.cos(theta))
        rho = normal[0] * x1 + normal[1] * y1
        length = math.hypot(x2 - x1, y2 - y1)
        for group in groups:
            if group["direction"] == direction and abs(math.degrees(group["theta"] - theta)) % 180 < 2 \
                    and abs(group["normal"][0] * x1 + group["normal"][1] * y1 - group["rho"]) < 2:
                group["lo"], group["hi"] = min(group["lo"], lo), max(group["hi"], hi)
                if length > group["length"]:
                    group.update(segment=(x1, y1, x2, y2), length=length)
                break
        else:
            groups.append(dict(direction=direction, theta=theta, normal=normal, rho=rho, lo=lo, hi=hi,
                               segment=(x1, y1, x2, y2), length=length))
    lines = []
    for group in groups:
        x1, y1, x2, y2 = group["segment"]
        if group["direction"] == "h" and group["hi"] - group["lo"] >= LINE_SPAN * width:
            slope = (y2 - y1) / (x2 - x1)
            lines.append(("h", (0.0, y1 - slope * x1, width - 1.0, y1 + slope * (width - 1 - x1))))
        elif group["direction"] == "v" and group["hi"] - group["lo"] >= LINE_SPAN * height:
            slope = (x2 - x1) / (y2 - y1)
            lines.append(("v", (x1 - slope * y1, 0.0, x1 + slope * (height - 1 - y1), height - 1.0)))
    return lines


def _digit_cluster(mask: np.ndarray, contrast: np.ndarray, floor: float, row: bool = False):
    """The digit among the ink candidates `mask` (bool 2-D): ((the box's slices, the kept pixels
    in the box, bool), (top, bottom, left, right) of the box, exclusive ends).

    Pieces closer than CLUSTER_GAP of the frame form one cluster (a digit's broken strokes, a
    five's bar); the digit is the cluster with the most ink (contrast above `floor`, summed),
    clusters that look like a line (long and thin) or like the edge of a page or a shadow
    (along two sides of the frame) counting less. In it, specks under MIN_PIECE of its largest
    piece are dropped. ImageError if there is none, or if the best is too small to be a digit.
    With `row`, clusters beside the digit join it instead: within ROW_GAP of its height from the
    row's ends, at most 1.5x its height tall, their rows overlapping their nearest member's by 30%
    (a slanting row of digits stays whole).
    """
    c = cv2()
    height, width = mask.shape
    gap = max(1, int(round(CLUSTER_GAP * max(height, width))))
    binary = mask.astype(np.uint8)
    grown = c.dilate(binary, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))  # a square: separable, fast
    count, labels, stats, _ = c.connectedComponentsWithStats(grown, connectivity=8)
    mass = np.bincount(labels[mask], weights=contrast[mask] - floor, minlength=count)
    boxes = stats[:, :4].astype(np.int64) + np.array([gap, gap, -2 * gap, -2 * gap])  # about the ink's own boxes
    # Each cluster's largest connected piece: a digit has a stroke of some length, noise and dust do not.
    _, pieces, piece_stats, _ = c.connectedComponentsWithStats(binary, connectivity=8)
    cluster_of_piece = np.zeros(len(piece_stats), np.int64)
    cluster_of_piece[pieces[mask]] = labels[mask]
    longest = np.zeros(count, np.int64)
    np.maximum.at(longest, cluster_of_piece[1:], piece_stats[1:, 2:4].max(axis=1))
    # Ink pixels on the frame's edge, per cluster: a shadow's or a page's edge runs along it.
    edge = np.concatenate((labels[0][mask[0]], labels[-1][mask[-1]], labels[:, 0][mask[:, 0]], labels[:, -1][mask[:, -1]]))
    contact = np.bincount(edge, minlength=count)
    scores = mass.copy()
    scores[0] = 0
    for index in range(1, count):
        left, top, w, h = (int(v) for v in boxes[index])
        w, h = max(1, w), max(1, h)
        if longest[index] < max(min(6, height, width), MIN_DIGIT * max(height, width)):  # specks, noise: never the digit
            scores[index] = 0
        if max(w, h) / min(w, h) > 8:  # a line's remains
            scores[index] *= 0.1 if not contact[index] else 0.0
        if contact[index]:  # a photographed digit lies inside the frame
            scores[index] *= BORDER_WEIGHT
            if contact[index] >= 0.2 * max(w, h):  # along the edge, not just reaching it
                scores[index] *= BORDER_WEIGHT
    best = int(np.argmax(scores))
    if best == 0 or scores[best] <= 0:
        raise NoInkError("no ink found (only specks, lines or shading; no digit)")
    # Clusters near the digit's box, with enough ink, join it (a five's bar, a six's hook).
    chosen = [best]
    left, top, w, h = (int(v) for v in boxes[best])
    box = [top, top + h, left, left + w]
    size = max(w, h)
    others = [i for i in range(1, count) if i != best and scores[i] >= MIN_PIECE * scores[best]]
    changed = True
    while changed and others:
        changed = False
        margin = NEAR * size
        for i in list(others):
            pl, pt, pw, ph = (int(v) for v in boxes[i])
            if row:  # beside the row's end, as tall as its digits, level with its nearest one
                reach = ROW_GAP * h
                if ph > 1.5 * h or pl > box[3] + reach or pl + pw < box[2] - reach:
                    continue
                nl, nt, nw, nh = min((boxes[j] for j in chosen), key=lambda b: max(b[0] - (pl + pw), pl - (b[0] + b[2]), 0))
                if min(pt + ph, nt + nh) - max(pt, nt) < 0.3 * min(ph, nh):
                    continue
                grown_box = [min(box[0], pt), max(box[1], pt + ph), min(box[2], pl), max(box[3], pl + pw)]
                box, changed = grown_box, True
                chosen.append(i)
                others.remove(i)
                continue
            if pl > box[3] + margin or pl + pw < box[2] - margin or pt > box[1] + margin or pt + ph < box[0] - margin:
                continue
            grown_box = [min(box[0], pt), max(box[1], pt + ph), min(box[2], pl), max(box[3], pl + pw)]
            if max(grown_box[1] - grown_box[0], grown_box[3] - grown_box[2]) > 1.5 * size:
                continue
            box, changed = grown_box, True
            chosen.append(i)
            others.remove(i)
    top, left = max(0, box[0] - gap), max(0, box[2] - gap)
    box = (slice(top, box[1] + gap), slice(left, box[3] + gap))
    kept = np.isin(labels[box], chosen) & mask[box]
    rows, cols = np.nonzero(kept)
    top, bottom, left, right = top + rows.min(), top + rows.max() + 1, left + cols.min(), left + cols.max() + 1
    kept = kept[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    pieces, piece_labels, piece_stats, _ = c.connectedComponentsWithStats(kept.astype(np.uint8), connectivity=8)
    if pieces > 2:
        areas = piece_stats[:, 4].copy()
        areas[0] = 0
        kept = np.isin(piece_labels, np.nonzero(areas >= MIN_PIECE * areas.max())[0]) & kept
    box = (slice(top, bottom), slice(left, right))
    return (box, kept), (top, bottom, left, right)


# --- stroke width -----------------------------------------------------------------------------


def stroke_width(binary: np.ndarray) -> float:
    """Mean stroke width of a binary image, in its pixels: 4 x the mean distance of its ink pixels
    to the nearest background pixel, less 2 (exact for straight strokes 2, 4 and 6 pixels wide)."""
    c = cv2()
    padded = c.copyMakeBorder(binary.view(np.uint8), 1, 1, 1, 1, c.BORDER_CONSTANT, value=0)
    count = c.countNonZero(padded)
    if not count:
        return 0.0
    distance = c.distanceTransform(padded, c.DIST_L2, c.DIST_MASK_3)  # 0 on the background: sum = ink's sum
    return 4 * float(c.sumElems(distance)[0]) / count - 2


def normalise_stroke(crop: np.ndarray) -> np.ndarray:
    """Bring a digit crop's strokes (float, ink bright up to 255) to MNIST's width when they are
    thinner or thicker than MNIST's (STROKE_RANGE at the digit box's scale); else returned as is.

    Crops of at most STROKE_MIN_SIDE pixels are returned as is without a look. Others are
    measured at their own resolution; one to be changed is redrawn as a binary image at
    FINE_SIDE (its strokes followed by a threshold at half their expected coverage), dilated
    or eroded by an elliptic kernel to the target width, and returned at FINE_SIDE: the
    shrink to 20 px then gives MNIST's grey edges.
    """
    height, width = crop.shape
    longer = max(height, width)
    if longer <= STROKE_MIN_SIDE:
        return crop
    c = cv2()
    peak = float(crop.max())
    if peak <= 0:
        return crop
    binary = crop >= 0.5 * peak
    if longer > 2 * MEASURE_SIDE:  # measured on a smaller copy: the distance transform's cost goes with its pixels
        shrink = MEASURE_SIDE / longer
        small = c.resize(binary.view(np.uint8), (max(1, round(width * shrink)), max(1, round(height * shrink))),
                         interpolation=c.INTER_AREA)  # uint8 0/1 averaged: 1 where at least half was ink
        measured = stroke_width(small > 0) / shrink
    else:
        measured = stroke_width(binary)
    in_box = measured * STROKE_BOX / longer
    low, high = STROKE_RANGE
    if low <= in_box <= high:
        return crop
    target = STROKE_TARGET[0] if in_box < low else STROKE_TARGET[1]
    scale = FINE_SIDE / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # The grey levels keep a thin stroke's ink where a threshold breaks it into dots; levels
    # under a quarter of the peak (paper noise, faint shading in a clean-path crop) count as none.
    levels = crop.astype(np.float32) * (2.0 / peak)
    levels[levels < 0.5] = 0
    coverage = c.resize(np.minimum(levels, 1.0), size, interpolation=c.INTER_AREA if scale < 1 else c.INTER_LINEAR)
    fine_width = measured * scale
    fine = (coverage >= 0.5 * min(1.0, fine_width)).astype(np.uint8)
    if not fine.any():  # scattered dots: each covers less than the threshold
        fine = (coverage > 0).astype(np.uint8)
    fine_width = max(fine_width, 1.0)
    want = target * FINE_SIDE / STROKE_BOX
    radius = int(round(abs(want - fine_width) / 2))
    if radius == 0:
        return fine.astype(np.float32) * 255
    pad = radius + 1
    fine = c.copyMakeBorder(fine, pad, pad, pad, pad, c.BORDER_CONSTANT, value=0)
    kernel = c.getStructuringElement(c.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    if want > fine_width:
        fine = c.dilate(fine, kernel)
    else:
        thinner = c.erode(fine, kernel)
        if thinner.sum() >= 0.25 * fine.sum():  # an erosion that would wipe the digit out is skipped
            fine = thinner
    rows, cols = np.nonzero(fine)
    fine = fine[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return fine.astype(np.float32) * 255
