"""Tests for digitq.common.images: real image files written with Pillow, real MNIST digits, no mocks.

MNIST tests read the t10k IDX files from $DIGITQ_DATA_DIR/mnist (default: ../shared/data next
to the repository) and are skipped when the files are missing.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from digitq.common import images
from digitq.common.errors import DigitqError, ImageError
from digitq.common.folders import iter_image_files
from digitq.common.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    decode_image_bytes,
    load_image,
    load_labelled_folder,
    to_mnist,
)

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set: images uint8 [10000, 28, 28], labels uint8 [10000]."""
    images_path = DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz"
    labels_path = DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not (images_path.is_file() and labels_path.is_file()):
        pytest.skip(f"MNIST test files not found in {DATA_DIR / 'mnist'} (set DIGITQ_DATA_DIR)")
    with gzip.open(images_path) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_path) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def first_of_each_class(labels: np.ndarray) -> list[int]:
    return [int(np.argmax(labels == digit)) for digit in range(10)]


def draw_seven(size=(180, 240), ink=0, paper=255, width=20, mode="L") -> Image.Image:
    """A crossed seven, deliberately asymmetric (so rotations and flips show)."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.line([(0.2 * w, 0.2 * h), (0.8 * w, 0.2 * h), (0.45 * w, 0.85 * h)], fill=ink, width=width, joint="curve")
    draw.line([(0.4 * w, 0.5 * h), (0.75 * w, 0.5 * h)], fill=ink, width=width // 2)
    return image


def render_large(digit: np.ndarray, scale=12, canvas=(1000, 700), at=(620, 40), mode="RGB") -> Image.Image:
    """An MNIST digit drawn dark on white paper, enlarged and off-centre in a big canvas."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    page = Image.new("L", canvas, 255)
    page.paste(big, at)
    return page.convert(mode)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def best_shifted_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation allowing a 1-px shift: centring rounds the centre of mass to whole pixels,
    so a digit whose centre lies near a half pixel can land one pixel either way."""
    return max(correlation(np.roll(a, (dy, dx), (0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    mass = digit.astype(float)
    total = mass.sum()
    return float(mass.sum(1) @ np.arange(28)) / total, float(mass.sum(0) @ np.arange(28)) / total


def assert_mnist_format(digit: np.ndarray) -> None:
    assert digit.dtype == np.uint8 and digit.shape == (28, 28)
    assert digit.max() == 255
    assert all(abs(c - 14) <= 1 for c in centre_of_mass(digit))


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def png_with_claimed_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR chunk (with a valid CRC) claims width x height pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def error_message(call, *args, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


@pytest.fixture(scope="module")
def seven_reference() -> np.ndarray:
    return to_mnist(draw_seven())


# --- real MNIST digits --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_off_centre_dark_on_light_digit_comes_back(mnist, tmp_path, fmt):
    """One digit of each class, drawn 12x larger, dark on white, off-centre in a 1000x700 RGB page.

    Compared with the original preprocessed the same way. Centring shifts by whole pixels, so
    a digit whose centre of mass lies near a half pixel (2 of these 10) can land one pixel
    off; its plain correlation then drops to about 0.76-0.85 while the shifted one stays high.
    """
    images, labels = mnist
    plain = []
    for index in first_of_each_class(labels):
        original = images[index]
        expected = to_mnist(Image.fromarray(original))
        got = load_image(save(render_large(original), tmp_path / f"{index}.{fmt.lower()}", format=fmt))
        assert best_shifted_correlation(got, expected) > 0.9, index
        plain.append(correlation(got, expected))
    assert min(plain) > 0.7 and np.median(plain) > 0.9, plain


def test_mnist_digits_pass_through_almost_unchanged(mnist):
    """MNIST digits are already in MNIST format: preprocessing them again changes almost nothing."""
    images, _ = mnist
    sample = images[:300]
    scores = [correlation(to_mnist(Image.fromarray(digit)), digit) for digit in sample]
    assert np.mean(np.array(scores) > 0.99) >= 0.97


def test_light_on_dark_and_dark_on_light_give_the_same_digit(mnist):
    images, _ = mnist
    for digit in images[:20]:
        assert np.array_equal(to_mnist(Image.fromarray(digit)), to_mnist(Image.fromarray(255 - digit)))


def test_dim_phone_photo_with_grey_paper_shading_and_noise(mnist):
    """Grey paper darker than mid-grey (so "light background" cannot mean > 128), with a
    shading gradient and sensor noise, dark ink."""
    images, labels = mnist
    rng = np.random.default_rng(0)
    for index in first_of_each_class(labels)[:5]:
        original = images[index]
        ink = np.asarray(Image.fromarray(original).resize((280, 280), Image.Resampling.BICUBIC), float) / 255
        paper = np.linspace(95, 125, 400)[None, :] * np.ones((380, 1))
        photo = paper.copy()
        photo[50:330, 90:370] = paper[50:330, 90:370] * (1 - ink) + 25 * ink
        photo += rng.normal(0, 3, photo.shape)
        got = to_mnist(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)))
        assert best_shifted_correlation(got, to_mnist(Image.fromarray(original))) > 0.9, index


def test_chalk_on_blackboard(mnist):
    images, labels = mnist
    original = images[first_of_each_class(labels)[3]]
    ink = np.asarray(Image.fromarray(original).resize((140, 140), Image.Resampling.BICUBIC), float) / 255
    board = np.full((200, 260), 55.0)
    board[30:170, 60:200] = 55 * (1 - ink) + 215 * ink
    got = to_mnist(Image.fromarray(board.astype(np.uint8)))
    assert best_shifted_correlation(got, to_mnist(Image.fromarray(original))) > 0.9


def test_speck_of_dust_far_from_the_digit_is_ignored(mnist):
    images, labels = mnist
    original = images[first_of_each_class(labels)[5]]
    page = render_large(original, mode="L")
    page.putpixel((20, 650), 0)  # a lone black pixel in the far corner
    expected = to_mnist(render_large(original, mode="L"))
    assert best_shifted_correlation(to_mnist(page), expected) > 0.95  # a kept speck would shrink the digit


# --- formats and colour modes -------------------------------------------------------------

FORMAT_CASES = [
    (".png", "PNG", "L"),
    (".jpg", "JPEG", "RGB"),
    (".jpeg", "JPEG", "L"),
    (".bmp", "BMP", "RGB"),
    (".gif", "GIF", "L"),
    (".tif", "TIFF", "RGB"),
    (".tiff", "TIFF", "L"),
    (".webp", "WEBP", "RGB"),
    (".pgm", "PPM", "L"),
    (".ppm", "PPM", "RGB"),
]


def test_format_cases_cover_every_extension():
    assert {case[0] for case in FORMAT_CASES} == IMAGE_EXTENSIONS


@pytest.mark.parametrize("extension,fmt,mode", FORMAT_CASES)
def test_every_format_loads(tmp_path, seven_reference, extension, fmt, mode):
    path = save(draw_seven().convert(mode), tmp_path / f"seven{extension}", format=fmt)
    got = load_image(path)
    assert_mnist_format(got)
    if fmt in ("JPEG", "WEBP"):
        assert correlation(got, seven_reference) > 0.95
    else:
        assert np.array_equal(got, seven_reference)


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255)], ids=["black-ink", "white-ink"])
@pytest.mark.parametrize("hidden", [(0, 0, 0), (255, 255, 255), (200, 30, 30)], ids=["black", "white", "red"])
def test_ink_on_transparent_background(tmp_path, seven_reference, ink, hidden):
    """Whatever colour is stored under alpha 0, a transparent background is background."""
    coverage = draw_seven(ink=255, paper=0)  # antialiasing-free alpha mask of the ink
    image = Image.new("RGBA", coverage.size, hidden + (0,))
    image.paste(Image.new("RGBA", coverage.size, ink + (255,)), (0, 0), coverage)
    got = load_image(save(image, tmp_path / "transparent.png"))
    assert np.array_equal(got, seven_reference)


def test_paper_with_transparent_margins(tmp_path, seven_reference):
    """Mostly opaque: the opaque part is paper, and transparent margins take the paper's shade."""
    paper = draw_seven().convert("RGBA")
    image = Image.new("RGBA", (260, 320), (0, 0, 0, 0))
    image.paste(paper, (40, 40))
    got = load_image(save(image, tmp_path / "paper.png"))
    assert correlation(got, seven_reference) > 0.99


