"""`digitq predict --gallery sheet.png`: a contact sheet of the classified images (Pillow + NumPy only).

Each cell shows the 28 x 28 digit exactly as the model saw it (MNIST style: preprocessed, white
ink on black), scaled 2x, with the predicted digit and its confidence underneath ("7 (93%)";
the percentage is rounded down, so a label shows 90% only from 0.90 on). A file that could not
be read is a grey cell with "error" and the start of the reason, and its file name underneath.
Labels are coloured by confidence, so doubtful predictions stand out: white (>= 90%), yellow
(50-89%), red (< 50%); a legend under the grid says so.

    sheet = ContactSheet()
    for row in rows:
        sheet.add(row.pixels, row.path, digit, confidence, row.error)
    sheet.save("sheet.png")

The PNG also carries the cells' file names, in cell order (row by row), as a text chunk named
"digitq:cells" (JSON), so a cell can be traced back to its file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

DEFAULT_LIMIT = 400
"""Images a sheet shows; later ones are counted but not drawn (400 cells: about 1,200 x 1,480 px)."""

DEFAULT_COLUMNS = 20
"""Cells per row (fewer when there are fewer images)."""

SCALE = 2
"""Each 28 x 28 digit is drawn at 56 x 56, pixel for pixel (nearest neighbour)."""

DIGIT_PX = 28 * SCALE
PAD = 2
"""Pixels around the digit inside its cell."""

LABEL_H = 14
"""Pixels of the label row under the digit."""

CELL_W = DIGIT_PX + 2 * PAD  # 60
CELL_H = DIGIT_PX + 2 * PAD + LABEL_H  # 74
FOOTER_H = 18
"""Pixels of the "... more not shown" line, present only when images were left out."""

LEGEND_H = 30
"""Pixels of the two-line legend under the grid (always present)."""

LEGEND_MIN_W = 4 * CELL_W
"""A sheet is at least this wide, so that its legend fits."""

BACKGROUND = (40, 40, 40)
ERROR_FILL = (128, 128, 128)
LABEL_COLOURS = ((0.9, (255, 255, 255)), (0.5, (255, 210, 60)), (0.0, (255, 90, 90)))
"""(lowest confidence, colour): white when sure, yellow when unsure, red when doubtful."""


@dataclass
class _Cell:
    pixels: np.ndarray | None
    name: str
    digit: int | None
    confidence: float | None
    error: str | None


def sheet_size(count: int, columns: int = DEFAULT_COLUMNS, more: bool = False) -> tuple[int, int]:
    """Width and height in pixels of a sheet of `count` drawn cells (plus the footer when `more`)."""
    cols = max(1, min(count, columns))
    rows = max(1, math.ceil(count / cols))
    return max(cols * CELL_W, LEGEND_MIN_W), rows * CELL_H + (FOOTER_H if more else 0) + LEGEND_H


def confidence_label(digit: int, confidence: float) -> str:
    """'7 (93%)': the percentage rounded down, so the colour threshold and the number agree."""
    return f"{digit} ({math.floor(confidence * 100 + 1e-9):d}%)"


def _short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "~"


def _as_digit(pixels) -> np.ndarray:
    a = np.asarray(pixels)
    if a.size != 28 * 28:
        raise ValueError(f"a gallery cell takes 28 x 28 pixels, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a.reshape(28, 28).copy()  # a view would keep its whole chunk's buffer alive


ERROR_CHARS = 9
"""Characters per line of text in a 56-pixel cell (Pillow's default font)."""


def _wrap(words: list[str], chars: int) -> list[str]:
    """Words into lines of at most `chars` characters (a longer word is cut)."""
    lines: list[str] = []
    for w in words:
        w = _short(w, chars)
        if lines and len(lines[-1]) + 2 + len(w) <= chars:
            lines[-1] += "  " + w  # the default font's space is narrow: two read as one
        else:
            lines.append(w)
    return lines


def _label_colour(confidence: float) -> tuple[int, int, int]:
    for lowest, colour in LABEL_COLOURS:
        if confidence >= lowest:
            return colour
    return LABEL_COLOURS[-1][1]


class ContactSheet:
    """Collects up to `limit` classified images, then draws them as one PNG grid."""

    def __init__(self, limit: int = DEFAULT_LIMIT, columns: int = DEFAULT_COLUMNS):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}")
        self.limit = limit
        self.columns = columns
        self.cells: list[_Cell] = []
        self.left_out = 0

    def add(self, pixels, name: str, digit: int | None, confidence: float | None, error: str | None) -> bool:
        """Add one image (28 x 28 uint8, or None for a file that failed); False once the sheet is full."""
        if len(self.cells) >= self.limit:
            self.left_out += 1
            return False
        if error is None and (pixels is None or digit is None or confidence is None):
            error = "no pixels or prediction"
        digit_px = _as_digit(pixels) if pixels is not None and error is None else None
        self.cells.append(_Cell(digit_px, str(name), None if digit is None else int(digit),
                                None if confidence is None else float(confidence), error))
        return True

    def __len__(self) -> int:
        return len(self.cells)

    def render(self) -> Image.Image:
        """The sheet as an RGB image."""
        width, height = sheet_size(len(self.cells), self.columns, more=self.left_out > 0)
        cols = max(1, min(len(self.cells), self.columns))
        sheet = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        for i, cell in enumerate(self.cells):
            x0, y0 = (i % cols) * CELL_W, (i // cols) * CELL_H
            box = (x0 + PAD, y0 + PAD, x0 + PAD + DIGIT_PX - 1, y0 + PAD + DIGIT_PX - 1)
            label_y = y0 + 2 * PAD + DIGIT_PX + LABEL_H / 2
            if cell.error is not None:
                draw.rectangle(box, fill=ERROR_FILL)
                cx = (box[0] + box[2]) / 2
                self._centred(draw, "error", cx, box[1] + 9, (20, 20, 20))
                words = cell.error.split()
                for k, text in enumerate(_wrap(words, ERROR_CHARS)[:3]):
                    self._centred(draw, text, cx, box[1] + 22 + 11 * k, (245, 245, 245))
                self._centred(draw, _short(Path(cell.name).name, ERROR_CHARS), x0 + CELL_W / 2, label_y,
                              (170, 170, 170))
                continue
            digit = Image.fromarray(cell.pixels, "L").resize((DIGIT_PX, DIGIT_PX), Image.NEAREST)
            sheet.paste(digit.convert("RGB"), box[:2])
            self._centred(draw, confidence_label(cell.digit, cell.confidence), x0 + CELL_W / 2, label_y,
                          _label_colour(cell.confidence))
        if self.left_out:
            self._centred(draw, f"... and {self.left_out} more not shown (limit {self.limit})", width / 2,
                          height - LEGEND_H - FOOTER_H / 2, (200, 200, 200))
        self._legend(draw, height - LEGEND_H)
        return sheet

    @staticmethod
    def _legend(draw: ImageDraw.ImageDraw, top: int) -> None:
        """Two lines: what the label colours mean, and what a grey cell is."""
        x = PAD + 2
        for text, colour in (("confidence:", (200, 200, 200)), ("  >=90%", LABEL_COLOURS[0][1]),
                             ("  50-89%", LABEL_COLOURS[1][1]), ("  <50%", LABEL_COLOURS[2][1])):
            draw.text((x, top + 3), text, fill=colour)
            x = draw.textbbox((x, top + 3), text)[2]
        draw.text((PAD + 2, top + 16), "grey: unreadable file (reason, name)", fill=(200, 200, 200))

    def save(self, path) -> Path:
        """Write the PNG atomically (temp file and rename); an empty sheet is refused."""
        if not self.cells:
            raise ValueError("the contact sheet holds no images")
        target = Path(path)
        info = PngImagePlugin.PngInfo()
        info.add_text("digitq:cells", json.dumps([c.name for c in self.cells]), zip=True)
        tmp = target.with_name(f".{target.name}.partial")  # like RowWriter: appears whole or not at all
        try:
            self.render().save(tmp, format="PNG", pnginfo=info, optimize=True)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    @staticmethod
    def _centred(draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float, fill) -> None:
        left, top, right, bottom = draw.textbbox((0, 0), text)
        draw.text((cx - (right - left) / 2 - left, cy - (bottom - top) / 2 - top), text, fill=fill)
