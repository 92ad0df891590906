"""make_mnist10k.py: the CPU-budget MNIST .npz, from t10k files made here (no download)."""

import gzip
import struct

import numpy as np
import pytest

import make_mnist10k
from helpers import run_script


def write_t10k(raw, n, n_labels=None):
    """IDX files as MNIST ships them (gzipped): n images of 28 x 28 whose first pixel is their index."""
    raw.mkdir(parents=True, exist_ok=True)
    n_labels = n if n_labels is None else n_labels
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    labels = (np.arange(n_labels) % 10).astype(np.uint8)
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n_labels) + labels.tobytes())


def test_the_splits_are_a_fixed_shuffle_of_every_t10k_digit_in_eight_one_one(tmp_path, capsys):
    write_t10k(tmp_path / "data" / "MNIST" / "raw", 100)
    for name in ("a.npz", "b.npz"):
        assert run_script(make_mnist10k.main, ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / name)]) == 0
    assert "80 / 10 / 10" in capsys.readouterr().out
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert all(np.array_equal(a[key], b[key]) for key in a.files)  # the same file every time
    index = np.concatenate([a[f"x_{split}"][:, 0, 0] for split in ("train", "val", "test")])
    assert sorted(index) == list(range(100)) and list(index) != list(range(100))  # every digit once, shuffled
    assert [len(a[f"y_{split}"]) for split in ("train", "val", "test")] == [80, 10, 10]
    assert np.array_equal(a["y_train"], a["x_train"][:, 0, 0] % 10) and a["y_train"].dtype == np.int64


def test_without_the_files_or_a_network_it_is_one_line(tmp_path, capsys):
    assert run_script(make_mnist10k.main, ["--data-dir", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t10k" in err[0] and not (tmp_path / "x.npz").exists()


def cut_off(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def html_page(path):
    path.write_bytes(b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>")


def ungzipped_html_page(path):
    path.with_suffix("").write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")  # beside the .gz, read first
    path.unlink()


def wrong_count(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:4] + struct.pack(">I", 101) + data[8:])  # the header announces one image more than there is


@pytest.mark.parametrize("damage, file, words", [
    (cut_off, "t10k-images-idx3-ubyte.gz", ["damaged or cut off", "delete it"]),
    (html_page, "t10k-images-idx3-ubyte.gz", ["damaged or cut off"]),
    (ungzipped_html_page, "t10k-images-idx3-ubyte.gz", ["not an MNIST images file", "<!DOCTYPE"]),
    (ungzipped_html_page, "t10k-labels-idx1-ubyte.gz", ["not an MNIST labels file"]),
    (wrong_count, "t10k-images-idx3-ubyte.gz", ["cut off or not MNIST's"]),
    (lambda path: write_t10k(path.parent, 100, n_labels=600), None, ["100 images", "600 labels"]),
])
def test_a_damaged_or_mismatched_t10k_file_is_one_line_and_writes_nothing(damage, file, words, tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_t10k(raw, 100)
    damage(raw / (file or "t10k-images-idx3-ubyte.gz"))
    before = sorted(p.name for p in raw.iterdir())
    argv = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "x.npz")]
    assert run_script(make_mnist10k.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(word in err[0] for word in words), err
    assert not (tmp_path / "x.npz").exists() and sorted(p.name for p in raw.iterdir()) == before  # nothing new
    for path in raw.iterdir():  # the whole files put back: it works, nothing earlier is in the way
        path.unlink()
    write_t10k(raw, 100)
    assert run_script(make_mnist10k.main, argv) == 0