def test_gray_with_alpha(tmp_path, seven_reference):
    alpha = draw_seven(ink=255, paper=0)
    image = Image.merge("LA", (Image.new("L", alpha.size, 0), alpha))
    assert np.array_equal(load_image(save(image, tmp_path / "la.png")), seven_reference)


@pytest.mark.parametrize("extension", [".png", ".gif"])
def test_palette_image_with_transparent_index(tmp_path, seven_reference, extension):
    image = draw_seven(ink=1, paper=0).convert("P")
    image.putpalette([255, 255, 255, 20, 20, 120] + [0, 0, 0] * 254)  # 0: (hidden) white, 1: dark blue
    path = save(image, tmp_path / f"palette{extension}", transparency=0)
    with Image.open(path) as opened:
        assert opened.mode == "P" and "transparency" in opened.info
    assert correlation(load_image(path), seven_reference) > 0.99


def test_palette_image_without_transparency(tmp_path, seven_reference):
    image = draw_seven().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert correlation(load_image(save(image, tmp_path / "adaptive.png")), seven_reference) > 0.99


def test_16_bit_grayscale_png(tmp_path, seven_reference):
    levels = np.asarray(draw_seven(), dtype=np.uint16) * 257  # 0..65535
    image = Image.fromarray(levels)
    path = save(image, tmp_path / "deep.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    assert np.array_equal(load_image(path), seven_reference)


def test_16_bit_low_contrast_uses_full_range_not_clipping(tmp_path):
    """Pillow's own I;16 -> L conversion clips everything above 255; ink at 2000 on 60000 must survive."""
    levels = np.where(np.asarray(draw_seven()) < 128, 2000, 60000).astype(np.uint16)
    assert_mnist_format(load_image(save(Image.fromarray(levels), tmp_path / "deep.png")))


@pytest.mark.parametrize("mode", ["1", "CMYK", "RGBX", "YCbCr", "F", "I", "La", "RGBa"])
def test_other_colour_modes(seven_reference, mode):
    base = draw_seven()
    if mode == "F":
        image = Image.fromarray(np.asarray(base, np.float32) / 255)
    elif mode == "I":
        image = Image.fromarray(np.asarray(base, np.int32) * 100)
    elif mode in ("La", "RGBa"):
        image = draw_seven(ink=255, paper=0).convert(mode.upper()).convert(mode)
    else:
        image = base.convert(mode)
    assert correlation(to_mnist(image), seven_reference) > 0.98


def test_exif_orientation_is_applied(tmp_path):
    upright = draw_seven(size=(240, 180)).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as the camera wrote the pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=95)
    assert correlation(load_image(path), to_mnist(upright)) > 0.98


