"""Dataset loaders on tiny files made here: no network, no /work/shared."""
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from common import CLIError, Dataset, float_images, load_dataset

SIZE = 21  # side of the fake Omniglot images: a stroke at (row, column) = (character, drawer - 1)


def write_omniglot_set(folder, alphabets):
    """Official layout <alphabet>/<character>/<id>_<drawer>.png, 20 drawers, black strokes on white.

    The one stroke pixel of each image sits at row = the character's index in sorted order and
    column = drawer - 1, so every image says which label and drawer it must get.
    """
    label = 0
    for alphabet, n_characters in sorted(alphabets.items()):
        for c in range(n_characters):
            character = folder / alphabet / f"character{c + 1:02d}"
            character.mkdir(parents=True)
            for drawer in range(1, 21):
                pixels = np.full((SIZE, SIZE), 255, dtype=np.uint8)
                pixels[label, drawer - 1] = 0
                Image.fromarray(pixels).convert("1").save(character / f"{900 + label:04d}_{drawer:02d}.png")
            label += 1


def stroke_positions(x):
    """(row, column) of the single 1-pixel of each 1 x SIZE x SIZE image."""
    x = float_images(x)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert (x.sum(dim=(1, 2, 3)) == 1).all()
    flat = x.flatten(1).argmax(dim=1)
    return flat // SIZE, flat % SIZE


@pytest.fixture
def omniglot_dir(tmp_path):
    # "Beta" is written first, "Alpha" must still come first in the labels.
    write_omniglot_set(tmp_path / "images_background", {"Beta": 2, "Alpha": 3})
    write_omniglot_set(tmp_path / "images_evaluation", {"Gamma": 2})
    return tmp_path


def test_digits_shapes_range_and_fixed_split():
    torch.manual_seed(123)
    first = load_dataset("digits")
    torch.manual_seed(456)
    second = load_dataset("digits")
    assert isinstance(first, Dataset) and first.image_shape == (1, 8, 8) and first.num_classes == 10
    assert (len(first.x_train), len(first.x_val), len(first.x_test)) == (1257, 269, 271)
    for x, y in ((first.x_train, first.y_train), (first.x_val, first.y_val), (first.x_test, first.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == len(y)
        assert x.min() >= 0 and x.max() == 1
    # The three splits hold every one of the 1,797 images once.
    together = torch.cat([first.x_train, first.x_val, first.x_test]).flatten(1)
    everything = torch.tensor(load_digits().images, dtype=torch.float32).flatten(1) / 16
    for a, b in zip(together.unique(dim=0, return_counts=True), everything.unique(dim=0, return_counts=True)):
        assert torch.equal(a, b)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)


def test_omniglot_split_labels_eval_and_resize(omniglot_dir):
    data = load_dataset("omniglot", data_dir=str(omniglot_dir))
    assert data.image_shape == (1, SIZE, SIZE) and data.num_classes == 5

    # The paper's split: drawers 1-19 train (5 characters x 19), drawer 20 tests.
    rows, columns = stroke_positions(data.x_train)
    assert len(data.x_train) == 95 and set((columns + 1).tolist()) == set(range(1, 20))
    assert torch.equal(rows, data.y_train) and torch.equal(columns + 1, data.extra["drawer_train"])
    rows, columns = stroke_positions(data.x_test)
    assert len(data.x_test) == 5 and (columns == 19).all() and (data.extra["drawer_test"] == 20).all()
    assert torch.equal(rows, data.y_test)

    # Validation: a fixed 5 % of the training images, which stay in training.
    assert len(data.x_val) == 5
    assert all((data.x_train == image).all(dim=(1, 2, 3)).any() for image in data.x_val)
    assert torch.equal(load_dataset("omniglot", data_dir=str(omniglot_dir)).x_val, data.x_val)

    # The evaluation set: its own characters, indexed from 0, all 20 drawers.
    rows, columns = stroke_positions(data.extra["x_eval"])
    assert len(data.extra["x_eval"]) == 40
    assert torch.equal(rows, data.extra["y_eval"]) and set(data.extra["y_eval"].tolist()) == {0, 1}
    assert torch.equal(columns + 1, data.extra["drawer_eval"])

    small = load_dataset("omniglot", data_dir=str(omniglot_dir), image_size=8)
    assert small.image_shape == (1, 8, 8) and small.extra["x_eval"].shape == (40, 1, 8, 8)
    assert small.x_test.dtype == torch.uint8 and small.x_test.sum() > 0  # resized, still bytes


def test_omniglot_cache_serves_without_the_pngs(omniglot_dir, capsys):
    first = load_dataset("omniglot", data_dir=str(omniglot_dir))
    assert (omniglot_dir / "cache" / "omniglot.pt").is_file()
    assert not list((omniglot_dir / "cache").glob("*.tmp"))
    shutil.rmtree(omniglot_dir / "images_background")
    shutil.rmtree(omniglot_dir / "images_evaluation")
    capsys.readouterr()
    second = load_dataset("omniglot", data_dir=str(omniglot_dir))
    assert "cache" in capsys.readouterr().out
    for key in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert all(torch.equal(first.extra[key], second.extra[key]) for key in first.extra)


def test_omniglot_background_only_has_empty_eval(tmp_path, capsys):
    write_omniglot_set(tmp_path / "images_background", {"Alpha": 2})
    data = load_dataset("omniglot", data_dir=str(tmp_path))
    assert "evaluation set" in capsys.readouterr().out
    assert data.extra["x_eval"].shape == (0, 1, SIZE, SIZE) and data.extra["y_eval"].shape == (0,)
    assert len(data.x_train) == 38 and data.num_classes == 2


def test_npz_uint8_nhw_with_validation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 5, 6), dtype=np.uint8)
    y = np.arange(30) % 4
    path = tmp_path / "set.npz"
    np.savez(path, x_train=x[:20], y_train=y[:20], x_val=x[20:25], y_val=y[20:25], x_test=x[25:], y_test=y[25:])
    data = load_dataset(str(path))
    assert data.image_shape == (1, 5, 6) and data.num_classes == 4
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (20, 5, 5)
    assert data.x_val.dtype == torch.uint8 and torch.equal(data.x_val[:, 0], torch.from_numpy(x[20:25]))
    assert torch.equal(data.y_test, torch.from_numpy(y[25:]))
    assert load_dataset(str(path), image_size=4).x_train.shape == (20, 1, 4, 4)


