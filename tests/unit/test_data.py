"""MNIST IDX reading and the download path (against an HTTP server of the test's own)."""

import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from functools import partial

import numpy as np
import pytest

from digitq.common.errors import DataError
from digitq.common.settings import load_settings
from digitq.worker import data


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def test_parse_idx_round_trip():
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(arr)), arr)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "unsupported IDX type"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b + b"xx", "trailing bytes"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b"", "bad magic"),
    ],
)
def test_bad_idx_is_a_clear_error(mutate, message):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match=message):
        data.parse_idx(mutate(good), "f")


def test_canonical_files_load_with_the_published_counts(home):
    m = data.load_mnist(load_settings())
    assert m["train_images"].shape == (60000, 28, 28) and m["test_images"].shape == (10000, 28, 28)
    assert np.bincount(m["train_labels"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(m["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _copy_mnist(src, dst, raw=False):
    dst.mkdir(parents=True)
    for name, _ in data.MNIST_FILES.values():
        if raw:
            (dst / name).write_bytes(gzip.decompress((src / (name + ".gz")).read_bytes()))
        else:
            shutil.copy(src / (name + ".gz"), dst / (name + ".gz"))


def test_raw_idx_files_are_accepted(tmp_path, data_dir, monkeypatch):
    _copy_mnist(data_dir / "mnist", tmp_path / "mnist", raw=True)
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(tmp_path))
    m = data.load_mnist(load_settings())
    assert m["test_labels"].shape == (10000,)


def test_image_label_count_mismatch(tmp_path, data_dir, monkeypatch):
    _copy_mnist(data_dir / "mnist", tmp_path / "mnist")
    labels = data.read_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:9000]))
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="10000 images but 9000 labels"):
        data.load_mnist(load_settings())


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server serving a folder; the test decides what the folder holds."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_missing_files_are_downloaded_and_verified(tmp_path, data_dir, http_mirror, monkeypatch):
    root, url = http_mirror
    for name, sha in data.MNIST_FILES.values():
        shutil.copy(data_dir / "mnist" / (name + ".gz"), root / (name + ".gz"))
    target = tmp_path / "data"
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(target))
    monkeypatch.setenv("DIGITQ_MNIST_MIRRORS", "http://127.0.0.1:1/," + url)  # first mirror is dead
    m = data.load_mnist(load_settings())
    assert m["train_labels"].shape == (60000,)
    for name, sha in data.MNIST_FILES.values():
        assert hashlib.sha256((target / "mnist" / (name + ".gz")).read_bytes()).hexdigest() == sha


def test_a_corrupted_download_is_refused_and_not_kept(tmp_path, data_dir, http_mirror, monkeypatch):
    root, url = http_mirror
    for name, _ in data.MNIST_FILES.values():
        shutil.copy(data_dir / "mnist" / (name + ".gz"), root / (name + ".gz"))
    bad = bytearray((root / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad[100] ^= 0xFF
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(bad))
    target = tmp_path / "data"
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(target))
    monkeypatch.setenv("DIGITQ_MNIST_MIRRORS", url)
    with pytest.raises(DataError) as exc:
        data.load_mnist(load_settings())
    msg = str(exc.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "sha256 mismatch" in msg and str(target / "mnist") in msg
    assert "\n" not in msg
    assert not (target / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((target / "mnist").glob(".download-*"))


def test_no_network_names_the_folder_to_fill(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("DIGITQ_MNIST_MIRRORS", "http://127.0.0.1:1/")
    with pytest.raises(DataError, match=r"missing from .*empty/mnist and no mirror served it .*DIGITQ_DATA_DIR"):
        data.load_mnist(load_settings())


def test_training_split_is_first_n_and_validation_is_the_last_n(home):
    ds = data.load_dataset(load_settings(), "mnist", validation_size=5000, train_size=1000, test_size=200, seed=0)
    m = data.load_mnist(load_settings())
    assert len(ds.train) == 1000 and len(ds.val) == 5000 and len(ds.test) == 200
    np.testing.assert_array_equal(ds.val.x, m["train_images"][55000:])
    full = data.load_dataset(load_settings(), "mnist", 5000, None, None, 0)
    assert len(full.train) == 55000 and len(full.test) == 10000