@pytest.mark.parametrize("extension", [".gif", ".tiff"])
def test_first_frame_of_a_multi_frame_file(tmp_path, seven_reference, extension):
    first = draw_seven()
    second = Image.new("L", first.size, 255)
    ImageDraw.Draw(second).ellipse((40, 40, 140, 200), outline=0, width=15)
    path = save(first, tmp_path / f"frames{extension}", save_all=True, append_images=[second])
    with Image.open(path) as opened:
        assert opened.n_frames == 2
    assert np.array_equal(load_image(path), seven_reference)


def test_tiny_image():
    pixels = np.full((5, 3), 255, np.uint8)
    pixels[:, 1] = 0  # a "1": a 5x1 dark bar in a 5x3 image
    digit = to_mnist(Image.fromarray(pixels))
    assert_mnist_format(digit)
    rows, cols = np.nonzero(digit)
    assert rows.max() - rows.min() + 1 >= 19 and cols.max() - cols.min() + 1 <= 6


@pytest.mark.parametrize("size", [(3000, 40), (40, 3000)], ids=["wide", "tall"])
def test_very_wide_or_tall_image(size):
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(10, 10), (size[0] - 10, size[1] - 10)], fill=0, width=8)
    digit = to_mnist(image)
    assert_mnist_format(digit)
    rows, cols = np.nonzero(digit)
    long_side = max(np.ptp(rows), np.ptp(cols)) + 1
    assert 19 <= long_side <= 20


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 40), 255),
        Image.new("RGB", (50, 40), (120, 120, 120)),
        Image.new("RGBA", (50, 40), (0, 0, 0, 0)),
        Image.fromarray(np.random.default_rng(1).normal(200, 4, (60, 60)).clip(0, 255).astype(np.uint8)),
        Image.new("L", (1, 1), 0),
    ],
    ids=["white", "grey", "transparent", "noisy-paper", "1x1"],
)
def test_blank_image_is_an_error(image):
    assert error_message(to_mnist, image).startswith("no ink found")