def test_npz_float_nchw_without_validation_takes_last_tenth(tmp_path, capsys):
    x = np.random.default_rng(1).random((40, 3, 4, 4)).astype(np.float64)
    path = tmp_path / "set.npz"
    np.savez(path, x_train=x[:30], y_train=np.full(30, -1), x_test=x[30:], y_test=np.full(10, -1))
    data = load_dataset(str(path))
    assert "validation" in capsys.readouterr().out
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (27, 3, 10)
    assert torch.allclose(data.x_val, torch.from_numpy(x[27:30]).float())
    assert data.image_shape == (3, 4, 4) and data.num_classes == 0


@pytest.mark.parametrize("arrays, words", [
    ({"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 5, 5), np.uint8)},
     ["y_test"]),
    ({"x_train": np.full((4, 5, 5), 2.0), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 5, 5)),
      "y_test": np.zeros(2, int)}, ["x_train", "[0, 1]", "uint8"]),
    ({"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.zeros((4, 2), int),
      "x_test": np.zeros((2, 5, 5), np.uint8), "y_test": np.zeros(2, int)}, ["y_train", "(4,)"]),
    ({"x_train": np.zeros((4, 25), np.uint8), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 25), np.uint8),
      "y_test": np.zeros(2, int)}, ["x_train", "N x H x W"]),
    ({"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 5, 5), np.uint8),
      "y_test": np.zeros(2, int), "x_val": np.zeros((1, 5, 5), np.uint8)}, ["y_val"]),
    ({"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 6, 6), np.uint8),
      "y_test": np.zeros(2, int)}, ["x_test", "same"]),
    *(({"x_train": np.zeros((4, 6, 5, c), np.uint8), "y_train": np.zeros(4, int),  # channels last: RGBA, RGB, grey
        "x_test": np.zeros((2, 6, 5, c), np.uint8), "y_test": np.zeros(2, int)}, ["x_train", "channels last"])
      for c in (4, 3, 2, 1)),
    ({"x_train": np.zeros((4, 6, 5, 7), np.uint8), "y_train": np.zeros(4, int),
      "x_test": np.zeros((2, 6, 5, 7), np.uint8), "y_test": np.zeros(2, int)}, ["x_train", "6 channels", "1 to 4"]),
])
def test_npz_bad_content_is_a_one_line_cli_error(tmp_path, arrays, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(CLIError) as error:
        load_dataset(str(path))
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_npz_missing_file(tmp_path):
    with pytest.raises(CLIError, match="no such file"):
        load_dataset(str(tmp_path / "absent.npz"))


def write_idx(path, array):
    """An uncompressed IDX file (unsigned bytes) as MNIST ships them."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_torchvision_raw_files_then_from_cache(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    x_train, x_test = rng.integers(0, 256, (60, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    y_train, y_test = np.arange(60) % 10, np.arange(10)[::-1]
    write_idx(raw / "train-images-idx3-ubyte", x_train)
    write_idx(raw / "train-labels-idx1-ubyte", y_train)
    write_idx(raw / "t10k-images-idx3-ubyte", x_test)
    write_idx(raw / "t10k-labels-idx1-ubyte", y_test)

    data = load_dataset("mnist", data_dir=str(tmp_path))
    # The paper's split, scaled: the first five sixths train, the last sixth validates.
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (50, 10, 10)
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_val.dtype == torch.uint8 and torch.equal(data.x_val[:, 0], torch.from_numpy(x_train[50:]))
    assert torch.equal(data.y_train, torch.from_numpy(y_train[:50]))
    assert torch.equal(data.y_test, torch.from_numpy(y_test.copy()))

    shutil.rmtree(tmp_path / "MNIST")
    assert torch.equal(load_dataset("mnist", data_dir=str(tmp_path)).x_test, data.x_test)


@pytest.mark.parametrize("name, expected", [
    ("mnist", "train-images-idx3-ubyte"),
    ("omniglot", "images_background"),
    ("cifar10", "cifar-10-batches-py"),
    ("svhn", "train_32x32.mat"),
    ("sprites", "sprites_splits.mat"),
])
def test_missing_data_with_failing_download_is_one_cli_error(tmp_path, name, expected):
    with pytest.raises(CLIError) as error:
        load_dataset(name, data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and expected in message and "--dataset digits" in message, message


def test_sprites_asks_for_h5py_only_once_its_files_are_there(tmp_path, monkeypatch):
    """h5py is optional: without it, missing files are still named first (above), and present
    files get one line that says how to install it."""
    import importlib.util

    import scipy.io

    folder = tmp_path / "data" / "sprites"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "sprites_splits.mat", {"trainidx": np.array([[1]]), "testidx": np.array([[1]]),
                                                     "validx": np.array([[1]])})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else find_spec(name, *a))
    with pytest.raises(CLIError, match="pip install h5py"):
        load_dataset("sprites", data_dir=str(tmp_path))


def test_missing_data_without_download(tmp_path):
    with pytest.raises(CLIError, match="--dataset digits"):
        load_dataset("omniglot", data_dir=str(tmp_path), download=False)


def test_unknown_name():
    with pytest.raises(CLIError, match="unknown dataset 'foo': use digits, mnist"):
        load_dataset("foo")


def write_sprites(folder, n_characters, frames_per_animation=1):
    """Reed et al.'s layout: MATLAB v7.3 sprites_<n>.mat (21 animations of 10800 x frames, which HDF5
    stores transposed) and sprites_splits.mat with 1-based trainidx, validx, testidx."""
    h5py = pytest.importorskip("h5py")
    import scipy.io

    folder.mkdir(parents=True)
    for n in range(1, n_characters + 1):
        with h5py.File(folder / f"sprites_{n}.mat", "w") as f:
            references = []
            for a in range(21):
                frames = np.zeros((frames_per_animation, 10800))
                # MATLAB's column-major 60 x 60 x 3: pixel (row h, column w, channel c) is h + 60 w + 3600 c.
                frames[:, n + 60 * a + 3600 * 2] = 1.0  # channel 2, row = character, column = animation
                references.append(f.create_dataset(f"#refs#/{a}", data=frames).ref)
            f.create_dataset("sprites", data=np.array(references, dtype=h5py.ref_dtype).reshape(21, 1))
            f.create_dataset("labels", data=np.arange(n, n + 7, dtype=np.float64).reshape(7, 1))
    scipy.io.savemat(folder / "sprites_splits.mat", {"trainidx": np.array([[1, 2, 3]]), "validx": np.array([[4]]),
                                                     "testidx": np.array([[5]])})


def test_sprites_layout_splits_and_attributes(tmp_path):
    write_sprites(tmp_path / "data" / "sprites", n_characters=5)
    data = load_dataset("sprites", data_dir=str(tmp_path))
    assert data.image_shape == (3, 60, 60) and data.num_classes == 0
    assert (len(data.x_train), len(data.x_test), len(data.extra["x_eval"])) == (63, 21, 21)
    assert len(data.x_val) == 3 and (data.y_train == -1).all()
    # Character 5 (test): its one lit pixel per frame is in channel 2, row 5, column = animation.
    lit = data.x_test.nonzero()
    assert (lit[:, 1] == 2).all() and (lit[:, 2] == 5).all() and torch.equal(lit[:, 3], torch.arange(21))
    assert (float_images(data.x_test).sum(dim=(1, 2, 3)) == 1).all()
    assert torch.equal(data.extra["attributes_eval"][0], torch.arange(4, 11))
    assert data.extra["attributes_train"].shape == (63, 7)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_npz_images_of_one_to_four_channels_first_train_and_draw(channels, tmp_path):
    import aae
    from helpers import run_script

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x_train=rng.integers(0, 256, (40, channels, 6, 6), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40), x_test=rng.integers(0, 256, (10, channels, 6, 6), dtype=np.uint8),
             y_test=rng.integers(0, 10, 10))
    out = tmp_path / "run"
    assert run_script(aae.main, ["--dataset", str(tmp_path / "c.npz"), "--epochs", "1", "--batch-size", "8",
                                 "--out", str(out)]) == 0
    assert (out / "samples.png").is_file() and (out / "checkpoint.pt").is_file()


def zip_folder(folder, archive):
    """`folder` zipped as Omniglot's archives are: one top folder of its name."""
    shutil.make_archive(str(archive).removesuffix(".zip"), "zip", folder.parent, folder.name)


