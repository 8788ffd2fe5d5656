#!/usr/bin/env python3
"""Photos and scans of handwriting, made from MNIST *test* digits, and digitq's accuracy on them.

Each MNIST test digit is written onto paper as a pen would write it: the digit is enlarged to
page scale, thinned to its skeleton (skimage) and drawn again with a round pen of the style's
width (fine-liner, ballpoint, marker; pencil is grey and grainy), in the style's ink colour, on
paper with its texture, tint, and ruled or squared lines. The page is then photographed: slight
rotation and perspective tilt, a light gradient and a soft shadow from any side, defocus blur,
sensor noise, JPEG at quality 50-90, and (one style) a small digit on a large page with specks.
Scans get even light, no tilt and little blur. Everything is drawn from one seed per (style,
digit), so a rerun writes the same files byte for byte.

    python bench/photos.py render OUT -n 200                     # OUT/<style>/<0..9>/<index>.<ext>
    python bench/photos.py run --model digits -n 200 --out bench/results/photos
        # renders under $DIGITQ_HOME/photos-bench, classifies each style with
        # `digitq predict --recursive --format json`, and the same digits as plain 28x28 PNGs;
        # reads the same model's MNIST-test accuracy with `digitq evaluate --json`; writes
        # photos.json, photos.md and worst.png
        # (the worst cases: photo and cleaned-up 28x28 side by side)
    python bench/photos.py timing --old /tmp/images_old.py    # preprocessing us/image, against
        # an older clean-up (git show 024c953:common/images.py > /tmp/images_old.py)

Never reads MNIST's training files: only t10k-images/labels from $DIGITQ_DATA_DIR/mnist.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.morphology import skeletonize

REPO = Path(__file__).resolve().parents[1]

# --- styles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How one kind of photo or scan is made. Lengths relative to the digit's height unless said."""

    name: str
    pen: tuple[float, float]
    """Pen width range, as a share of the digit's height (MNIST's strokes: about 0.12)."""
    ink: str = "dark"
    """dark (black/blue-black), colour (blue, red, green, violet) or pencil (grey, grainy)."""
    paper: str = "plain"
    """plain, ruled or squared."""
    photo: bool = True
    """A phone photo (uneven light, shadow, tilt, blur, JPEG); False: a flatbed scan."""
    small_on_page: bool = False
    """The digit small (60-110 px) somewhere on a large page (900x1200), with specks."""
    specks: int = 0
    """Most specks of dust or dots of ink on the page."""


STYLES = (
    Style("scan-ballpoint", pen=(0.04, 0.07), photo=False),
    Style("scan-fineliner", pen=(0.015, 0.03), photo=False),
    Style("photo-ballpoint", pen=(0.04, 0.07)),
    Style("photo-fineliner", pen=(0.015, 0.03)),
    Style("photo-marker", pen=(0.12, 0.2)),
    Style("photo-pencil", pen=(0.03, 0.06), ink="pencil"),
    Style("photo-colour-ink", pen=(0.03, 0.1), ink="colour"),
    Style("photo-ruled", pen=(0.03, 0.08), paper="ruled"),
    Style("photo-squared", pen=(0.03, 0.08), paper="squared"),
    Style("photo-small-on-page", pen=(0.04, 0.1), small_on_page=True, specks=30),
)
"""Every style, in report order."""

STYLE_NAMES = tuple(s.name for s in STYLES)

# --- MNIST test digits ----------------------------------------------------------------------


