"""Turn real-world image files into MNIST-format digits: 28x28 uint8, ink bright on black.

Users hand over scans, phone crops and drawing-app exports in any size, format and colour
mode, with dark ink on light paper or light ink on dark, often off-centre. `to_mnist` makes
them look like MNIST, following LeCun's description of how MNIST itself was made: crop to
the ink, scale the longer side to 20 px keeping the aspect ratio (area averaging gives the
grey, anti-aliased edges), then place the result in a 28x28 field so that the centre of mass
of the pixel intensities sits at the centre (row 14, column 14, as in MNIST itself).

Steps, each a function below: open safely (`decode_image_bytes`, `load_image`), fix EXIF
orientation, flatten transparency onto a background (`_flatten_alpha`), convert to 8-bit
grey (`_to_gray`), find the background and the ink and stretch them to 0 and 255, inverting
dark-on-light images (`_stretch_ink`), crop (`_find_ink_box`), scale (`_fit_digit_box`),
centre (`_centre_on_canvas`).

That is the clean path, for scans, exports and MNIST-like files (`is_clean`: at most
CLEAN_MAX_PIXELS, with an even 1-pixel border). Photos of paper (uneven light, shadows, ruled
or squared lines, specks, a small digit on a large page) take `photos.photo_ink` instead of
the stretch and the crop. On both paths `photos.normalise_stroke` then brings strokes much
thinner or thicker than MNIST's to MNIST's width (crops over 40 px only: MNIST-sized crops
are never touched), before the scaling and centring above.

Grey levels are kept as uint8 through the whole-image steps and the level changes are
256-entry lookup tables, applied in blocks of rows: a 40-megapixel photo then costs 40 MB per
copy, not 160 MB. The level statistics come from a 256-bin histogram and the sorted 1-pixel
border, without Pillow round trips or np.median/np.percentile calls (bit for bit the same
floats): on a 28x28 MNIST-like PNG most of the time is Pillow's decoder and the per-call
overhead of a few dozen NumPy calls on tiny arrays. `load_images` pays that NumPy overhead once
per stack of same-sized small images instead of once per image (what `digitq predict` uses;
BENCHMARKS.md and the README's prediction figures give the times).
tests/unit/test_images_equivalence.py keeps the slower code this replaced and checks that the
two agree, and that `load_images` agrees with `load_image` file by file.

Every failure a user can cause raises `ImageError` with a one-line message that does not
name the file (callers add the path). Never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, ImageStat, UnidentifiedImageError

from digitq.common import photos
from digitq.common.errors import ImageError, NoInkError
from digitq.common.folders import describe_os_error, is_folder, list_folder, one_line, stat_folder, walk_files

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image accepted, in pixels (width x height of the first frame), checked before
decoding. 40 megapixels covers phone photos; larger files are rejected as possible
decompression bombs (a few-KB PNG can claim gigapixels). Pillow's own global limit
(Image.MAX_IMAGE_PIXELS, 89 Mpx by default) still applies on top of this one."""

MAX_FILE_BYTES = 20 * 1024 * 1024
"""Largest image file accepted, in bytes (20 MiB), checked before the file is read."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
"""Lower-case file extensions of the formats digitq reads."""

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
"""Pillow decoders digitq lets run ("PPM" reads PBM/PGM/PPM; "JPEG" also opens MPO phone
photos). Anything else (EPS, which runs Ghostscript, PSD, ICO, ...) is "not an image file":
fewer decoders exposed to untrusted files."""

MNIST_SIZE = 28
"""Side of an MNIST image, in pixels."""

DIGIT_BOX = 20
"""Side of the box the digit is scaled to fit, in pixels (MNIST: 20x20 inside 28x28)."""

MNIST_CENTRE = 14.0
"""Where the centre of mass goes, in pixel indices (row and column). Measured on the MNIST
test set: the mean centre of mass is (13.99, 14.01)."""

INK_CONTRAST = 32
"""Grey levels (of 255) a pixel must differ from the background to count as ink. Paper
texture, JPEG noise and mild shading stay below it; a pale pencil line on white does not."""

NOISE_SIGMAS = 4.0
"""The black point sits this many noise standard deviations (estimated from the border)
above the background, so background noise maps to 0 (Gaussian noise passes 4 sigma in 3
pixels out of 100,000)."""

MIN_NOISE_MARGIN = 2
"""Smallest gap between background and black point, in grey levels: clean synthetic images
have no measurable noise but JPEG still adds a little. Small, so MNIST's faint anti-aliased
edge pixels survive (a larger margin moves the crop of about 1% of MNIST digits)."""

INK_LEVEL_PERCENTILE = 90.0
"""Percentile of the ink pixels' levels that is stretched to 255 (MNIST strokes are
saturated: every MNIST test digit reaches 254 or 255). A percentile, not the maximum, so a
few glints do not leave the rest of the stroke grey."""

CROP_TRIM_FRACTION = 0.0005
"""Share of the strong ink (summed intensity) that cropping may drop on each side. Lets a
small speck of dust far from the digit fall outside the crop instead of shrinking the
digit; a stroke end carries far more than 0.05% of the ink."""

STRONG_INK_LEVEL = 128
"""Stretched level (of 255) from which a pixel is surely ink, not noise: half-way between the
black point and the ink level. The crop box is found on these pixels."""

FRINGE_PIXELS = 2
"""How far (in pixels of the input) the crop box may grow over faint ink next to it."""

FRINGE_INK_LEVEL = 32
"""Stretched level (of 255) from which faint ink next to the box counts as the digit's edge.
Fainter pixels are mostly noise or JPEG ringing; 98.6% of MNIST digits still come back
with correlation > 0.99 after preprocessing them again."""

CLEAN_MAX_PIXELS = 512 * 512
"""Largest image, in pixels, that may take the clean path (today's MNIST steps, see
`is_clean`): scans and crops of one digit. Larger images are photos of paper and always go
through the photo clean-up (`digitq.common.photos`), which first shrinks them."""

MNIST_PIXELS_SIDE = 64
"""Side (pixels) up to which an image is MNIST-sized: its clean path is never second-guessed."""

CLEAN_MIN_CROP = 0.1
"""On the clean path, an image larger than MNIST_PIXELS_SIDE whose ink crop is under this share
of its longer side goes to the photo clean-up instead: what was found is a speck or the
darkest grains of a stroke too faint for INK_CONTRAST (pencil on grey paper)."""

CLEAN_BORDER_INK = 0.1
"""Share of the border of an image up to BATCH_IMAGE_PIXELS (MNIST-sized) that may be ink and
still take the clean path: 103 of MNIST's 10,000 test digits touch the 28x28 border."""