@pytest.mark.parametrize("layout", ["torchvision", "zips", "zips in omniglot-py", "background zip only"])
def test_omniglot_where_a_user_already_has_it(layout, tmp_path, capsys):
    made = tmp_path / "made"
    write_omniglot_set(made / "images_background", {"Beta": 2, "Alpha": 3})
    write_omniglot_set(made / "images_evaluation", {"Gamma": 2})
    data_dir = tmp_path / "data"
    if layout == "torchvision":  # torchvision.datasets.Omniglot(root="data") unpacks into data/omniglot-py/
        shutil.copytree(made, data_dir / "omniglot-py")
    else:
        where = data_dir / "omniglot-py" if layout == "zips in omniglot-py" else data_dir
        where.mkdir(parents=True)
        for name in ("images_background",) if layout == "background zip only" else ("images_background",
                                                                                      "images_evaluation"):
            zip_folder(made / name, where / f"{name}.zip")
    data = load_dataset("omniglot", str(data_dir))
    assert data.num_classes == 5 and len(data.x_train) == 5 * 19 and len(data.x_test) == 5
    assert len(data.extra["x_eval"]) == (0 if layout == "background zip only" else 2 * 20)
    rows, _ = stroke_positions(data.x_test)
    assert rows.tolist() == list(range(5))  # Alpha's characters first, each image its own label
    assert not list(data_dir.rglob(".partial-*"))


def test_omniglot_subset_archive_or_a_damaged_zip_is_one_line_naming_what_to_run(tmp_path):
    (tmp_path / "images_background_small1.zip").write_bytes(b"PK")
    with pytest.raises(CLIError) as error:
        load_dataset("omniglot", str(tmp_path))
    assert str(error.value) == (f"{tmp_path}/images_background_small1.zip is Omniglot's 5-alphabet subset: split it "
                                f"into {tmp_path} once with python benchmarks/make_omniglot_small.py --zip "
                                f"{tmp_path}/images_background_small1.zip --out {tmp_path}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "images_background.zip").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(CLIError, match="cannot unpack .*images_background.zip .*download it again"):
        load_dataset("omniglot", str(tmp_path / "bad"))
    assert [p.name for p in (tmp_path / "bad").iterdir()] == ["images_background.zip"]
