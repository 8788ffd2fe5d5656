#!/usr/bin/env python3
"""Written numbers and the unsure flag: `digitq predict --number` and `--min-confidence`, measured.

numbers: numbers of 1 to 8 digits made from MNIST *test* digits, written side by side at MNIST's
scale with varied spacing (2-8 px, and one gap in ten overlapping by 1-2 px, so that those digits
touch or nearly), baseline drift (a slope and a wobble of the digits' heights), as clean
images (dark on white PNGs) and as photos (bench/photos.py's renderer: paper, pen, light, tilt,
blur, JPEG; the nine styles other than small-on-page in turn). Reports the share of numbers read
entirely right, by length, through `digitq predict --number --recursive --format json`.

unsure: the flag's trade-off. `digitq predict --min-confidence 0` over MNIST's 10,000 test
digits (28x28 PNGs), photos of MNIST test digits (bench/photos.py, n per style) and images
that are no digit: blank (white, grey, photos of blank paper), noise, drawings (filled shapes,
several shapes, hatching) and Fashion-MNIST test items (from Debian's dataset-fashion-mnist,
unpacked under --fashion; skipped with a note if absent). For each --min-confidence setting:
the share of right predictions flagged, of wrong ones caught, of non-digits flagged.

    python bench/written_numbers.py numbers --model digits -n 200 --out bench/results/numbers
    python bench/written_numbers.py unsure --model digits --out bench/results/numbers \\
        --fashion /work/cache/fm/usr/share/datasets/fashion-mnist
    # images go under --images (default $DIGITQ_HOME/numbers-bench); writes numbers.json/.md,
    # unsure.json/.md in --out

Never reads MNIST's training files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import photos  # noqa: E402  (bench/photos.py: the renderer and the MNIST test loader)

REPO = Path(__file__).resolve().parents[1]

LENGTHS = tuple(range(1, 9))
TOUCH = 0.1
"""Chance that a gap between two digits is an overlap of 1-2 px (the digits touch or nearly): about
a quarter of 4-digit numbers hold such a pair."""

NUMBER_STYLES = tuple(s for s in photos.STYLES if s.photo and not s.small_on_page)


# --- numbers ----------------------------------------------------------------------------------


def compose(digits: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """MNIST digits (28x28, ink bright) side by side at MNIST's scale: (uint8 image, ink bright,
    with a 4-px margin; whether a gap overlaps)."""
    crops = []
    for d in digits:
        rows, cols = np.flatnonzero(d.max(axis=1)), np.flatnonzero(d.max(axis=0))
        crops.append(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    gaps, touching = [], False
    for _ in crops[1:]:
        if rng.random() < TOUCH:
            gaps.append(-int(rng.integers(1, 3)))
            touching = True
        else:
            gaps.append(int(rng.integers(2, 9)))
    slope = rng.uniform(-1.5, 1.5)  # px per digit
    drift = [slope * i + rng.normal(0, 1.2) for i in range(len(crops))]
    centres = [14 + d - min(drift) for d in drift]
    height = int(max(c + cr.shape[0] / 2 for c, cr in zip(centres, crops)) + 2) + 8
    width = sum(c.shape[1] for c in crops) + sum(gaps) + 8
    canvas = np.zeros((height, width), np.uint8)
    x = 4
    for crop, centre, gap in zip(crops, centres, [0] + gaps):
        x += gap
        top = max(0, int(round(centre - crop.shape[0] / 2)) + 4)
        region = canvas[top : top + crop.shape[0], x : x + crop.shape[1]]
        np.maximum(region, crop[: region.shape[0], : region.shape[1]], out=region)
        x += crop.shape[1]
    return canvas, touching


def render_numbers(root: Path, images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0) -> dict:
    """Write n numbers per length: root/clean/<L>/<i>_<number>.png and root/photo/<L>/<i>_<number>.<ext>.
    Returns {relative path: touching?} for both. The digits are MNIST test digits, drawn at random."""
    touching = {}
    for kind in ("clean", "photo"):
        shutil.rmtree(root / kind, ignore_errors=True)
    for length in LENGTHS:
        for kind in ("clean", "photo"):
            (root / kind / str(length)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, length, i])
            picks = rng.integers(0, len(images), length)
            strip, touch = compose([images[k] for k in picks], rng)
            number = "".join(str(int(labels[k])) for k in picks)
            rel = f"{length}/{i:04d}_{number}"
            Image.fromarray(255 - strip).save(root / "clean" / f"{rel}.png")
            style = NUMBER_STYLES[i % len(NUMBER_STYLES)]
            data, ext = photos.render(strip, style, int(rng.integers(0, 2**31)))
            (root / "photo" / f"{rel}.{ext}").write_bytes(data)
            touching[f"clean/{rel}.png"] = touching[f"photo/{rel}.{ext}"] = touch
    return touching


def predict(folder: Path, model: str, out_json: Path, *extra: str) -> list[dict]:
    """`digitq predict FOLDER --recursive --format json --min-confidence 0 EXTRA...`: one dict per file."""
    cmd = [*photos.digitq_argv(), "predict", str(folder), "--model", model, "--recursive", "--format", "json",
           "--min-confidence", "0", "-o", str(out_json), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in out_json.read_text().splitlines() if line.strip()]


def run_numbers(args) -> None:
    images, labels = photos.load_mnist_test(_data_dir())
    root = _images_root(args)
    if not args.reuse:
        started = time.perf_counter()
        touching = render_numbers(root, images, labels, args.n, args.seed)
        (root / "touching.json").write_text(json.dumps(touching))
        print(f"rendered {args.n} numbers x {len(LENGTHS)} lengths x 2 kinds in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    touching = json.loads((root / "touching.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "n_per_length": args.n, "seed": args.seed, "kinds": {}}
    for kind in ("clean", "photo"):
        started = time.perf_counter()
        rows = predict(root / kind, args.model, out / f"numbers-{kind}.jsonl", "--number")
        seconds = time.perf_counter() - started
        by_length: dict = {}
        for r in rows:
            length, name = r["path"].split("/")
            truth = name.split("_")[1].split(".")[0]
            stats = by_length.setdefault(int(length), {"n": 0, "right": 0, "touching": 0, "touching_right": 0,
                                                       "digits_right": 0, "wrong_count": 0, "flagged": 0,
                                                       "wrong_flagged": 0})
            right = r.get("number") == truth
            stats["n"] += 1
            stats["right"] += right
            stats["flagged"] += bool(r.get("flag"))
            stats["wrong_flagged"] += (not right) and bool(r.get("flag"))
            got = r.get("number") or ""
            stats["wrong_count"] += len(got) != len(truth)
            stats["digits_right"] += sum(a == b for a, b in zip(got, truth)) if len(got) == len(truth) else 0
            if touching.get(f"{kind}/{r['path']}"):
                stats["touching"] += 1
                stats["touching_right"] += right
        report["kinds"][kind] = {"seconds": round(seconds, 1), "lengths": {k: by_length[k] for k in sorted(by_length)}}
    (out / "numbers.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| digits | clean: all right | clean, with touching pair | photo: all right | photo, with touching pair | photo: wrong digit count |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for length in LENGTHS:
        c, p = report["kinds"]["clean"]["lengths"][length], report["kinds"]["photo"]["lengths"][length]
        lines.append(f"| {length} | {_share(c['right'], c['n'])} | {_share(c['touching_right'], c['touching'])} | "
                     f"{_share(p['right'], p['n'])} | {_share(p['touching_right'], p['touching'])} | "
                     f"{_share(p['wrong_count'], p['n'])} |")
    (out / "numbers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _share(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}% ({k}/{n})" if n else "-"


# --- unsure ---------------------------------------------------------------------------------


def drawing(rng: np.random.Generator, side: int = 112) -> np.ndarray:
    """A drawing that is no digit, dark on white (uint8): filled shapes, several shapes, or hatching."""
    page = np.full((side, side), 255, np.uint8)
    kind = rng.integers(0, 4)
    colour = int(rng.integers(0, 80))
    if kind == 0:  # one filled shape
        c = tuple(int(v) for v in rng.integers(side // 3, 2 * side // 3, 2))
        if rng.random() < 0.5:
            cv2.circle(page, c, int(rng.integers(side // 5, side // 3)), colour, -1, cv2.LINE_AA)
        else:
            w, h = (int(v) for v in rng.integers(side // 4, side // 2, 2))
            cv2.rectangle(page, (c[0] - w // 2, c[1] - h // 2), (c[0] + w // 2, c[1] + h // 2), colour, -1)
    elif kind == 1:  # several small shapes in a row or scattered
        for _ in range(int(rng.integers(3, 7))):
            c = tuple(int(v) for v in rng.integers(side // 8, 7 * side // 8, 2))
            cv2.circle(page, c, int(rng.integers(4, side // 8)), colour, int(rng.choice([-1, 2, 3])), cv2.LINE_AA)
    elif kind == 2:  # hatching: parallel strokes
        angle = rng.uniform(0, np.pi)
        for k in range(int(rng.integers(5, 10))):
            off = (k - 5) * side / 10
            cx, cy = side / 2 + off * np.cos(angle + np.pi / 2), side / 2 + off * np.sin(angle + np.pi / 2)
            dx, dy = 0.35 * side * np.cos(angle), 0.35 * side * np.sin(angle)
            cv2.line(page, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), colour, 3, cv2.LINE_AA)
    else:  # a star or polygon, filled
        k = int(rng.integers(5, 9))
        radii = np.where(np.arange(2 * k) % 2 == 0, side * 0.4, side * rng.uniform(0.15, 0.3))
        angles = np.arange(2 * k) * np.pi / k + rng.uniform(0, np.pi)
        pts = np.stack([side / 2 + radii * np.cos(angles), side / 2 + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(page, [pts], colour, cv2.LINE_AA)
    return page


def render_unsure(root: Path, images: np.ndarray, labels: np.ndarray, n_photos: int, n_other: int,
                  fashion: Path | None, seed: int = 0) -> list[str]:
    """Write the sets under root/<set>/...; returns the names of the non-digit sets written."""
    rng = np.random.default_rng([seed, 99])
    mnist = root / "mnist"
    if not mnist.exists():
        for d in range(10):
            (mnist / str(d)).mkdir(parents=True, exist_ok=True)
        for i, (img, lab) in enumerate(zip(images, labels)):
            Image.fromarray(255 - img).save(mnist / str(lab) / f"{i:05d}.png")
    photos.render_folder(root / "photos", images, labels, n_photos, seed=seed)
    sets = ["blank", "noise", "drawings"]
    for name in sets:
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir(parents=True)
    for i in range(n_other):
        kind = i % 3
        if kind == 0:
            blank = np.full((28, 28), 255, np.uint8)
        elif kind == 1:
            blank = np.clip(rng.normal(200, 3, (300, 400)), 0, 255).astype(np.uint8)
        else:  # a photo of blank paper (bench/photos.py's paper, light and camera; no ink)
            data, ext = photos.render(np.zeros((28, 28), np.uint8), photos.STYLES[2 + i % 8], int(rng.integers(0, 2**31)))
            (root / "blank" / f"{i:04d}.{ext}").write_bytes(data)
            blank = None
        if blank is not None:
            Image.fromarray(blank).save(root / "blank" / f"{i:04d}.png")
        side = int(rng.choice([28, 64, 200]))
        noise = rng.integers(0, 256, (side, side)).astype(np.uint8) if i % 2 else \
            cv2.GaussianBlur(rng.integers(0, 256, (side, side)).astype(np.uint8), (0, 0), 2.0)
        Image.fromarray(noise).save(root / "noise" / f"{i:04d}.png")
        Image.fromarray(drawing(rng)).save(root / "drawings" / f"{i:04d}.png")
    if fashion is not None and (fashion / "t10k-images-idx3-ubyte.gz").exists():
        shutil.rmtree(root / "fashion", ignore_errors=True)
        (root / "fashion").mkdir()
        with gzip.open(fashion / "t10k-images-idx3-ubyte.gz") as f:
            items = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        for i in range(FASHION_FROM, min(len(items), FASHION_FROM + 5 * n_other)):
            Image.fromarray(255 - items[i]).save(root / "fashion" / f"{i:05d}.png")
        sets.append("fashion")
    else:
        print(f"Fashion-MNIST not found under {fashion}: that set is skipped "
              "(apt-get download dataset-fashion-mnist; dpkg-deb -x it; pass --fashion DIR)", file=sys.stderr)
    return sets


SETTINGS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85)

FASHION_FROM = 5000
"""The first Fashion-MNIST test item used: items 0-1499 (and the noise and drawings of seed 0)
chose the shape test's features (digitq.common.doubt), so the benchmark reports others."""