def test_blank_file_is_an_error(tmp_path):
    path = save(Image.new("RGB", (300, 200), "white"), tmp_path / "blank.png")
    assert error_message(load_image, path).startswith("no ink found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert error_message(load_image, path) == "empty file"
    assert error_message(decode_image_bytes, b"") == "empty file"


def test_truncated_png(tmp_path):
    buffer = io.BytesIO()
    draw_seven().save(buffer, "PNG")
    data = buffer.getvalue()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    assert error_message(load_image, path) == "truncated or corrupt image"


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    assert error_message(load_image, path).startswith("not an image file")


def test_unsupported_format_is_not_an_image(tmp_path):
    """ICO is a Pillow format but not one digitq lets decode untrusted input."""
    path = save(draw_seven(size=(64, 64)), tmp_path / "seven.ico")
    assert error_message(load_image, path).startswith("not an image file")


def test_decompression_bomb_beyond_pillows_own_limit():
    message = error_message(decode_image_bytes, png_with_claimed_size(50_000, 50_000))
    assert message == f"image too large: 2500000000 pixels (limit {MAX_IMAGE_PIXELS})"


def test_image_over_our_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_with_claimed_size(8000, 8000))  # 64 Mpx: under Pillow's limit, over ours
    assert error_message(load_image, path) == f"image too large: 8000x8000 pixels (limit {MAX_IMAGE_PIXELS})"


def test_pixel_and_byte_limits_are_parameters(tmp_path):
    path = save(draw_seven(), tmp_path / "seven.png")
    assert error_message(load_image, path, max_pixels=1000) == "image too large: 180x240 pixels (limit 1000)"
    assert error_message(load_image, path, max_bytes=100).startswith("file too large: ")
    assert error_message(decode_image_bytes, path.read_bytes(), max_bytes=100).startswith("file too large: ")


def test_symlink_loop(tmp_path):
    path = tmp_path / "loop.png"
    os.symlink(path.name, path)
    assert error_message(load_image, path) == "unreadable: symlink loop"


def test_missing_file_directory_and_fifo(tmp_path):
    assert error_message(load_image, tmp_path / "absent.png") == "file not found"
    assert error_message(load_image, tmp_path) == "is a folder, not a file"
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert error_message(load_image, fifo) == "not a regular file"  # and does not hang


@pytest.mark.skipif(IS_ROOT, reason="root can read a chmod 000 file")
def test_unreadable_file(tmp_path):
    path = save(draw_seven(), tmp_path / "secret.png")
    path.chmod(0)
    try:
        assert error_message(load_image, path) == "unreadable: permission denied"
    finally:
        path.chmod(0o644)


def test_image_error_is_a_digitq_error():
    assert issubclass(ImageError, DigitqError)


# --- folders ------------------------------------------------------------------------------


def test_iter_image_files(tmp_path):
    for name in ["b.png", "a.JPG", "notes.txt", "README", ".hidden.png", "Thumbs.db", "sub/c.png", "sub/.git/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    os.symlink("..", tmp_path / "sub" / "up")  # a folder loop

    names = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert names == ["README", "a.JPG", "b.png", "dangling.png", "loop.png", "notes.txt"]
    names = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path, recursive=True)]
    assert names == ["README", "a.JPG", "b.png", "dangling.png", "loop.png", "notes.txt", "sub/c.png"]


def test_iter_image_files_bad_folder(tmp_path):
    assert error_message(lambda: list(iter_image_files(tmp_path / "absent"))).endswith("folder not found")
    (tmp_path / "file").write_bytes(b"x")
    assert error_message(lambda: list(iter_image_files(tmp_path / "file"))).endswith("not a folder")


@pytest.mark.skipif(IS_ROOT, reason="root can list a chmod 000 folder")
def test_iter_image_files_yields_an_unreadable_sub_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert list(iter_image_files(tmp_path, recursive=True)) == [locked]
        assert error_message(load_image, locked) == "unreadable: permission denied"
    finally:
        locked.chmod(0o755)


def test_load_labelled_folder(mnist, tmp_path):
    images, labels = mnist
    for digit in (0, 3, 7):
        folder = tmp_path / str(digit) / "session1"
        folder.mkdir(parents=True)
        for index in np.flatnonzero(labels == digit)[:2]:
            save(render_large(images[index], scale=4, canvas=(200, 150), at=(30, 20)), folder / f"{index}.png")
    (tmp_path / "3" / "notes.txt").write_text("written on the bus")
    (tmp_path / "7" / "blank.png").write_bytes(b"")
    (tmp_path / "unlabelled").mkdir()

    got_images, got_labels, errors = load_labelled_folder(tmp_path)
    assert got_images.shape == (6, 28, 28) and got_images.dtype == np.uint8
    assert got_labels.dtype == np.uint8 and got_labels.tolist() == [0, 0, 3, 3, 7, 7]
    assert errors == [("3/notes.txt", errors[0][1]), ("7/blank.png", "empty file")]
    assert errors[0][1].startswith("not an image file")