READ_BYTES = 1 << 16
"""Bytes asked for per read once a file turns out longer than its size said."""

BLOCK_PIXELS = 1 << 20
"""Pixels per block when a lookup table is applied or levels are counted: NumPy widens the
uint8 values to 8-byte integers for both, so a block costs 8 MB whatever the image's size.
Also the most pixels `load_images` stacks up per image size before processing them."""

BATCH_IMAGE_PIXELS = 64 * 64
"""Largest image, in pixels, whose grey-level and crop steps `load_images` runs on a stack of
same-sized images: MNIST-like scans and crops. Larger images gain little from it (their own
pixels, not the per-call overhead, dominate) and go one at a time."""

_LEVELS = np.arange(256, dtype=np.float64)
"""The 256 grey levels, as floats for the level arithmetic."""

_BOMB_SIZE_RE = re.compile(r"\((\d+) pixels\)")
"""Pulls the pixel count out of Pillow's DecompressionBombError/Warning message."""

_CORRUPT_IMAGE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
)
"""What Pillow's decoders raise on damaged data (its own fuzz tests accept these)."""


def to_mnist(image: Image.Image, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Turn an opened Pillow image into an MNIST digit: uint8 array (28, 28), ink bright on 0.

    Uses the image's current frame (the first one for a freshly opened GIF or TIFF) and its
    EXIF orientation. Images over `max_pixels` pixels are refused before they are decoded.
    Raises ImageError: "no ink found ..." for a blank image, or why the image is unusable.
    """
    return _digit_from_gray(_gray_levels(image, max_pixels))


def decode_image_bytes(
    data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> np.ndarray:
    """Decode an image file's bytes (e.g. an upload) into an MNIST digit; see `to_mnist`."""
    return _digit_from_gray(_decode_gray(data, max_pixels, max_bytes))


def load_image(
    path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> np.ndarray:
    """Read an image file into an MNIST digit; see `to_mnist`. Every failure is an ImageError."""
    return decode_image_bytes(_read_file(path, max_bytes), max_pixels=max_pixels, max_bytes=max_bytes)


def load_images(
    paths: Iterable[str | os.PathLike], *, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> list[np.ndarray | ImageError]:
    """`load_image` of each file, in order: its digit, or the ImageError it raised (not raised here).

    Bit for bit what `load_image` gives, faster on many small files: each file is decoded to
    grey levels on its own, then the level statistics, the lookup tables and the crop box of
    same-sized small images (up to BATCH_IMAGE_PIXELS) are computed for a stack of them at
    once, so the few dozen NumPy calls per image are paid once per stack. Larger images take
    the one-image path as soon as they are decoded.
    """
    results: list = []
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for index, path in enumerate(paths):
        results.append(None)
        try:
            gray = _decode_gray(_read_file(path, max_bytes), max_pixels, max_bytes)
            if gray.size > BATCH_IMAGE_PIXELS:
                results[index] = _digit_from_gray(gray)
                continue
        except ImageError as exc:
            results[index] = exc
            continue
        group = groups.setdefault(gray.shape, [])
        group.append((index, gray))
        if len(group) * gray.size >= BLOCK_PIXELS:  # a full stack: memory stays at one block per size
            _digits_from_group(group, results)
            group.clear()
    for group in groups.values():
        if group:
            _digits_from_group(group, results)
    return results


def load_labelled_folder(
    folder: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_FILE_BYTES,
    within: list[Path] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Load a user's labelled handwriting: `folder/0/...` to `folder/9/...`, one folder per digit.

    Each digit folder is walked recursively (see `iter_image_files`). Returns (images uint8
    [N, 28, 28], labels uint8 [N], errors) where errors lists (path relative to `folder` with
    '/' separators, one-line message) for every file that could not be used (or the digit
    folder's name, if it cannot be listed). Raises ImageError if `folder` is missing, has no
    digit folder or holds no usable image at all. With `within` (a worker's allowed roots), a
    file whose real path lies outside them (a symlink out) is refused like a bad file.
    """
    root = Path(folder)
    name = one_line(str(root))
    stat_folder(root)
    digit_folders = [(digit, root / str(digit)) for digit in range(10) if is_folder(root / str(digit))]
    if not digit_folders:
        raise ImageError(f"{name}: no sub-folders named 0 to 9 (one per digit)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    errors: list[tuple[str, str]] = []
    for digit, digit_folder in digit_folders:
        try:
            info = digit_folder.stat()
            entries = list_folder(digit_folder)
        except OSError as exc:
            errors.append((str(digit), describe_os_error(exc)))
            continue
        for path in walk_files(entries, {(info.st_dev, info.st_ino)}, recursive=True):
            try:
                if within is not None:
                    real = Path(os.path.realpath(path))
                    if not any(real == r or r in real.parents for r in within):
                        raise ImageError("links outside the allowed folders")
                images.append(load_image(path, max_pixels=max_pixels, max_bytes=max_bytes))
                labels.append(digit)
            except ImageError as exc:
                errors.append((path.relative_to(root).as_posix(), str(exc)))
    if not images:
        if not errors:
            raise ImageError(f"{name}: no image files in the digit folders")
        first_path, first_message = errors[0]
        raise ImageError(f"{name}: no usable image ({len(errors)} failed, e.g. {first_path}: {first_message})")
    return np.stack(images), np.array(labels, dtype=np.uint8), errors


# --- opening files -------------------------------------------------------------------------


def _decode_gray(data: bytes, max_pixels: int, max_bytes: int) -> np.ndarray:
    """An image file's bytes as 8-bit grey levels (uint8 2-D), checked as `decode_image_bytes` says."""
    if len(data) == 0:
        raise ImageError("empty file")
    if len(data) > max_bytes:
        raise ImageError(f"file too large: {len(data)} bytes (limit {max_bytes})")
    size = _plain_gray_png_size(data)
    if size is not None and 0 < size[0] * size[1] <= max_pixels:
        cv2 = photos.cv2()
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if gray is not None and gray.shape == (size[1], size[0]) and gray.dtype == np.uint8:
            return gray  # else Pillow below decodes it, or says what is wrong with it
    with _pillow_errors(max_pixels):
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)  # reads the header only
    with image:
        return _gray_levels(image, max_pixels)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME", b"tEXt", b"zTXt", b"iTXt"})
"""Chunks that leave an 8-bit grey PNG's pixels as they are stored: no transparency (tRNS), no
EXIF orientation (eXIf), no palette, colour profile or gamma that a decoder might apply."""


def _plain_gray_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG that OpenCV decodes to exactly what Pillow's mode "L" gives
    (8-bit grey, non-interlaced, only _PLAIN_PNG_CHUNKS, every chunk's CRC right, a complete
    zlib stream of the right length with valid row filters, nothing after IEND: libpng then has
    nothing to complain about on stderr); None for any other file, which Pillow then opens.
    OpenCV decodes such a file about 4x faster than Pillow: most of a 28x28 MNIST-like PNG's
    preprocessing time."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 8 + 25:
        return None
    pos, end, size, stream = 8, len(data), None, zlib.decompressobj()
    rows, inflated = [], 0  # the decompressed IDAT data so far, and its length
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        body_end = pos + 8 + length
        if body_end + 4 > end or kind not in _PLAIN_PNG_CHUNKS:
            return None
        body = data[pos + 8:body_end]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, body_end)[0]:
            return None
        if size is None:  # the first chunk: IHDR
            if kind != b"IHDR" or length != 13:
                return None
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, colour, compression, filtering, interlace) != (8, 0, 0, 0, 0) or width * height == 0:
                return None
            size = (width, height)
        elif kind == b"IDAT":
            try:
                rows.append(stream.decompress(body, (width + 1) * height + 1 - inflated))
                inflated += len(rows[-1])
            except zlib.error:
                return None
        elif kind in (b"tEXt", b"zTXt", b"iTXt") and body.startswith(b"Raw profile type"):
            return None  # Pillow reads EXIF (an orientation) from such a text chunk
        pos = body_end + 4
        if kind == b"IEND":
            if pos != end or not stream.eof or stream.unused_data or inflated != (width + 1) * height:
                return None
            filtered = b"".join(rows)
            if max(filtered[:: width + 1]) > 4:  # each row's filter type: 0 to 4
                return None
            return size
    return None


def _gray_levels(image: Image.Image, max_pixels: int) -> np.ndarray:
    """An opened image's current frame, EXIF-oriented, as 8-bit grey levels (uint8 2-D)."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels})")
    if width == 0 or height == 0:
        raise ImageError(f"empty image: {width}x{height} pixels")
    with _pillow_errors(max_pixels):
        image.load()
    image = _apply_exif_orientation(image)
    return np.asarray(_to_gray(image))


def _digit_from_gray(pixels: np.ndarray) -> np.ndarray:
    """Grey levels (uint8 2-D) to an MNIST digit: find the ink and crop it (the clean path for a
    clean image, `photos.photo_ink` for any other), normalise its strokes, scale, centre."""
    return digit_from_crop(ink_crop(pixels))


def read_gray(
    path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> np.ndarray:
    """An image file's grey levels (uint8 2-D: EXIF-oriented, transparency flattened), checked as
    `load_image` checks it. Every failure is an ImageError."""
    return _decode_gray(_read_file(path, max_bytes), max_pixels, max_bytes)


def ink_crop(pixels: np.ndarray, *, row: bool = False) -> np.ndarray:
    """The ink of grey levels (uint8 2-D), bright on 0 and cropped to it (float32 or uint8 2-D):
    the clean path for a clean image, `photos.photo_ink` for any other. With `row`, a photo keeps
    the whole row of digits beside the largest one (a written number), not only that digit.
    NoInkError when there is none."""
    border = np.sort(np.concatenate((pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1])))
    if _is_clean(pixels.size, border):
        crop = _clean_crop(pixels, border)
        if max(pixels.shape) > MNIST_PIXELS_SIDE and max(crop.shape) < CLEAN_MIN_CROP * max(pixels.shape):
            # A speck passed for the ink (faint pencil under INK_CONTRAST): the photo clean-up
            # looks closer; if it finds no digit either, the speck it is.
            with contextlib.suppress(ImageError):
                crop = photos.photo_ink(pixels, row=row)
        return crop
    try:
        return photos.photo_ink(pixels, row=row)
    except ImageError:
        if pixels.size > BATCH_IMAGE_PIXELS:
            raise
        # A small image is no photo: a stroke across its border sent it here, and the photo
        # clean-up takes such a stroke for shading. The clean path crops it, as before.
        return _clean_crop(pixels, border)


def digit_from_crop(crop: np.ndarray) -> np.ndarray:
    """A digit's ink crop (bright on 0) as an MNIST digit: strokes normalised, scaled to the
    20-px box, centred by its centre of mass in 28x28 (uint8)."""
    return _centre_on_canvas(_fit_digit_box(photos.normalise_stroke(crop)))


def _clean_crop(pixels: np.ndarray, border: np.ndarray) -> np.ndarray:
    """The clean path's crop: levels stretched from the sorted `border`, cut to the ink's box."""
    ink = _stretch_ink(pixels, border)
    top, bottom, left, right = _find_ink_box(ink)
    return ink[top : bottom + 1, left : right + 1]


def is_clean(pixels: np.ndarray) -> bool:
    """Whether grey levels (uint8 2-D) take the clean path: a scan or export of at most
    CLEAN_MAX_PIXELS whose whole 1-pixel border lies within INK_CONTRAST of its median (no
    gradient, shadow, line or stroke reaches the edge; MNIST-sized images: all but
    CLEAN_BORDER_INK of it). MNIST-like PNGs do."""
    return _is_clean(pixels.size, np.sort(np.concatenate((pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]))))


def _is_clean(size: int, border: np.ndarray) -> bool:
    """`is_clean` from the image's pixel count and its sorted border."""
    if size > CLEAN_MAX_PIXELS:
        return False
    middle = _sorted_median(border)
    # MNIST-sized images may have a stroke on the border (1% of MNIST's test digits touch it).
    skip = int(len(border) * CLEAN_BORDER_INK) if size <= BATCH_IMAGE_PIXELS else 0
    return float(border[-1 - skip]) - middle <= INK_CONTRAST and middle - float(border[skip]) <= INK_CONTRAST


def _digits_from_group(group: list[tuple[int, np.ndarray]], results: list) -> None:
    """`_digit_from_gray` of same-sized grey images, the whole-image steps done for all at once:
    results[index] = the digit, or the ImageError."""
    stack = np.stack([gray for _, gray in group])
    clean = _clean_flags(stack)
    if not clean.all():
        for (index, gray), ok in zip(group, clean.tolist()):
            if not ok:
                try:
                    results[index] = _digit_from_gray(gray)
                except ImageError as exc:
                    results[index] = exc
        group = [item for item, ok in zip(group, clean.tolist()) if ok]
        if not group:
            return
        stack = stack[clean]
    inks, has_ink = _stretch_inks(stack)
    boxes = _find_ink_boxes(inks)
    for (index, _), ink, ok, (top, bottom, left, right) in zip(group, inks, has_ink.tolist(), boxes):
        if not ok:
            results[index] = NoInkError("no ink found (the image is blank or has too little contrast)")
            continue
        try:
            crop = photos.normalise_stroke(ink[top : bottom + 1, left : right + 1])
            results[index] = _centre_on_canvas(_fit_digit_box(crop))
        except ImageError as exc:
            results[index] = exc


def _clean_flags(stack: np.ndarray) -> np.ndarray:
    """`is_clean` of each image of a stack (uint8 [n, h, w]), as a bool [n] array."""
    n = stack.shape[0]
    if stack[0].size > CLEAN_MAX_PIXELS:
        return np.zeros(n, dtype=bool)
    border = np.concatenate((stack[:, 0], stack[:, -1], stack[:, :, 0], stack[:, :, -1]), axis=1)
    border.sort(axis=1)
    middle = _sorted_medians(border)
    skip = int(border.shape[1] * CLEAN_BORDER_INK) if stack[0].size <= BATCH_IMAGE_PIXELS else 0
    return (border[:, -1 - skip] - middle <= INK_CONTRAST) & (middle - border[:, skip] <= INK_CONTRAST)


def _read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Read a regular file of at most `max_bytes` bytes; ImageError for anything else.

    Opens non-blocking and checks the file type before reading, so a FIFO or a device file
    named `x.png` is refused instead of hanging the reader.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        raise ImageError(describe_os_error(exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file")
        if info.st_size > max_bytes:
            raise ImageError(f"file too large: {info.st_size} bytes (limit {max_bytes})")
        chunks = []
        size = 0
        # One byte more than st_size, so one read normally gets the whole file and the next
        # one sees its end. Not max_bytes + 1: a 20 MiB buffer per 300-byte file costs more
        # (an mmap and munmap) than reading it.
        want = info.st_size + 1
        while size <= max_bytes:  # st_size can lie (a file still being written)
            chunk = os.read(fd, min(want, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            want = READ_BYTES
    except OSError as exc:
        raise ImageError(describe_os_error(exc)) from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise ImageError(f"file too large: more than {max_bytes} bytes")
    if size == 0:
        raise ImageError("empty file")
    return b"".join(chunks)


@contextlib.contextmanager
def _pillow_errors(max_pixels: int) -> Iterator[None]:
    """Turn what Pillow raises on bad input (and its decompression-bomb warning) into ImageError.

    Wrap only Pillow calls: the exception types are broad. Like every use of
    warnings.catch_warnings, this changes process-wide warning filters for its duration, so
    it is not thread-safe; the worker decodes images in one thread per process.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise ImageError("not an image file (or not PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _BOMB_SIZE_RE.search(str(exc))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        raise ImageError(f"image too large: {size} (limit {max_pixels})") from None
    except _CORRUPT_IMAGE_ERRORS as exc:
        if isinstance(exc, OSError) and "not available" in str(exc):  # "decoder xyz not available"
            raise ImageError(f"unsupported image encoding: {one_line(str(exc))}") from None
        raise ImageError("truncated or corrupt image") from None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the camera's EXIF orientation tag says. Images without the tag are
    not copied (a 40 Mpx RGB copy is 120 MB). A damaged EXIF block is ignored: the picture
    itself decoded fine, so it is used as stored."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except _CORRUPT_IMAGE_ERRORS:
        pass
    return image


# --- grey levels ----------------------------------------------------------------------------


def _to_gray(image: Image.Image) -> Image.Image:
    """8-bit grey levels (Pillow mode "L") of any Pillow mode, transparency flattened.

    Colour becomes luma (ITU-R 601). High-bit-depth modes (I;16, I, F) are scaled from their
    value range, not clipped as Pillow's own conversion to "L" would clip them.
    """
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return Image.fromarray(_scale_high_depth(np.asarray(image), mode))
    if mode in ("La", "RGBa"):  # premultiplied alpha
        image = _convert(image, mode.upper())
        mode = image.mode
    has_alpha = mode in ("LA", "RGBA", "PA") or "transparency" in image.info
    if not has_alpha:
        if mode == "L":
            return image  # convert() would copy it
        if mode not in ("1", "P", "RGB", "RGBX"):  # CMYK, YCbCr, HSV, LAB, ...
            image = _convert(image, "RGB")
        return _convert(image, "L")
    if mode == "LA":
        return _flatten_alpha(image.getchannel("L"), image.getchannel("A"))
    rgba = _convert(image, "RGBA")
    return _flatten_alpha(_convert(rgba, "L"), rgba.getchannel("A"))


def _convert(image: Image.Image, mode: str) -> Image.Image:
    """Pillow's convert(); ImageError if Pillow cannot convert from the image's mode."""
    try:
        return image.convert(mode)
    except ValueError:
        raise ImageError(f"unsupported colour mode {image.mode}") from None


def _scale_high_depth(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float grey levels to uint8.

    The first of these ranges that holds every value is mapped to 0..255: I;16 modes
    0..65535; mode I 0..255, then 0..65535; mode F 0..1, then 0..255; else the values'
    own min..max. A fixed range (not min..max) keeps a blank 16-bit image blank.
    """
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16"):
        ranges = [(0.0, 65535.0)]
    elif mode == "F":
        ranges = [(0.0, 1.0), (0.0, 255.0)]
    else:
        ranges = [(0.0, 255.0), (0.0, 65535.0)]
    bottom, top = next(((b, t) for b, t in ranges if b <= low and high <= t), (low, max(high, low + 1.0)))
    values -= bottom
    values *= 255.0 / (top - bottom)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _flatten_alpha(gray: Image.Image, alpha: Image.Image) -> Image.Image:
    """Composite grey levels over a background so transparent pixels become background.

    The colour stored under alpha 0 is meaningless (often black, often white), so it is
    never looked at. If under half the image is opaque, the opaque part is the ink: the
    background gets the opposite shade (white under dark ink, black under light ink). If
    most of it is opaque, the opaque part is paper: transparent margins get the paper's
    median shade. Fully opaque images are returned unchanged.
    """
    if alpha.getextrema()[0] == 255:
        return gray
    visible = alpha.point(lambda a: 255 if a >= 128 else 0)
    stats = ImageStat.Stat(gray, mask=visible)
    if stats.count[0] == 0:  # nothing visible
        return Image.new("L", gray.size, 0)
    shade = stats.median[0]
    if stats.count[0] < 0.5 * gray.width * gray.height:
        background = 255 if shade < 128 else 0
    else:
        background = shade
    canvas = Image.new("L", gray.size, background)
    canvas.paste(gray, (0, 0), alpha)
    return canvas


def _stretch_ink(pixels: np.ndarray, border: np.ndarray | None = None) -> np.ndarray:
    """Make ink bright on a 0 background: fix the polarity and stretch the levels (uint8 2-D in and out).

    The background level is the median of the 1-pixel border. Ink is whatever differs from
    it by more than INK_CONTRAST; its side (darker or lighter than the background) is the one
    with more "excess contrast energy": the sum over pixels of (distance from background -
    INK_CONTRAST)^2. Squaring lets a strong stroke outweigh a wide, faint shading; the
    margin ignores noise. Dark-side ink means dark on light: the image is inverted.
    Then a linear map sends the black point (background + noise margin) to 0 and the ink
    level (INK_LEVEL_PERCENTILE of the ink pixels) to 255, clipping outside. Pixels between
    stay grey, so anti-aliased edges survive. Raises ImageError if no pixel counts as ink.
    """
    if border is None:  # else the caller's: the sorted 1-pixel border
        border = np.sort(np.concatenate((pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1])))
    background = _sorted_median(border)
    counts = _count_levels(pixels).astype(np.float64)
    dark_weights, light_weights = _contrast_weights(background)
    dark_energy = counts @ dark_weights
    light_energy = counts @ light_weights
    if dark_energy == 0 and light_energy == 0:
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    inverted = bool(dark_energy > light_energy)
    if inverted:
        background = 255 - background
        border = 255 - border[::-1]  # still ascending
        counts = counts[::-1]  # now pixels per level, as for an upright image
    # One standard deviation of the border's noise, measured on the ink side only, where the
    # background's noise cannot have been clipped at 0 or 255: 84th percentile - median.
    noise = _sorted_percentile(border, 84.13) - _sorted_median(border)
    black = background + min(max(NOISE_SIGMAS * noise, MIN_NOISE_MARGIN), INK_CONTRAST)
    cumulative = np.cumsum(np.where(_LEVELS > background + INK_CONTRAST, counts, 0.0))
    white = float(np.searchsorted(cumulative, cumulative[-1] * INK_LEVEL_PERCENTILE / 100))
    white = max(white, black + 1)
    return _apply_table(_level_table(inverted, black, white), pixels)


def _stretch_inks(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_stretch_ink` of a stack of same-sized images (uint8 [n, h, w], at most BLOCK_PIXELS in
    all) with one set of NumPy calls: (the stretched stack, a bool [n] mask of the images with
    ink; the others' rows are meaningless, where `_stretch_ink` raises ImageError).

    Bit for bit the same: every per-image float operation is done element-wise on [n] or
    [n, 256] arrays in the same order, and the energies are sums of integer multiples of 1/4
    far below 2**53, exact in any summation order.
    """
    n, height, width = pixels.shape
    border = np.concatenate((pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]), axis=1)
    border.sort(axis=1)
    background = _sorted_medians(border)
    # Image i's levels as i * 256 + level: one bincount and one table lookup serve the stack.
    indices = pixels.reshape(n, -1) + (np.arange(n, dtype=np.intp) * 256)[:, None]
    counts = np.bincount(indices.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    dark_energy = np.einsum("ij,ij->i", counts, np.clip(background[:, None] - _LEVELS - INK_CONTRAST, 0, None) ** 2)
    light_energy = np.einsum("ij,ij->i", counts, np.clip(_LEVELS - background[:, None] - INK_CONTRAST, 0, None) ** 2)
    has_ink = (dark_energy != 0) | (light_energy != 0)
    inverted = dark_energy > light_energy
    background = np.where(inverted, 255 - background, background)
    border = np.where(inverted[:, None], 255 - border[:, ::-1], border)  # still ascending
    counts = np.where(inverted[:, None], counts[:, ::-1], counts)
    noise = _sorted_percentiles(border, 84.13) - _sorted_medians(border)
    black = background + np.minimum(np.maximum(NOISE_SIGMAS * noise, MIN_NOISE_MARGIN), INK_CONTRAST)
    cumulative = np.cumsum(np.where(_LEVELS > (background + INK_CONTRAST)[:, None], counts, 0.0), axis=1)
    target = cumulative[:, -1] * INK_LEVEL_PERCENTILE / 100
    white = np.count_nonzero(cumulative < target[:, None], axis=1).astype(np.float64)  # searchsorted, per row
    white = np.maximum(white, black + 1)
    levels = np.where(inverted[:, None], _LEVELS[::-1], _LEVELS)
    tables = np.rint(np.clip((levels - black[:, None]) * (255.0 / (white - black))[:, None], 0, 255)).astype(np.uint8)
    return tables.ravel()[indices].reshape(n, height, width), has_ink


@functools.lru_cache(maxsize=512)  # one entry per background level (whole or half): all of them
def _contrast_weights(background: float) -> tuple[np.ndarray, np.ndarray]:
    """Per grey level, its (distance from `background` - INK_CONTRAST)^2 on the dark side and on
    the light side (0 within the margin): pixel counts times these are the excess energies."""
    dark = np.clip(background - _LEVELS - INK_CONTRAST, 0, None) ** 2
    light = np.clip(_LEVELS - background - INK_CONTRAST, 0, None) ** 2
    dark.flags.writeable = light.flags.writeable = False  # shared by every call through the cache
    return dark, light


@functools.lru_cache(maxsize=1024)  # MNIST-like files share a handful of (black, white) pairs
def _level_table(inverted: bool, black: float, white: float) -> np.ndarray:
    """The uint8 lookup table mapping each stored grey value (inverted first if `inverted`)
    linearly from `black` -> 0 to `white` -> 255, clipped."""
    levels = _LEVELS[::-1] if inverted else _LEVELS  # the level each stored value stands for
    table = np.rint(np.clip((levels - black) * (255.0 / (white - black)), 0, 255)).astype(np.uint8)
    table.flags.writeable = False  # shared by every call through the cache
    return table


def _count_levels(pixels: np.ndarray) -> np.ndarray:
    """Pixels per grey level (int64, 256) of a uint8 image, counted BLOCK_PIXELS at a time."""
    counts = np.zeros(256, dtype=np.int64)
    for block in _row_blocks(pixels):
        counts += np.bincount(block.ravel(), minlength=256)
    return counts


def _apply_table(table: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """table[pixels] (uint8), BLOCK_PIXELS at a time."""
    out = np.empty_like(pixels)
    for block, out_block in zip(_row_blocks(pixels), _row_blocks(out)):
        np.take(table, block, out=out_block)
    return out


def _row_blocks(pixels: np.ndarray) -> Iterator[np.ndarray]:
    """Views of whole rows of `pixels`, about BLOCK_PIXELS each (at least one row)."""
    rows = max(1, BLOCK_PIXELS // pixels.shape[1])
    for top in range(0, len(pixels), rows):
        yield pixels[top : top + rows]


def _sorted_median(values: np.ndarray) -> float:
    """np.median of ascending `values`, as the same float, without a partition."""
    middle = len(values) // 2
    if len(values) % 2:
        return float(values[middle])
    return (float(values[middle - 1]) + float(values[middle])) / 2


def _sorted_medians(values: np.ndarray) -> np.ndarray:
    """`_sorted_median` of each row of `values` (ascending rows), as float64 [n]."""
    middle = values.shape[1] // 2
    if values.shape[1] % 2:
        return values[:, middle].astype(np.float64)
    return (values[:, middle - 1].astype(np.float64) + values[:, middle].astype(np.float64)) / 2


def _sorted_percentiles(values: np.ndarray, percent: float) -> np.ndarray:
    """`_sorted_percentile` of each row of `values` (ascending rows), as float64 [n]: the
    same float operations, element-wise."""
    last = values.shape[1] - 1
    position = last * (percent / 100)
    if position >= last:
        return values[:, last].astype(np.float64)
    below = math.floor(position)
    fraction = position - below
    low, high = values[:, below].astype(np.float64), values[:, below + 1].astype(np.float64)
    if fraction >= 0.5:
        return high - (high - low) * (1 - fraction)
    return low + (high - low) * fraction


def _sorted_percentile(values: np.ndarray, percent: float) -> float:
    """np.percentile(values, percent) (its default "linear" method) of ascending `values`,
    as the same float: the same float operations in the same order, without its per-call
    overhead (large next to a small image's work)."""
    last = len(values) - 1
    position = last * (percent / 100)
    if position >= last:
        return float(values[last])
    below = math.floor(position)
    fraction = position - below
    low, high = float(values[below]), float(values[below + 1])
    if fraction >= 0.5:
        return high - (high - low) * (1 - fraction)
    return low + (high - low) * fraction


# --- geometry -------------------------------------------------------------------------------


def _find_ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive: the box around the ink.

    The box is found on strong ink (>= STRONG_INK_LEVEL), less at most CROP_TRIM_FRACTION of
    it on each side, so faint noise and small specks far from the digit do not enlarge it.
    It then grows by up to FRINGE_PIXELS over fainter ink touching it: the anti-aliased
    edge of a digit that is already small (an MNIST digit keeps its full 20x20 box).
    """
    strong = np.where(ink >= STRONG_INK_LEVEL, ink, 0)
    rows = strong.sum(axis=1, dtype=np.int64).tolist()
    cols = strong.sum(axis=0, dtype=np.int64).tolist()
    allowance = CROP_TRIM_FRACTION * sum(rows)
    top, bottom = _first_beyond(rows, allowance), len(rows) - 1 - _first_beyond(reversed(rows), allowance)
    left, right = _first_beyond(cols, allowance), len(cols) - 1 - _first_beyond(reversed(cols), allowance)
    height, width = ink.shape
    for _ in range(FRINGE_PIXELS):
        near_cols = slice(max(left - 1, 0), right + 2)
        near_rows = slice(max(top - 1, 0), bottom + 2)
        if top > 0 and _reaches(ink[top - 1, near_cols], FRINGE_INK_LEVEL):
            top -= 1
        if bottom < height - 1 and _reaches(ink[bottom + 1, near_cols], FRINGE_INK_LEVEL):
            bottom += 1
        if left > 0 and _reaches(ink[near_rows, left - 1], FRINGE_INK_LEVEL):
            left -= 1
        if right < width - 1 and _reaches(ink[near_rows, right + 1], FRINGE_INK_LEVEL):
            right += 1
    return top, bottom, left, right


def _find_ink_boxes(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """`_find_ink_box` of each image of a stack (uint8 [n, h, w]), with one set of NumPy calls.

    The same integer arithmetic: running totals of int64 sums against the same float
    allowance (exact below 2**53), and the fringe steps on [n] arrays, each of the four
    sides tested against the box as it was at the start of the step, as there.
    """
    n, height, width = ink.shape
    strong = np.where(ink >= STRONG_INK_LEVEL, ink, 0)
    rows = strong.sum(axis=2, dtype=np.int64)
    cols = strong.sum(axis=1, dtype=np.int64)
    allowance = (CROP_TRIM_FRACTION * rows.sum(axis=1))[:, None]

    def first_beyond(sums: np.ndarray) -> np.ndarray:  # per row, as `_first_beyond` (0 if none)
        return np.argmax(np.cumsum(sums, axis=1) > allowance, axis=1)

    def reaches(lines: np.ndarray, within: np.ndarray) -> np.ndarray:
        return np.where(within, lines, 0).max(axis=1) >= FRINGE_INK_LEVEL

    top, bottom = first_beyond(rows), height - 1 - first_beyond(rows[:, ::-1])
    left, right = first_beyond(cols), width - 1 - first_beyond(cols[:, ::-1])
    images, row_index, col_index = np.arange(n), np.arange(height), np.arange(width)
    for _ in range(FRINGE_PIXELS):
        near_cols = (col_index >= np.maximum(left - 1, 0)[:, None]) & (col_index < (right + 2)[:, None])
        near_rows = (row_index >= np.maximum(top - 1, 0)[:, None]) & (row_index < (bottom + 2)[:, None])
        grow_top = (top > 0) & reaches(ink[images, np.maximum(top - 1, 0)], near_cols)
        grow_bottom = (bottom < height - 1) & reaches(ink[images, np.minimum(bottom + 1, height - 1)], near_cols)
        grow_left = (left > 0) & reaches(ink[images, :, np.maximum(left - 1, 0)], near_rows)
        grow_right = (right < width - 1) & reaches(ink[images, :, np.minimum(right + 1, width - 1)], near_rows)
        top, bottom = top - grow_top, bottom + grow_bottom
        left, right = left - grow_left, right + grow_right
    return list(zip(top.tolist(), bottom.tolist(), left.tolist(), right.tolist()))


def _reaches(line: np.ndarray, level: int) -> bool:
    """True if a pixel of a row or column slice is at least `level`: the max of a list, as a
    NumPy reduction costs more per call than a line of a small image takes."""
    return max(line.tolist()) >= level


def _first_beyond(sums: Iterable[int], allowance: float) -> int:
    """Index of the first running total of `sums` above `allowance` (0 if none is): Python ints,
    as a few hundred rows or columns cost less this way than in NumPy's calls."""
    total = 0
    for index, value in enumerate(sums):
        total += value
        if total > allowance:
            return index
    return 0


def _fit_digit_box(crop: np.ndarray) -> np.ndarray:
    """Scale the cropped ink so its longer side is DIGIT_BOX pixels, keeping the aspect ratio.

    Shrinking averages areas (Pillow BOX), which gives MNIST's anti-aliased grey edges
    without ringing; enlarging (tiny inputs) is bilinear. Works in float so thin strokes in
    a big image do not round away. The result's brightest pixel is set to 255, as in MNIST.
    """
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = crop.astype(np.float32)
    if size != (width, height):  # else already DIGIT_BOX on its longer side: no Pillow round trip
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        digit = np.clip(np.asarray(Image.fromarray(digit).resize(size, resample), dtype=np.float32), 0, None)
    peak = float(digit.max())
    if peak <= 0:
        raise NoInkError("no ink found (the image is blank or has too little contrast)")
    return digit * (255.0 / peak)


def _centre_on_canvas(digit: np.ndarray) -> np.ndarray:
    """Place the digit in a 28x28 canvas with its centre of mass at MNIST_CENTRE.

    The shift is rounded to whole pixels (no resampling), then clamped so the whole digit
    stays inside the canvas: a lopsided digit then touches an edge and its centre of mass
    stays off centre.
    """
    height, width = digit.shape
    total = float(digit.sum())
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / total
    centre_col = float(digit.sum(axis=0) @ np.arange(width)) / total
    top = min(max(math.floor(MNIST_CENTRE - centre_row + 0.5), 0), MNIST_SIZE - height)
    left = min(max(math.floor(MNIST_CENTRE - centre_col + 0.5), 0), MNIST_SIZE - width)
    canvas = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.uint8)
    canvas[top : top + height, left : left + width] = np.clip(np.rint(digit), 0, 255)
    return canvas


# --- small helpers --------------------------------------------------------------------------
