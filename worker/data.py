"""MNIST from its IDX files (gzip or raw, downloaded and sha256-checked when missing), users'
labelled image folders, and the tf.data pipelines that feed training.

Arrays stay uint8 until they are on the device: the model's first layers cast and normalise.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitq.common.errors import DataError, DigitqError
from digitq.common.paths import resolve_within
from digitq.common.settings import Settings

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
"""Base name and sha256 of each canonical .gz file, as published."""

DOWNLOAD_TIMEOUT = 30
"""Seconds to wait on one mirror before trying the next."""

IDX_UBYTE = 0x08


@dataclass
class Split:
    """Images (uint8, N x 28 x 28) and labels (uint8, N)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split | None
    name: str


# --- IDX -----------------------------------------------------------------------------------


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an IDX file's bytes (unsigned-byte type only, as MNIST uses)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number)")
    dtype, ndim = data[2], data[3]
    if dtype != IDX_UBYTE or not 1 <= ndim <= 4:
        raise DataError(f"{source}: unsupported IDX type 0x{dtype:02x} with {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header promises {expected} bytes of data, found {actual}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzip-compressed or raw IDX file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    return parse_idx(raw, str(path))


# --- MNIST files: find, download, verify ----------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(name: str, sha256: str, folder: Path, mirrors: tuple[str, ...]) -> Path:
    """Fetch `name`.gz from the first mirror that serves it with the right sha256."""
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                got = sha256_of(Path(tmp))
                if got != sha256:
                    reasons.append(f"{url}: sha256 mismatch (got {got[:12]}..., want {sha256[:12]}...)")
                    continue
                target = folder / (name + ".gz")
                os.replace(tmp, target)
                return target
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:  # URLError, timeouts and disk errors are all OSErrors
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
    raise DataError(
        f"MNIST file {name}.gz is missing from {folder} and no mirror served it "
        f"({'; '.join(reasons) or 'no mirrors configured'}); put the four MNIST files there "
        "or point DIGITQ_DATA_DIR at a folder whose mnist/ holds them"
    )


def find_mnist_file(name: str, sha256: str, folder: Path, mirrors: tuple[str, ...]) -> Path:
    """The .gz or raw IDX file for `name` in `folder`, downloading it when absent."""
    for candidate in (folder / (name + ".gz"), folder / name, folder / name.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return _download(name, sha256, folder, mirrors)


_MNIST_CACHE: dict = {}


def load_mnist(settings: Settings) -> dict[str, np.ndarray]:
    """The four MNIST arrays, cached in memory per file identity (path, size, mtime)."""
    folder = settings.mnist_dir
    paths = {key: find_mnist_file(name, sha, folder, settings.mnist_mirrors) for key, (name, sha) in MNIST_FILES.items()}
    ident = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    if _MNIST_CACHE.get("ident") != ident:
        arrays = {key: read_idx(p) for key, p in paths.items()}
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DataError(f"{paths[part + '_images']}: expected N x 28 x 28 images, got {images.shape}")
            if labels.ndim != 1 or len(labels) != len(images):
                raise DataError(
                    f"MNIST {part} set: {len(images)} images but {labels.shape[0] if labels.ndim else 0} labels"
                )
            if labels.size and labels.max() > 9:
                raise DataError(f"{paths[part + '_labels']}: labels must be 0..9, found {int(labels.max())}")
        _MNIST_CACHE.clear()
        _MNIST_CACHE.update(ident=ident, arrays=arrays)
    return _MNIST_CACHE["arrays"]


# --- training sets ---------------------------------------------------------------------------


def load_dataset(settings: Settings, dataset: str, validation_size: int, train_size: int | None,
                 test_size: int | None, seed: int) -> Dataset:
    """The train/validation/test splits a TrainRequest asks for.

    MNIST: validation is the last `validation_size` of the 60,000 training images, training the
    first `train_size` of the rest. A folder (sub-folders 0..9, below DIGITQ_DATA_DIR or
    DIGITQ_HOME): a seeded shuffle, then at most 20% held out for validation; its test set is
    MNIST's when the MNIST files are present.
    """
    if dataset == "mnist":
        m = load_mnist(settings)
        x, y = m["train_images"], m["train_labels"]
        n_val = min(validation_size, len(y) - 1)
        cut = len(y) - n_val
        n_train = cut if train_size is None else min(train_size, cut)
        train = Split(x[:n_train], y[:n_train])
        val = Split(x[cut:], y[cut:])
        test = Split(m["test_images"][:test_size], m["test_labels"][:test_size])
        return Dataset(train, val, test, "mnist")

    folder, x, y, _skipped = load_labelled_dataset(settings, dataset)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_val = min(validation_size, len(y) // 5)
    cut = len(y) - n_val
    n_train = cut if train_size is None else min(train_size, cut)
    try:
        m = load_mnist(settings)
        test = Split(m["test_images"][:test_size], m["test_labels"][:test_size])
    except DataError:
        test = None
    return Dataset(Split(x[:n_train], y[:n_train]), Split(x[cut:], y[cut:]), test, str(folder))


def load_labelled_dataset(settings: Settings, dataset: str) -> tuple[Path, np.ndarray, np.ndarray, list]:
    """A folder of sub-folders 0..9 below the worker's roots: (folder, images, labels, skipped files)."""
    from digitq.common.images import load_labelled_folder

    roots = [settings.data_dir, settings.home]
    folder = resolve_within(dataset, roots, base=settings.data_dir)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    try:
        x, y, skipped = load_labelled_folder(folder, within=[r.resolve() for r in roots])
    except DigitqError as exc:
        raise DataError(str(exc)) from None
    return folder, x, y, skipped


# --- tf.data ---------------------------------------------------------------------------------


PIPELINE_PARALLELISM = max(1, min(4, os.cpu_count() or 1))
"""Parallel calls of the augmentation map, and batches prefetched (fixed: see `_options`)."""


def _options():
    """tf.data options of every digitq pipeline: autotuning off.

    Destroying a tf.data iterator sometimes blocked the training thread for many seconds (gdb:
    the destructor waiting on a pipeline thread; MNIST, TF 2.21), mostly under MirroredStrategy,
    where most epoch starts stalled with one device. Autotuning off stopped the per-epoch
    stalls, but the one teardown at the end of `fit` still stalled now and then until one device
    stopped using MirroredStrategy (see devices.make_strategy). Fixed parallelism gave the same
    step times as autotuning.
    """
    import tensorflow as tf

    opts = tf.data.Options()
    opts.autotune.enabled = False
    return opts


def make_tf_dataset(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0, one_hot: bool = True,
                    augment=None, repeat: bool = False):
    """Batches of (images N x 28 x 28 x 1, one-hot float labels), prefetched.

    The whole split is one in-memory uint8 tensor (47 MB for all of MNIST); no Python runs per
    batch. `augment` (from `digitq.worker.augment`) transforms each batch's float pixels in the pipeline.

    `repeat` makes the dataset endless, pass after pass, each reshuffled and ending in the same
    partial batch as one pass would; `fit` then needs `steps_per_epoch`, and keeps one iterator
    for the whole run instead of making one per epoch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x[..., None], split.y))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(tf.cast(x, tf.float32)), y), num_parallel_calls=PIPELINE_PARALLELISM)
    if one_hot:
        ds = ds.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), 10)))
    return ds.prefetch(PIPELINE_PARALLELISM).with_options(_options())


def make_images_dataset(x: np.ndarray, batch_size: int):
    """Batches of images only (N x 28 x 28 x 1), for `model.predict`: the same options as training's
    pipelines, where Keras' own pipeline for a NumPy array would autotune (see `_options`)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    return ds.prefetch(2).with_options(_options())