def test_load_labelled_folder_failures(tmp_path):
    assert error_message(load_labelled_folder, tmp_path / "absent").endswith("folder not found")
    (tmp_path / "cats").mkdir()
    assert error_message(load_labelled_folder, tmp_path).endswith("no sub-folders named 0 to 9 (one per digit)")
    (tmp_path / "4").mkdir()
    assert error_message(load_labelled_folder, tmp_path).endswith("no image files in the digit folders")
    (tmp_path / "4" / "a.png").write_text("nope")
    message = error_message(load_labelled_folder, tmp_path)
    assert ": no usable image (1 failed, e.g. 4/a.png: not an image file" in message


# --- properties ---------------------------------------------------------------------------


@st.composite
def inked_images(draw) -> Image.Image:
    """Random strokes and blobs on a random canvas, with clear contrast, noise and either polarity."""
    width = draw(st.integers(8, 160))
    height = draw(st.integers(8, 160))
    paper = draw(st.integers(0, 255))
    ink = draw(st.integers(0, 255).filter(lambda level: abs(level - paper) >= 80))
    image = Image.new("L", (width, height), paper)
    canvas = ImageDraw.Draw(image)
    # Keep the ink off the border: a border that is mostly ink has no background to find.
    margin_x, margin_y, thickest = width // 5, height // 5, max(1, min(width, height) // 6)
    point = st.tuples(st.integers(margin_x, width - 1 - margin_x), st.integers(margin_y, height - 1 - margin_y))
    for _ in range(draw(st.integers(1, 4))):
        (x0, y0), (x1, y1) = draw(point), draw(point)
        if draw(st.booleans()):
            canvas.line([(x0, y0), (x1, y1)], fill=ink, width=draw(st.integers(1, thickest)))
        else:
            canvas.ellipse([(min(x0, x1), min(y0, y1)), (max(x0, x1) + 1, max(y0, y1) + 1)], fill=ink)  # never empty
    noise = draw(st.integers(0, 6))
    if noise:
        seed = draw(st.integers(0, 2**32 - 1))
        levels = np.asarray(image, float) + np.random.default_rng(seed).normal(0, noise, (height, width))
        image = Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8))
    return image.convert(draw(st.sampled_from(["L", "RGB", "RGBA"])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inked_images())
def test_property_output_is_an_mnist_digit_centred_on_its_mass(image):
    digit = to_mnist(image)
    assert digit.dtype == np.uint8 and digit.shape == (28, 28)
    assert digit.max() == 255
    rows, cols = np.nonzero(digit)
    centre_row, centre_col = centre_of_mass(digit)
    # The shift is clamped to keep the digit inside the canvas, so only a lopsided digit
    # that had to be pushed against an edge may miss the centre.
    assert abs(centre_row - 14) <= 1 or rows.min() <= 1 or rows.max() >= 26
    assert abs(centre_col - 14) <= 1 or cols.min() <= 1 or cols.max() >= 26


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_property_any_pixels_give_a_digit_or_an_image_error(width, height, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    try:
        digit = to_mnist(Image.fromarray(pixels))
    except ImageError as exc:
        assert str(exc).startswith("no ink found")
    else:
        assert digit.dtype == np.uint8 and digit.shape == (28, 28) and digit.max() == 255


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged EXIF it skips
@settings(max_examples=100, deadline=None)
@given(st.data())
def test_property_damaged_files_raise_only_image_error(data):
    buffer = io.BytesIO()
    fmt = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    draw_seven(size=(40, 50), width=5).save(buffer, fmt)
    damaged = bytearray(buffer.getvalue())
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    try:
        digit = decode_image_bytes(bytes(damaged[:cut]))
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert digit.dtype == np.uint8 and digit.shape == (28, 28)


# --- plain 8-bit grey PNGs: decoded by OpenCV, the same pixels as Pillow's ------------------


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def with_chunk(data: bytes, kind: bytes, body: bytes, before: bytes = b"IEND") -> bytes:
    """A PNG with one more chunk (a valid CRC) inserted before the first `before` chunk."""
    at = data.index(before) - 4
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:at] + chunk + data[at:]


def pillow_gray(data: bytes) -> np.ndarray:
    """What Pillow alone gives: the decode before the OpenCV path (EXIF-oriented, mode L)."""
    with Image.open(io.BytesIO(data)) as image:
        return images._gray_levels(image, MAX_IMAGE_PIXELS)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.integers(0, 2**32 - 1), st.booleans(), st.booleans(), st.booleans())
