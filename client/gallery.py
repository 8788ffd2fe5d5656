"""`digitq predict --gallery sheet.png`: a contact sheet of the classified images (Pillow + NumPy only).

Each cell shows the 28 x 28 digit exactly as the model saw it (MNIST style: preprocessed, white
ink on black), scaled 2x, with the predicted digit and its confidence underneath. A file that
could not be read is a grey cell marked "error". Labels are coloured by confidence, so doubtful
predictions stand out: white (>= 90%), yellow (50-90%), red (< 50%).

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
    return cols * CELL_W, rows * CELL_H + (FOOTER_H if more else 0)


def _as_digit(pixels) -> np.ndarray:
    a = np.asarray(pixels)
    if a.size != 28 * 28:
        raise ValueError(f"a gallery cell takes 28 x 28 pixels, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a.reshape(28, 28).copy()  # a view would keep its whole chunk's buffer alive


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
            if cell.error is not None:
                draw.rectangle(box, fill=ERROR_FILL)
                self._centred(draw, "error", (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (20, 20, 20))
                continue
            digit = Image.fromarray(cell.pixels, "L").resize((DIGIT_PX, DIGIT_PX), Image.NEAREST)
            sheet.paste(digit.convert("RGB"), box[:2])
            label = f"{cell.digit}  {cell.confidence * 100:.0f}%"
            self._centred(draw, label, x0 + CELL_W / 2, y0 + 2 * PAD + DIGIT_PX + LABEL_H / 2,
                          _label_colour(cell.confidence))
        if self.left_out:
            self._centred(draw, f"... and {self.left_out} more not shown (limit {self.limit})", width / 2,
                          height - FOOTER_H / 2, (200, 200, 200))
        return sheet

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
