"""make_mnist10k.py: the CPU-budget MNIST .npz, from t10k files made here (no download)."""

import gzip
import struct

import numpy as np

import make_mnist10k
from helpers import run_script


def write_t10k(raw, n):
    """IDX files as MNIST ships them (gzipped): n images of 28 x 28 whose first pixel is their index."""
    raw.mkdir(parents=True)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    labels = (np.arange(n) % 10).astype(np.uint8)
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())


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