def test_property_plain_grey_pngs_take_opencv_and_decode_as_pillow_does(width, height, seed, optimize, dpi, text):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    if seed % 2:  # smooth images too: other row filters win
        pixels = np.cumsum(pixels // 64, axis=1).astype(np.uint8)
    info = PngInfo()
    if text:
        info.add_text("Software", "a scanner")
        info.add_text("Comment", "long " * 30, zip=True)
    data = png_bytes(Image.fromarray(pixels), optimize=optimize, pnginfo=info, **({"dpi": (300, 300)} if dpi else {}))
    assert images._plain_gray_png_size(data) == (width, height)
    assert np.array_equal(images._decode_gray(data, MAX_IMAGE_PIXELS, 1 << 30), pixels)


def test_other_pngs_take_pillow(tmp_path):
    """Anything but a plain 8-bit grey PNG is Pillow's, and decodes as it did before."""
    seven = draw_seven(size=(40, 50), width=5)
    plain = png_bytes(seven)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow turns it upright
    idat = plain.index(b"IDAT") - 4
    idat_crc = idat + 8 + struct.unpack(">I", plain[idat:idat + 4])[0]
    others = {
        "transparency": png_bytes(seven, transparency=255),
        "EXIF orientation": png_bytes(seven, exif=exif),
        "EXIF in a text chunk": with_chunk(plain, b"tEXt", b"Raw profile type exif\0\nexif\n 0\n"),
        "gamma": with_chunk(plain, b"gAMA", struct.pack(">I", 45455), before=b"IDAT"),
        "16-bit": png_bytes(Image.fromarray((np.asarray(seven).astype(np.uint16) * 257))),
        "palette": png_bytes(seven.convert("P")),
        "RGB": png_bytes(seven.convert("RGB")),
        "data after IEND": plain + b"trailing bytes",
        "a wrong CRC": plain[:idat_crc] + bytes([plain[idat_crc] ^ 1]) + plain[idat_crc + 1:],
        "truncated": plain[: len(plain) // 2],
    }
    for name, data in others.items():
        assert images._plain_gray_png_size(data) is None, name
        if name == "truncated":
            assert error_message(decode_image_bytes, data) == "truncated or corrupt image"
        else:
            assert np.array_equal(images._decode_gray(data, MAX_IMAGE_PIXELS, 1 << 30), pillow_gray(data)), name
    assert images._decode_gray(others["EXIF orientation"], MAX_IMAGE_PIXELS, 1 << 30).shape == (40, 50)


def test_a_plain_png_with_a_broken_zlib_stream_is_refused_without_opencv_noise(capfd):
    data = bytearray(png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 30), np.uint8))))
    at = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    data[at + 8 + 5] ^= 0xFF  # the deflate block's header: libpng would print "invalid stored block lengths"
    struct.pack_into(">I", data, at + 8 + length, zlib.crc32(bytes(data[at + 4:at + 8 + length])))
    assert images._plain_gray_png_size(bytes(data)) is None
    assert error_message(decode_image_bytes, bytes(data)) == "truncated or corrupt image"
    assert "libpng" not in capfd.readouterr().err


def test_a_plain_png_over_the_pixel_limit_is_refused_before_decoding():
    data = png_with_claimed_size(8000, 8000)
    assert error_message(decode_image_bytes, data) == f"image too large: 8000x8000 pixels (limit {MAX_IMAGE_PIXELS})"


def test_labelled_folder_refuses_links_out_of_the_allowed_roots(tmp_path):
    from PIL import Image, ImageDraw

    from digitq.common.images import load_labelled_folder

    root = tmp_path / "root"
    (root / "set" / "1").mkdir(parents=True)
    outside = tmp_path / "outside.png"
    for target in (root / "set" / "1" / "a.png", outside):
        img = Image.new("L", (40, 40), 255)
        ImageDraw.Draw(img).line([(20, 5), (20, 35)], fill=0, width=4)
        img.save(target)
    (root / "set" / "1" / "b.png").symlink_to(outside)
    x, y, errors = load_labelled_folder(root / "set", within=[root.resolve()])
    assert len(x) == 1 and errors == [("1/b.png", "links outside the allowed folders")]
    x, _, errors = load_labelled_folder(root / "set")
    assert len(x) == 2 and not errors