def load_mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test images (uint8 [10000, 28, 28], ink bright) and labels, from the t10k IDX files."""
    mnist = Path(data_dir) / "mnist"
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


# --- rendering ------------------------------------------------------------------------------


def pen_stroke(digit: np.ndarray, height: int, pen_px: float, width: int | None = None) -> np.ndarray:
    """The digit as a pen of `pen_px` pixels would write it `height` pixels tall: float32 coverage
    0..1 of a (height x width) page patch (width: height, for a square digit), anti-aliased (drawn
    at 2x and averaged down). A wide image (a row of digits, bench/numbers.py) keeps its shape."""
    width = height if width is None else width
    big = 2 * height
    enlarged = cv2.resize(digit.astype(np.float32) / 255, (2 * width, big), interpolation=cv2.INTER_CUBIC)
    skeleton = skeletonize(enlarged > 0.5).astype(np.uint8)
    radius = max(pen_px, 0.5)  # at 2x scale: diameter 2 * pen_px
    size = 2 * int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    disk = ((xx**2 + yy**2) <= radius**2 + 0.25).astype(np.uint8)
    stroke = cv2.dilate(skeleton, disk).astype(np.float32)
    return cv2.resize(stroke, (width, height), interpolation=cv2.INTER_AREA)


def _paper(rng: np.random.Generator, shape: tuple[int, int], style: Style, digit_px: int) -> np.ndarray:
    """The paper, RGB float32 0..1: tint, fibre texture, and the style's printed lines."""
    h, w = shape
    tint = np.array([1.0, 1.0, 1.0]) - rng.uniform(0, 0.08, 3) * np.array([0.3, 0.6, 1.0])
    tint *= rng.uniform(0.88, 1.0)
    coarse = cv2.resize(rng.normal(0, 1, (max(2, h // 40), max(2, w // 40))).astype(np.float32), (w, h))
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    texture = 1 + 0.015 * coarse + 0.01 * grain
    page = texture[..., None] * tint[None, None, :].astype(np.float32)
    if style.paper in ("ruled", "squared"):
        spacing = digit_px * rng.uniform(0.55, 0.9) if style.paper == "ruled" else digit_px * rng.uniform(0.25, 0.4)
        colour = np.array(rng.choice([[0.55, 0.7, 0.95], [0.6, 0.6, 0.6], [0.5, 0.75, 0.85]]), np.float32)
        strength = rng.uniform(0.5, 0.9)
        thick = max(1, int(round(digit_px * rng.uniform(0.008, 0.02))))
        lines = np.zeros((h, w), np.float32)
        offset = rng.uniform(0, spacing)
        for y in np.arange(offset, h, spacing):
            lines[int(y) : int(y) + thick] = 1
        if style.paper == "squared":
            offset = rng.uniform(0, spacing)
            for x in np.arange(offset, w, spacing):
                lines[:, int(x) : int(x) + thick] = 1
        elif rng.random() < 0.4:  # the red margin line of a school notebook
            x = int(rng.uniform(0.05, 0.2) * w)
            page[:, x : x + thick + 1] *= np.array([1.0, 0.55, 0.55], np.float32)
        lines = cv2.GaussianBlur(lines, (0, 0), 0.6)[..., None] * strength
        page = page * (1 - lines) + page * colour * lines
    return page


def _ink_colour(rng: np.random.Generator, style: Style) -> np.ndarray:
    """RGB 0..1 of the ink where it is fully laid down."""
    if style.ink == "pencil":
        return np.full(3, rng.uniform(0.35, 0.6), np.float32)
    if style.ink == "colour":
        return np.array(rng.choice([[0.1, 0.2, 0.75], [0.8, 0.1, 0.1], [0.1, 0.55, 0.2], [0.45, 0.15, 0.6]]), np.float32)
    return np.array(rng.choice([[0.08, 0.08, 0.1], [0.1, 0.12, 0.35], [0.15, 0.15, 0.15]]), np.float32)


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Light over the frame, float32 0..1: a gradient from a random side and a soft shadow edge."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) + 0.5  # about 0..1
    light = 1 - rng.uniform(0.2, 0.55) * np.clip(ramp, 0, 1.2)
    if rng.random() < 0.7:  # the shadow of a hand or a phone: a half-plane with a blurred edge
        angle = rng.uniform(0, 2 * np.pi)
        side = np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2) - rng.uniform(0.15, 0.45) * min(h, w)
        softness = rng.uniform(0.03, 0.12) * min(h, w)
        shadow = 1 / (1 + np.exp(-side / softness))
        light *= 1 - rng.uniform(0.25, 0.5) * shadow
    return light


def _warp(rng: np.random.Generator, page: np.ndarray, degrees: float, tilt: float) -> np.ndarray:
    """Rotate by up to `degrees` and tilt (perspective) by up to `tilt` of the side, same size."""
    h, w = page.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    centre = np.float32([w / 2, h / 2])
    theta = np.deg2rad(rng.uniform(-degrees, degrees))
    rotation = np.float32([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (corners - centre) @ rotation.T + centre
    moved += rng.uniform(-tilt, tilt, (4, 2)).astype(np.float32) * np.float32([w, h])
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    return cv2.warpPerspective(page, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def render(digit: np.ndarray, style: Style, seed: int) -> tuple[bytes, str]:
    """One photo or scan of `digit` (an MNIST test image, or a wider row of them: it keeps its
    aspect ratio): (the file's bytes, its extension)."""
    rng = np.random.default_rng(seed)
    aspect = digit.shape[1] / digit.shape[0]
    if style.small_on_page:
        frame = (int(rng.integers(800, 1000)), int(rng.integers(1000, 1300)))
        digit_px = int(rng.integers(60, 110))
    else:
        digit_px = int(rng.integers(70, 260)) if style.photo else int(rng.integers(50, 200))
        margin = rng.uniform(1.25, 2.2) if style.photo else rng.uniform(1.15, 1.6)
        if aspect == 1:
            frame = (int(digit_px * margin * rng.uniform(0.9, 1.1)), int(digit_px * margin * rng.uniform(0.9, 1.1)))
        else:  # a row: the same margins, and room above and below for the tilt of its ends
            frame = (int(digit_px * (margin + 0.3 * aspect) * rng.uniform(0.9, 1.1)),
                     int(digit_px * (aspect + (margin - 1) * rng.uniform(0.9, 1.1))))
    digit_w = int(round(digit_px * aspect))
    h, w = frame
    pen_px = digit_px * rng.uniform(*style.pen)
    coverage = pen_stroke(digit, digit_px, pen_px, digit_w)
    inside = digit_px // 3  # a photographer keeps the digit inside the frame
    top = int(rng.integers(inside, h - digit_px - inside + 1)) if style.small_on_page else (h - digit_px) // 2 + int(rng.integers(-h // 12, h // 12 + 1))
    left = int(rng.integers(inside, w - digit_w - inside + 1)) if style.small_on_page else (w - digit_w) // 2 + int(rng.integers(-w // 12, w // 12 + 1))
    top, left = min(max(top, 0), h - digit_px), min(max(left, 0), w - digit_w)
    mask = np.zeros((h, w), np.float32)
    mask[top : top + digit_px, left : left + digit_w] = coverage
    if style.ink == "pencil":  # graphite skips over the paper's grain
        grain = cv2.GaussianBlur(rng.uniform(0.55, 1.0, (h, w)).astype(np.float32), (0, 0), 0.8)
        mask *= np.clip(grain * 1.3, 0, 1)
    else:
        mask *= rng.uniform(0.85, 1.0)  # ink not quite opaque
    for _ in range(int(rng.integers(0, style.specks + 1))):  # dust, crumbs, dots of ink
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        r = rng.uniform(0.6, 2.5)
        cv2.circle(mask, (x, y), int(round(r)), float(rng.uniform(0.3, 0.9)), -1, lineType=cv2.LINE_AA)
    page = _paper(rng, (h, w), style, digit_px)
    ink = _ink_colour(rng, style)
    page = page * (1 - mask[..., None]) + page * ink[None, None, :] * mask[..., None]
    if style.photo:
        page = _warp(rng, page, degrees=8, tilt=0.04)
        page *= _illumination(rng, (h, w))[..., None]
        page *= np.float32(rng.uniform(0.75, 1.0))  # exposure
        sigma = rng.uniform(0.3, 1.4) * max(1.0, digit_px / 150)
        noise = rng.uniform(0.008, 0.025)
        quality = int(rng.integers(50, 91))
    else:
        page = _warp(rng, page, degrees=3, tilt=0.0)
        sigma, noise, quality = rng.uniform(0.2, 0.6), rng.uniform(0.002, 0.008), int(rng.integers(75, 96))
    page = cv2.GaussianBlur(page, (0, 0), sigma)
    page += rng.normal(0, noise, page.shape).astype(np.float32)
    pixels = np.clip(page * 255 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    if not style.photo and rng.random() < 0.4:
        Image.fromarray(pixels).convert("L").save(buffer, "PNG")
        return buffer.getvalue(), "png"
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), "jpg"


def seed_of(style_index: int, index: int, seed: int) -> int:
    """The seed of one image: the same image for the same (style, MNIST index, run seed)."""
    return int(np.random.SeedSequence([seed, style_index, index]).generate_state(1)[0])


def render_folder(out: Path, images: np.ndarray, labels: np.ndarray, n: int, styles=STYLES, seed: int = 0) -> dict:
    """Write `n` digits per style (MNIST test images 0..n-1) as out/<style>/<label>/<index>.<ext>;
    returns {style name: {relative path: label}}. An existing style folder is replaced."""
    written: dict = {}
    for style_index, style in enumerate(STYLES):
        if style not in styles:
            continue
        folder = out / style.name
        shutil.rmtree(folder, ignore_errors=True)
        for digit in range(10):
            (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        names = {}
        for index in range(n):
            data, ext = render(images[index], style, seed_of(style_index, index, seed))
            rel = f"{labels[index]}/{index:05d}.{ext}"
            (folder / rel).write_bytes(data)
            names[rel] = int(labels[index])
        written[style.name] = names
    return written


# --- running digitq over them ---------------------------------------------------------------


def digitq_argv() -> list[str]:
    script = Path(sys.executable).with_name("digitq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "digitq.client"]


def predict_style(folder: Path, model: str, out_json: Path) -> list[dict]:
    """`digitq predict FOLDER --recursive --format json`: one dict per file."""
    cmd = [*digitq_argv(), "predict", str(folder), "--model", model, "--recursive", "--format", "json", "-o", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in out_json.read_text().splitlines() if line.strip()]


def mnist_accuracy(model: str) -> float:
    """The model's accuracy on the whole MNIST test set, through `digitq evaluate --json`."""
    proc = subprocess.run([*digitq_argv(), "evaluate", "--model", model, "--json"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"digitq evaluate exited {proc.returncode}: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    return float(data.get("accuracy", data.get("test_accuracy")))


def score(rows: list[dict]) -> dict:
    """Accuracy of predict rows against the labels in their paths (<label>/<file>); failed rows count wrong."""
    right = sum(1 for r in rows if r.get("digit") is not None and int(r["digit"]) == int(r["path"].split("/")[0]))
    failed = sum(1 for r in rows if r.get("digit") is None)
    return {"n": len(rows), "right": right, "failed": failed, "accuracy": right / len(rows) if rows else float("nan")}


def worst_sheet(cases: list[tuple[Path, dict]], path: Path, cols: int = 6, cell: int = 112) -> None:
    """A PNG sheet: for each case the photo (fitted in a cell) and what the clean-up made of it
    (28x28, enlarged), with the true label, the prediction and its confidence."""
    from PIL import ImageDraw

    from digitq.common.images import load_image  # the clean-up as installed (old or new)

    rows = max(1, (len(cases) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * (2 * cell + 12), rows * (cell + 30)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (file, row) in enumerate(cases):
        x, y = (k % cols) * (2 * cell + 12), (k // cols) * (cell + 30)
        photo = Image.open(file).convert("RGB")
        photo.thumbnail((cell, cell))
        sheet.paste(photo, (x + (cell - photo.width) // 2, y + (cell - photo.height) // 2))
        try:
            clean = Image.fromarray(load_image(file)).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(clean.convert("RGB"), (x + cell + 4, y))
        except Exception as exc:  # noqa: BLE001 - the sheet shows what the clean-up said
            draw.text((x + cell + 6, y + 40), str(exc)[:20], fill="red")
        label = row["path"].split("/")[0]
        said = "err" if row.get("digit") is None else f"{row['digit']} ({float(row['confidence']):.2f})"
        draw.text((x + 2, y + cell + 2), f"{row['style']}: {label} -> {said}", fill="black")
    sheet.save(path)


def run(args) -> None:
    data_dir = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")
    images, labels = load_mnist_test(data_dir)
    home = os.environ.get("DIGITQ_HOME")
    root = Path(args.images) if args.images else (Path(home) if home else data_dir) / "photos-bench"
    styles = [s for s in STYLES if not args.only or s.name in args.only]
    if not args.reuse:
        started = time.perf_counter()
        render_folder(root, images, labels, args.n, styles, args.seed)
        print(f"rendered {args.n} x {len(styles)} images in {time.perf_counter() - started:.0f} s under {root}",
              file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, wrong = {}, []
    # The same digits as MNIST itself has them (28x28 PNGs, dark on white): what each style is held to.
    plain = root / "mnist-png"
    shutil.rmtree(plain, ignore_errors=True)  # rewritten every run (a second): always the first n digits
    for index in range(args.n):
        (plain / str(labels[index])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - images[index]).save(plain / str(labels[index]) / f"{index:05d}.png")
    same_digits = score(predict_style(plain, args.model, out / "mnist-png.jsonl"))
    for style in styles:
        started = time.perf_counter()
        rows = predict_style(root / style.name, args.model, out / f"{style.name}.jsonl")
        results[style.name] = score(rows)
        print(f"{style.name}: {results[style.name]['accuracy'] * 100:.1f}% ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr)
        for r in rows:
            label = int(r["path"].split("/")[0])
            if r.get("digit") is None or int(r["digit"]) != label:
                p_true = float(r.get(f"p{label}") or 0.0)
                wrong.append((p_true, root / style.name / r["path"], {**r, "style": style.name}))
    mnist = None if args.no_mnist else mnist_accuracy(args.model)
    total = sum(r["right"] for r in results.values()) / max(1, sum(r["n"] for r in results.values()))
    report = {"model": args.model, "n_per_style": args.n, "seed": args.seed, "mnist_test_accuracy": mnist,
              "same_digits_accuracy": same_digits, "all_photos_accuracy": total, "styles": results, "label": args.label}
    (out / "photos.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"| style | accuracy ({args.label}) | failed |", "| --- | ---: | ---: |"]
    if mnist is not None:
        lines.append(f"| MNIST test set (10,000) | {mnist * 100:.2f}% | |")
    lines.append(f"| the same {args.n} MNIST test digits as 28x28 PNGs | {same_digits['accuracy'] * 100:.2f}% | "
                 f"{same_digits['failed']} |")
    for name, r in results.items():
        lines.append(f"| {name} | {r['accuracy'] * 100:.1f}% | {r['failed']} |")
    lines.append(f"| all photos | {total * 100:.2f}% | |")
    (out / "photos.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    wrong.sort(key=lambda item: item[0])
    worst_sheet([(file, row) for _, file, row in wrong[: args.worst]], out / "worst.png")


def _load_module(path: str | None):
    """digitq.common.images, or the images.py at `path` (e.g. an older version, kept aside)."""
    if not path:
        from digitq.common import images

        return images
    import importlib.util

    spec = importlib.util.spec_from_file_location("images_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timing(args) -> None:
    """Preprocessing time per image, `load_images` (what `digitq predict` runs) and `load_image`,
    of this clean-up against another images.py, interleaved in one process (median of repeats):
    28x28 MNIST PNGs, and MNIST digits enlarged to 64-280 px dark on white (clean scans)."""
    import tempfile

    data_dir = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")
    images, _ = load_mnist_test(data_dir)
    modules = {"new": _load_module(None)}
    if args.old:
        modules["old"] = _load_module(args.old)
    rng = np.random.default_rng(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"mnist-28px-png": [], "scan-64-280px-png": []}
        for index in range(args.n):
            path = Path(tmp) / f"m{index:05d}.png"
            Image.fromarray(255 - images[index]).save(path)
            sets["mnist-28px-png"].append(path)
            side = int(rng.integers(64, 281))
            path = Path(tmp) / f"s{index:05d}.png"
            Image.fromarray(255 - images[index]).resize((side, side), Image.Resampling.BICUBIC).save(path)
            sets["scan-64-280px-png"].append(path)
        for name, paths in sets.items():
            for module in modules.values():  # warm-up: imports (OpenCV on first use), caches
                module.load_images(paths[:50])
                [module.load_image(p) for p in paths[:50]]
            times = {(label, how): [] for label in modules for how in ("load_images", "load_image")}
            for _ in range(args.repeats):
                for label, module in modules.items():
                    started = time.perf_counter()
                    module.load_images(paths)
                    times[label, "load_images"].append((time.perf_counter() - started) / len(paths))
                    started = time.perf_counter()
                    for p in paths:
                        module.load_image(p)
                    times[label, "load_image"].append((time.perf_counter() - started) / len(paths))
            results[name] = {f"{label} {how}": float(np.median(v)) * 1e6 for (label, how), v in times.items()}
    print(f"| images ({args.n} each) | " + " | ".join(f"{k} (us/image)" for k in next(iter(results.values()))) + " |")
    print("| --- |" + " ---: |" * len(next(iter(results.values()))))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in row.values()) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="write OUT/<style>/<label>/<index>.<ext>")
    p.add_argument("out")
    p.add_argument("-n", type=int, default=200, help="digits per style: MNIST test images 0..n-1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", choices=STYLE_NAMES)
    p = sub.add_parser("run", help="render, classify with digitq predict, report per style")
    p.add_argument("--model", default="digits")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", choices=STYLE_NAMES)
    p.add_argument("--images", help="where the styles' folders go (default $DIGITQ_HOME/photos-bench, else $DIGITQ_DATA_DIR/photos-bench)")
    p.add_argument("--reuse", action="store_true", help="classify the images already there, do not render")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "photos"))
    p.add_argument("--label", default="this clean-up", help="the accuracy column's heading")
    p.add_argument("--worst", type=int, default=48, help="cases on the worst-cases sheet")
    p.add_argument("--no-mnist", action="store_true", help="skip the MNIST-test evaluation")
    p = sub.add_parser("timing", help="preprocessing time per image, this clean-up against --old")
    p.add_argument("--old", help="an older images.py to compare with, e.g. from `git show REV:common/images.py`")
    p.add_argument("-n", type=int, default=1000, help="images per set")
    p.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "timing":
        timing(args)
    elif args.command == "render":
        data_dir = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")
        images, labels = load_mnist_test(data_dir)
        styles = [s for s in STYLES if not args.only or s.name in args.only]
        render_folder(Path(args.out), images, labels, args.n, styles, args.seed)
    else:
        run(args)


if __name__ == "__main__":
    main()