def run_unsure(args) -> None:
    images, labels = photos.load_mnist_test(_data_dir())
    root = _images_root(args) / "unsure"
    fashion = Path(args.fashion) if args.fashion else None
    if not args.reuse:
        sets = render_unsure(root, images, labels, args.n_photos, args.n_other, fashion, args.seed)
    else:
        sets = [s for s in ("blank", "noise", "drawings", "fashion") if (root / s).exists()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {name: predict(root / name, args.model, out / f"unsure-{name}.jsonl") for name in ["mnist", "photos", *sets]}

    def fixed(r):  # flagged whatever the setting: blank, not-one-digit (or an error)
        return bool(r.get("error")) or r.get("flag") in ("blank", "not-one-digit")

    def flagged(r, t):
        return fixed(r) or (r.get("confidence") is not None and r["confidence"] < t)

    def digit_label(r):
        return int(r["path"].split("/")[-2])

    table = []
    for t in SETTINGS:
        entry = {"min_confidence": t}
        for name in ("mnist", "photos"):
            right = [r for r in rows[name] if r.get("digit") is not None and r["digit"] == digit_label(r)]
            wrong = [r for r in rows[name] if not (r.get("digit") is not None and r["digit"] == digit_label(r))]
            entry[name] = {"right_flagged": sum(flagged(r, t) for r in right) / max(1, len(right)),
                           "wrong_caught": sum(flagged(r, t) for r in wrong) / max(1, len(wrong)),
                           "right": len(right), "wrong": len(wrong)}
        for name in sets:
            entry[name] = sum(flagged(r, t) for r in rows[name]) / max(1, len(rows[name]))
        entry["non_digits"] = sum(sum(flagged(r, t) for r in rows[s]) for s in sets) / max(1, sum(len(rows[s]) for s in sets))
        table.append(entry)
    shape = {name: sum(r.get("flag") == "not-one-digit" for r in rows[name]) / max(1, len(rows[name]))
             for name in ["mnist", "photos", *sets]}
    report = {"model": args.model, "sets": {k: len(v) for k, v in rows.items()}, "settings": table,
              "not_one_digit_share": shape}
    (out / "unsure.json").write_text(json.dumps(report, indent=1) + "\n")
    head = ["--min-confidence", "MNIST right flagged", "MNIST wrong caught", "photos right flagged",
            "photos wrong caught", *sets, "all non-digits"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for e in table:
        cells = [f"{e['min_confidence']:.2f}", *(f"{100 * e[k][m]:.1f}%" for k in ("mnist", "photos")
                                                   for m in ("right_flagged", "wrong_caught")),
                 *(f"{100 * e[s]:.1f}%" for s in sets), f"{100 * e['non_digits']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("images: " + ", ".join(f"{k} {v}" for k, v in report["sets"].items()) +
                 f"; MNIST wrong: {table[0]['mnist']['wrong']}, photos wrong: {table[0]['photos']['wrong']}")
    (out / "unsure.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# --- main -------------------------------------------------------------------------------------


def _data_dir() -> Path:
    return Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")


def _images_root(args) -> Path:
    if args.images:
        return Path(args.images)
    home = os.environ.get("DIGITQ_HOME")
    return (Path(home) if home else _data_dir()) / "numbers-bench"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("numbers", "unsure"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="digits")
        p.add_argument("--out", default=str(REPO / "bench" / "results" / "numbers"))
        p.add_argument("--images", default=None, help="where the images go (default $DIGITQ_HOME/numbers-bench)")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--reuse", action="store_true", help="use the images already rendered")
    sub.choices["numbers"].add_argument("-n", type=int, default=200, help="numbers per length and kind")
    sub.choices["unsure"].add_argument("--n-photos", type=int, default=100, help="photos per style")
    sub.choices["unsure"].add_argument("--n-other", type=int, default=300, help="images per non-digit set (Fashion: 5x)")
    sub.choices["unsure"].add_argument("--fashion", default="/work/cache/fm/usr/share/datasets/fashion-mnist",
                                       help="folder with Fashion-MNIST's t10k-images-idx3-ubyte.gz")
    args = parser.parse_args(argv)
    (run_numbers if args.command == "numbers" else run_unsure)(args)


if __name__ == "__main__":
    main()
