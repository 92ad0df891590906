"""Plumbing shared by every model script: the command line, datasets, corruption, the
Parzen-window estimator, and the run folder with the training loop around a model's step.

Nothing here is a model. Each model's networks, losses and training step live in its own
file (aae.py, daae.py, ...), which calls into this one for the parts every paper shares.

Run folder (the same for every script), `--out`, default `runs/<model>-<dataset>`:
    config.json     every setting of the run
    checkpoint.pt   networks, optimisers, epoch, RNG states; written atomically every epoch (--save-every)
    log.csv         mean losses and seconds per epoch
    losses.png      the curves of log.csv
    samples.png     the latest sample grid; samples/epoch_NNN.png one per epoch (--save-every)
    .lock           the process id of the run in the folder, locked while it runs (one run at a time)

A trained run is loaded back with load_run (run folder -> model in eval mode), as eval.py does.
"""

import argparse
import csv
import importlib.util
import json
import math
import os
import random
import re
import shlex
import signal
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageOps
from sklearn.datasets import load_digits
from torchvision.datasets import utils as torchvision_utils
from tqdm import tqdm

try:
    import fcntl  # the run folder's lock (POSIX)
except ImportError:  # Windows
    fcntl = None

# ---------------------------------------------------------------------------------------------
# Command line: the flags every script shares, and errors as one line
# ---------------------------------------------------------------------------------------------


class CLIError(Exception):
    """A mistake the user can fix. Scripts print it as one line and exit with status 2."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the run was saved and can be resumed."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) that points to --help."""

    def error(self, message):
        raise CLIError(f"{message} (see --help)")


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


MAX_SIGMA = 10.0  # pixels are in [0, 1]: noise ten times their range leaves nothing to denoise


def corruption_sigma(text):
    """--sigma: zero or positive, and not so large that the corrupted images are noise alone."""
    value = non_negative_float(text)
    if value > MAX_SIGMA:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIGMA:g} (pixels are in [0, 1]; the papers use "
                                         f"0.25-0.5), got {text}")
    return value


def seed_value(text):
    """--seed: torch takes seeds of 64 bits, so a larger one is refused here rather than mid-start."""
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2^63 - 1, got {text}")
    return value


DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")


def model_parser(model, description):
    """The flags every model script has. Defaults are None: SHARED_DEFAULTS and the dataset's row
    of the model's table of paper settings fill them in (see start_run), so a flag given
    overrides them, and a resumed run can tell the flags given from the ones left out.
    describe_defaults lists that table at the end of --help."""
    parser = ArgumentParser(
        prog=f"{model}.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset",
                        help="digits (offline, default), mnist, omniglot, cifar10, svhn, celeba, sprites, "
                             "or a .npz file with x_train, y_train, x_test, y_test [, x_val, y_val]")
    parser.add_argument("--data-dir", help="where datasets are found or downloaded (default: data)")
    parser.add_argument("--image-size", type=positive_int, help="resize images to this square size")
    parser.add_argument("--epochs", type=positive_int, help="total number of epochs (also when resuming)")
    parser.add_argument("--batch-size", type=positive_int, help="images per mini-batch")
    parser.add_argument("--lr", type=positive_float,
                        help="learning rate of the optimisers (of all of them, unless a script's own flag such as "
                             "daae.py's --adversarial-lr sets some)")
    parser.add_argument("--latent-dim", type=positive_int, help="size of the code z")
    parser.add_argument("--seed", type=seed_value, help="seed of every random number generator (default: 0)")
    parser.add_argument("--out", help="run folder (default: runs/<model>-<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32 (default), or bf16: the step's matmuls in bfloat16 under torch.autocast, weights, "
                             "optimiser state and losses in float32; only where the hardware has bfloat16 (CPUs "
                             "with AVX512-BF16 or AMX, recent GPUs), elsewhere the run says so and stays fp32")
    parser.add_argument("--save-every", type=positive_int,
                        help="write the checkpoint and the pictures every this many epochs (default 1); the last "
                             "epoch's are always written, and so is a checkpoint on Ctrl-C or SIGTERM")
    add_device_flags(parser)
    return parser


def add_device_flags(parser):
    parser.add_argument("--device", choices=DEVICES,
                        help="where to compute (default auto: CUDA when there is one, else the CPU; mps, "
                             "Apple's GPUs, only when asked for)")
    parser.add_argument("--gpu", dest="device", action="store_const", const="cuda",
                        help="the same as --device cuda")


def describe_defaults(parser, defaults):
    """Add to --help each dataset's defaults for the flags the parser has (the papers' settings)."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    lines = ["defaults per dataset (a flag given overrides its default; a .npz file takes mnist's row):"]
    for name, row in defaults.items():
        settings = [f"{flags[key]} {_flag_value(value)}" for key, value in row.items()
                    if key in flags and value is not None and not isinstance(value, bool)]
        lines.append(f"  {name:<9} " + ", ".join(settings))
    parser.epilog = "\n".join(lines)
    return parser


def _flag_value(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def cli(main):
    """Run main() as a command: user errors are one line on stderr, never a traceback."""
    try:
        main()
    except CLIError as error:
        discard_unstarted_runs()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        discard_unstarted_runs()
        # What the up-front checks (check_memory) could not foresee: activations, a busy machine.
        print(f"error: out of memory ({first_line(error, 100)}): lower --batch-size, or the sizes you raised "
              "(--latent-dim, --image-size, --M, --channels)", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _is_out_of_memory(error):
    text = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text \
        or "out of memory" in text or "not enough memory" in text


def first_line(error, limit=160):
    """The first line of an exception's message, cut at a word (not mid-word) when it is long."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def memory_size(device):
    """Bytes of memory of `device`: the GPU's, else the machine's RAM (unknown: taken as 1 TiB)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 2**40


def check_memory(nbytes, what, flags, device):
    """Refuse, naming `flags`, when `nbytes` of tensors cannot fit in the device's memory at all,
    before any is allocated (a failed allocation in the middle of a run is a traceback, or the
    kernel's out-of-memory kill). Sizes that fit only when the machine is idle are left to cli()."""
    total = memory_size(device)
    if nbytes > total:
        raise CLIError(f"{what} would take {nbytes / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB of "
                       f"memory of {device.type}: choose a smaller {' or '.join(flags)}")


def build_model(build, config, device, flags=("--latent-dim", "--image-size")):
    """build(config), moved to `device`, once its parameters are known to fit: the networks are
    first made on the "meta" device (shapes only, no memory), and training needs about four
    copies of the weights (weights, gradients, Adam's two moments)."""
    with torch.device("meta"):
        size = sum(p.numel() for p in build(config).parameters())
    check_memory(16 * size, f"the networks' {size:,} parameters", flags, device)
    return build(config).to(device)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OMNIGLOT_ZIPS = {  # the archives and checksums torchvision.datasets.Omniglot uses
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
# Reed et al. (2015), "Deep Visual Analogy-Making": sprites, cars and shapes in one archive.
SPRITES_URL = "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz"

OFFLINE_HINT = "or use --dataset digits, which works offline"  # eval.py, which has no --dataset, says otherwise
UNKNOWN_DATASET = ("unknown dataset '{name}': use digits, mnist, omniglot, cifar10, svhn, celeba, sprites "
                   "or a path to a .npz file")
EXPECTED_FILES = {  # what a user must put under --data-dir when downloads fail
    "mnist": "MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte (or their .gz)",
    "cifar10": "cifar-10-batches-py/ (cifar-10-python.tar.gz unpacked)",
    "svhn": "svhn/train_32x32.mat and svhn/test_32x32.mat",
    "celeba": "celeba/ with img_align_celeba/ (or img_align_celeba.zip), list_attr_celeba.txt, "
    "identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt, list_eval_partition.txt",
    "omniglot": "images_background/ and images_evaluation/ (images_background.zip and images_evaluation.zip "
    f"from {OMNIGLOT_URL}, unzipped)",
    "sprites": f"data/sprites/ with sprites_splits.mat and sprites_<n>.mat ({SPRITES_URL} unpacked)",
}


@dataclass
class Dataset:
    """Every split as N x C x H x W images on the CPU, kept as they come: uint8 (0-255) for the
    datasets stored as bytes (every one but digits and .npz files of floats), else float32 in
    [0, 1]. float_images turns a batch of either into float32 in [0, 1]; a whole split is never
    converted, since float32 takes four times the memory of uint8 (CelebA: 10 GB, not 2.5).

    y is int64: class labels (-1 where a dataset has none) or, for CelebA, N x 40 attributes in
    {0, 1}. extra holds a dataset's other tensors; keys starting with "x_" are images (the
    evaluation sets of Omniglot and Sprites), stored and resized like the splits.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 0
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        extra_images = "".join(f", {key} {len(x)}" for key, x in self.extra.items() if key.startswith("x_"))
        return (f"{self.name}: {c}x{h}x{w}, train {len(self.x_train)}, val {len(self.x_val)}, "
                f"test {len(self.x_test)}{extra_images}{classes}")


def load_dataset(name: str, data_dir: str = "data", image_size: int | None = None,
                 download: bool = True) -> Dataset:
    """Load digits, mnist, omniglot, cifar10, svhn, celeba, sprites or a .npz file, split in three.

    The raw files of every dataset but digits and .npz are decoded once and cached as uint8 in
    data_dir/cache/<name>.pt; image_size resizes every image to image_size x image_size (uint8
    images stay uint8, rounded, as torchvision resizes them).
    """
    if image_size is not None and image_size < 1:
        raise CLIError(f"--image-size must be a positive integer, got {image_size}")
    if name.endswith(".npz"):
        arrays = _load_npz(name)
    elif name == "digits":
        arrays = _load_digits()
    elif name in CACHED_DATASETS:
        arrays = _load_cached(name, data_dir, lambda: CACHED_DATASETS[name](data_dir, download))
    else:
        raise unknown_dataset(name)
    if image_size is not None:  # resized: refuse a size that cannot fit before allocating it
        every_image = [arrays[key] for key in ("x_train", "x_val", "x_test")]
        every_image += [x for key, x in arrays["extra"].items() if key.startswith("x_")]
        channels, bytes_per_pixel = arrays["x_train"].shape[1], arrays["x_train"].element_size()
        nbytes = sum(len(x) for x in every_image) * channels * image_size**2 * bytes_per_pixel
        check_memory(nbytes, f"{name} at {image_size}x{image_size}", ["--image-size"], torch.device("cpu"))

    def images(x):
        return _resized(x, image_size)

    extra = {key: images(value) if key.startswith("x_") else value for key, value in arrays["extra"].items()}
    return Dataset(name, images(arrays["x_train"]), arrays["y_train"], images(arrays["x_val"]), arrays["y_val"],
                   images(arrays["x_test"]), arrays["y_test"], arrays["num_classes"], extra)


def unknown_dataset(name: str) -> CLIError:
    if os.path.isdir(name):
        return CLIError(f"--dataset {name} is a folder: give a dataset's name, or a .npz file of its images "
                        "(see --help)")
    return CLIError(UNKNOWN_DATASET.format(name=name))


def _splits(train, val, test, num_classes: int, extra: dict | None = None) -> dict:
    """The (x, y) pairs of the three splits as the dict that is cached and turned into a Dataset."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test,
            "y_test": y_test, "num_classes": num_classes, "extra": extra or {}}


def _split_off_last(x: torch.Tensor, y: torch.Tensor, n: int):
    """((x, y) without its last n rows, (x, y) of its last n rows)."""
    return (x[:-n], y[:-n]), (x[-n:], y[-n:])


def _fixed_subset(n: int, fraction: float) -> torch.Tensor:
    """Sorted indices of a random fraction of range(n), the same on every run (seed 0)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order[:round(fraction * n)].sort().values


def _resized(x: torch.Tensor, image_size: int | None, chunk: int = 4096) -> torch.Tensor:
    """uint8 (0-255) or float ([0, 1]) images resized to image_size x image_size, in their own dtype
    (uint8 rounded), or as they are when image_size is None or already theirs."""
    if image_size is None or tuple(x.shape[-2:]) == (image_size, image_size):
        return x if x.dtype == torch.uint8 else x.float()
    out = torch.empty(len(x), x.shape[1], image_size, image_size, dtype=torch.uint8 if x.dtype == torch.uint8
                      else torch.float32)
    for start in range(0, len(x), chunk):  # in chunks: no float copy of all the images at once
        part = F.interpolate(float_images(x[start:start + chunk]), size=(image_size, image_size), mode="bilinear",
                             antialias=True, align_corners=False).clamp_(0, 1)
        out[start:start + chunk] = part.mul_(255).round_() if x.dtype == torch.uint8 else part
    return out


def float_images(x: torch.Tensor) -> torch.Tensor:
    """Stored images as floats in [0, 1] on x's device: uint8 (0-255) become float32, float images
    are returned as they are. Called on batches: converting after the copy to a GPU also moves a
    quarter of the bytes."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def _load_cached(name: str, data_dir: str, build) -> dict:
    """build()'s uint8 splits, saved to data_dir/cache/<name>.pt on the first call and read from it after."""
    path = os.path.join(data_dir, "cache", f"{name}.pt")
    if os.path.isfile(path):
        print(f"{name}: loading the cache {path} (delete it to rebuild from the raw files)")
        try:
            arrays = torch.load(path, weights_only=True)
            if isinstance(arrays, dict) and set(arrays) >= {"x_train", "y_train", "x_test", "y_test"}:
                return arrays
            reason = "not the splits of a dataset"
        except Exception as error:  # a truncated or damaged file: torch names many kinds of failure
            reason = first_line(error, 80)
        # The cache is only a copy of the raw files: rebuild it from them (or say which are missing).
        print(f"{name}: the cache {path} is damaged ({reason}); rebuilding it from the raw files", file=sys.stderr)
    arrays = build()
    with atomic_path(path) as tmp:  # an interrupted run never leaves half a cache behind
        torch.save(arrays, tmp)
    return arrays


def _fetch(name: str, data_dir: str, get, *args, **kwargs):
    """get(*args, **kwargs) the raw data; a missing file or a failed download becomes one CLIError line."""
    try:
        return get(*args, **kwargs)
    except (OSError, RuntimeError, ImportError) as error:  # URLError is an OSError
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]  # the cause, when it lists several
        raise CLIError(f"cannot load {name} ({reason}): expected {EXPECTED_FILES[name]} in "
                       f"{os.path.abspath(data_dir)}; put the files there, {OFFLINE_HINT}") from None


def _download_archive(url: str, data_dir: str, download: bool, md5: str | None = None) -> None:
    """Download url into data_dir and unpack it there."""
    if not download:
        raise RuntimeError("not found, and downloading is off")
    torchvision_utils.download_and_extract_archive(url, data_dir, md5=md5)


def _load_digits() -> dict:
    """scikit-learn's 1,797 8x8 digits, split 70/15/15 % the same way whatever the user's --seed."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_train, n_val = int(0.7 * len(x)), int(0.15 * len(x))
    train, val, test = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return _splits((x[train], y[train]), (x[val], y[val]), (x[test], y[test]), num_classes=10)


def _build_mnist(data_dir: str, download: bool) -> dict:
    train = _fetch("mnist", data_dir, torchvision.datasets.MNIST, data_dir, train=True, download=download)
    test = _fetch("mnist", data_dir, torchvision.datasets.MNIST, data_dir, train=False, download=download)
    # The paper's split: 50,000 train / the last 10,000 of the official training set as validation;
    # written as a sixth so that a smaller copy of the files splits the same way.
    train, val = _split_off_last(train.data.unsqueeze(1), train.targets, len(train.data) // 6)
    return _splits(train, val, (test.data.unsqueeze(1), test.targets), num_classes=10)


def _build_cifar10(data_dir: str, download: bool) -> dict:
    train = _fetch("cifar10", data_dir, torchvision.datasets.CIFAR10, data_dir, train=True, download=download)
    test = _fetch("cifar10", data_dir, torchvision.datasets.CIFAR10, data_dir, train=False, download=download)

    def tensors(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    train, val = _split_off_last(*tensors(train), 5000)
    return _splits(train, val, tensors(test), num_classes=10)


def _build_svhn(data_dir: str, download: bool) -> dict:
    root = os.path.join(data_dir, "svhn")  # its own folder, like the other datasets (torchvision uses root itself)
    train = _fetch("svhn", data_dir, torchvision.datasets.SVHN, root, split="train", download=download)
    test = _fetch("svhn", data_dir, torchvision.datasets.SVHN, root, split="test", download=download)
    train, val = _split_off_last(torch.from_numpy(train.data), torch.from_numpy(train.labels), 5000)
    return _splits(train, val, (torch.from_numpy(test.data), torch.from_numpy(test.labels)), num_classes=10)


def _celeba_image(path: str) -> np.ndarray:
    """One aligned CelebA face as 3 x 64 x 64 uint8."""
    # As the DAAE authors' CelebA code (PIL's ImageOps.fit): the largest centred square, 178 x 178
    # of the 178 x 218 aligned faces, resized to 64 x 64; it keeps the whole face and some hair.
    with Image.open(path) as image:
        face = ImageOps.fit(image.convert("RGB"), (64, 64), method=Image.Resampling.BICUBIC)
    return np.asarray(face).transpose(2, 0, 1)


def _build_celeba(data_dir: str, download: bool) -> dict:
    splits = []
    for split in ("train", "valid", "test"):
        ds = _fetch("celeba", data_dir, torchvision.datasets.CelebA, data_dir, split=split, target_type="attr",
                    download=download)
        folder = os.path.join(ds.root, ds.base_folder, "img_align_celeba")
        x = torch.empty(len(ds.filename), 3, 64, 64, dtype=torch.uint8)
        for i, filename in enumerate(tqdm(ds.filename, desc=f"celeba {split}", unit="image", leave=False,
                                      disable=None)):
            x[i] = torch.from_numpy(_celeba_image(os.path.join(folder, filename)))
        splits.append((x, ds.attr.long()))
    return _splits(*splits, num_classes=0)


def _read_omniglot_set(folder: str):
    """Images (N x 1 x H x W uint8, strokes 255 on 0), character index (sorted by alphabet, then
    character) and drawer (1-20, from the file name <id>_<drawer>.png) of one Omniglot set."""
    def subfolders(path):
        return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))

    characters = [os.path.join(folder, alphabet, character)
                  for alphabet in subfolders(folder) for character in subfolders(os.path.join(folder, alphabet))]
    paths, labels, drawers = [], [], []
    for label, character in enumerate(characters):
        for filename in sorted(name for name in os.listdir(character) if name.endswith(".png")):
            drawer = re.fullmatch(r"\d+_(\d+)\.png", filename)
            if drawer is None:  # the drawer, which splits train from test, is only in the name
                raise CLIError(f"{os.path.join(character, filename)}: Omniglot images are named <id>_<drawer>.png "
                               "(e.g. 0101_01.png, drawer 1-20); rename or remove this file")
            paths.append(os.path.join(character, filename))
            labels.append(label)
            drawers.append(int(drawer.group(1)))
    if not paths:
        raise CLIError(f"no <alphabet>/<character>/<id>_<drawer>.png images in {folder}: unzip the Omniglot "
                       f"archive there, {OFFLINE_HINT}")
    x = None
    for i, path in enumerate(tqdm(paths, desc=os.path.basename(folder), unit="image", leave=False,
                                  disable=None)):
        try:
            with Image.open(path) as image:
                pixels = 255 - np.asarray(image.convert("L"))  # black strokes on white -> 1 on 0
        except (OSError, ValueError) as error:  # PIL's "cannot identify image file", a truncated file
            raise CLIError(f"cannot read {path} as an image ({first_line(error, 80)}): replace it from the "
                           "Omniglot archive, or remove it") from None
        if x is None:
            x = torch.empty(len(paths), 1, *pixels.shape, dtype=torch.uint8)
        if pixels.shape != tuple(x.shape[2:]):
            raise CLIError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels but {paths[0]} is "
                           f"{x.shape[3]}x{x.shape[2]}: every Omniglot image must have the same size")
        x[i, 0] = torch.from_numpy(pixels)
    return x, torch.tensor(labels), torch.tensor(drawers)


def _build_omniglot(data_dir: str, download: bool) -> dict:
    background, evaluation = (os.path.join(data_dir, name) for name in OMNIGLOT_ZIPS)
    if not os.path.isdir(background) and not os.path.isdir(evaluation):
        for name, md5 in OMNIGLOT_ZIPS.items():
            _fetch("omniglot", data_dir, _download_archive, f"{OMNIGLOT_URL}/{name}.zip", data_dir, download, md5)
    if not os.path.isdir(background):
        raise CLIError(f"cannot load omniglot: {background} is missing (the training set); unzip "
                       f"{OMNIGLOT_URL}/images_background.zip there, {OFFLINE_HINT}")
    x, y, drawer = _read_omniglot_set(background)
    if os.path.isdir(evaluation):
        x_eval, y_eval, drawer_eval = _read_omniglot_set(evaluation)
    else:
        print(f"omniglot: no {evaluation}, so the evaluation set (unseen characters) is empty")
        x_eval, y_eval, drawer_eval = x[:0], y[:0], drawer[:0]
    # The DAAE paper's split of the background set: drawers 1-19 train, drawer 20 tests.
    train, test = drawer <= 19, drawer == 20
    x_train, y_train = x[train], y[train]
    # The paper has no validation set: a fixed 5 % of the training images serve as one and stay in
    # training, so that training is the paper's 18,316 images.
    val = _fixed_subset(len(x_train), 0.05)
    extra = {"x_eval": x_eval, "y_eval": y_eval, "drawer_eval": drawer_eval,
             "drawer_train": drawer[train], "drawer_test": drawer[test]}
    return _splits((x_train, y_train), (x_train[val], y_train[val]), (x[test], y[test]),
                   num_classes=int(y.max()) + 1, extra=extra)


def _read_sprites_character(path: str):
    """All frames (N x 3 x 60 x 60 uint8) and the attributes of one character's sprites_<n>.mat."""
    # A MATLAB v7.3 (HDF5) file: "sprites" holds references to 21 animations (5 actions x 4
    # viewpoints, and a last one), each a 10800 x frames matrix of 60 x 60 x 3 images in MATLAB's
    # column-major order, which HDF5 stores as frames x 10800; "labels" holds the attributes.
    import h5py  # an optional dependency: only Sprites needs it

    with h5py.File(path, "r") as f:
        animations = [f[reference][()] for reference in f["sprites"][()].ravel()]
        attributes = torch.from_numpy(f["labels"][()].ravel().astype(np.int64))
    frames = np.concatenate(animations)
    if frames.ndim != 2 or frames.shape[1] != 3 * 60 * 60:
        raise CLIError(f"unexpected sprites layout in {path}: animations of shape {frames.shape[1:]}, expected 10800 "
                       "values per frame")
    if frames.dtype != np.uint8:
        frames = np.round(frames * 255).astype(np.uint8)
    frames = frames.reshape(-1, 3, 60, 60).transpose(0, 1, 3, 2)  # (frame, channel, column, row) -> N x C x H x W
    return torch.from_numpy(np.ascontiguousarray(frames)), attributes.expand(len(frames), -1)


def _sprites_index(folder: str):
    """The character files, sorted by number, and the 1-based character indices of each split."""
    characters = sorted((name for name in os.listdir(folder) if re.fullmatch(r"sprites_\d+\.mat", name)),
                        key=lambda name: int(name[len("sprites_"):-len(".mat")]))
    return characters, scipy.io.loadmat(os.path.join(folder, "sprites_splits.mat"))


def _build_sprites(data_dir: str, download: bool) -> dict:
    folder = os.path.join(data_dir, "data", "sprites")  # the archive's own layout, unpacked in data_dir
    if not os.path.isfile(os.path.join(folder, "sprites_splits.mat")):
        _fetch("sprites", data_dir, _download_archive, SPRITES_URL, data_dir, download)
    characters, split_indices = _fetch("sprites", data_dir, _sprites_index, folder)
    if importlib.util.find_spec("h5py") is None:  # asked for once the files are there: they come first
        raise CLIError("sprites needs h5py to read its MATLAB v7.3 files: pip install h5py")

    def read(split: str):
        """Frames and per-frame attributes of the characters that split lists (1-based, as in MATLAB)."""
        indices = split_indices[split].ravel()
        parts = [_read_sprites_character(os.path.join(folder, characters[i - 1]))
                 for i in tqdm(indices, desc=f"sprites {split}", unit="character", leave=False, disable=None)]
        return torch.cat([x for x, _ in parts]), torch.cat([a for _, a in parts])

    # The DAAE paper's 88,822 / 17,800 / 12,816 images are 499 / 100 / 72 characters of 178 frames
    # (all 21 animations), which matches Reed et al.'s training / test / validation characters: the
    # paper's "evaluation" set is Reed's validation set (inferred from these counts).
    (x_train, a_train), (x_test, a_test), (x_eval, a_eval) = read("trainidx"), read("testidx"), read("validx")
    # Validation: as for Omniglot, a fixed 5 % of the training images, kept in training.
    val = _fixed_subset(len(x_train), 0.05)
    extra = {"x_eval": x_eval, "attributes_train": a_train, "attributes_val": a_train[val],
             "attributes_test": a_test, "attributes_eval": a_eval}

    def no_labels(n):
        return torch.full((n,), -1, dtype=torch.int64)

    return _splits((x_train, no_labels(len(x_train))), (x_train[val], no_labels(len(val))),
                   (x_test, no_labels(len(x_test))), num_classes=0, extra=extra)


CACHED_DATASETS = {"mnist": _build_mnist, "omniglot": _build_omniglot, "cifar10": _build_cifar10,
                   "svhn": _build_svhn, "celeba": _build_celeba, "sprites": _build_sprites}


def _npz_images(arrays: dict, key: str, path: str) -> torch.Tensor:
    x = arrays[key]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise CLIError(f"{key} in {path} has shape {x.shape}: expected N x H x W or N x C x H x W")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        raise CLIError(f"{key} in {path} has shape {x.shape}, channels last: transpose it to N x C x H x W")
    if x.dtype == np.uint8:
        return torch.from_numpy(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise CLIError(f"{key} in {path} is {x.dtype}: save images as uint8 (0-255) or as floats in [0, 1]")
    if x.size and not np.isfinite(x).all():
        raise CLIError(f"{key} in {path} has NaN or infinite pixels: replace them with values in [0, 1]")
    if x.size and not (x.min() >= 0 and x.max() <= 1):
        raise CLIError(f"{key} in {path} has values in [{x.min():g}, {x.max():g}]: scale the images to [0, 1] "
                       "or save them as uint8")
    return torch.from_numpy(x.astype(np.float32))


def _npz_labels(arrays: dict, key: str, n: int, path: str) -> torch.Tensor:
    y = arrays[key]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise CLIError(f"{key} in {path} has shape {y.shape} and dtype {y.dtype}: expected integers of shape ({n},), "
                       "one class label per image (-1 for none)")
    if y.size and y.min() < -1:
        raise CLIError(f"{key} in {path} has the label {y.min()}: labels are class numbers 0, 1, 2, ... "
                       "or -1 for an image without one")
    return torch.from_numpy(y.astype(np.int64))


NPZ_MAGIC, NPY_MAGIC = (b"PK\x03\x04", b"PK\x05\x06"), b"\x93NUMPY"  # a zip archive; a single numpy array


def _read_npz(path: str) -> dict:
    """The arrays of a .npz file; anything else (a .npy, text, a damaged archive) is one CLIError
    line. Never pickles: numpy's advice to load such a file unsafely is not passed on."""
    if os.path.isdir(path):
        raise CLIError(f"--dataset {path} is a folder, not a .npz file: save the images with numpy.savez")
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path} (a .npz with x_train, y_train, x_test, y_test and optionally "
                       "x_val, y_val)")
    with open(path, "rb") as f:
        start = f.read(6)
    if start.startswith(NPY_MAGIC):
        raise CLIError(f"{path} is a single array (.npy), not a .npz archive of named arrays: save the splits "
                       "with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    if not start.startswith(NPZ_MAGIC):
        raise CLIError(f"{path} is not a .npz file (numpy.savez writes a zip archive of arrays): save the splits "
                       "with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except ValueError as error:
        if "pickle" in str(error):  # an array of Python objects, which only an unsafe load reads
            raise CLIError(f"{path} holds arrays of Python objects: save numbers (uint8 images, integer labels) "
                           "with numpy.savez") from None
        reason = first_line(error, 80)
    except Exception as error:  # zipfile, zlib and EOF errors of a truncated or damaged archive
        reason = first_line(error, 80)
    raise CLIError(f"{path} is damaged or truncated ({reason}): write it again with numpy.savez")


def _load_npz(path: str) -> dict:
    """x_train, y_train, x_test, y_test and optionally x_val, y_val from a .npz file (not cached)."""
    arrays = _read_npz(path)
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise CLIError(f"{path} lacks {', '.join(missing)}: save x_train, y_train, x_test, y_test (and optionally "
                       "x_val, y_val) with numpy.savez")
    splits = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            x = _npz_images(arrays, f"x_{split}", path)
            splits[split] = (x, _npz_labels(arrays, f"y_{split}", len(x), path))
    for split, (x, _) in splits.items():
        if x.shape[1:] != splits["train"][0].shape[1:]:
            raise CLIError(f"x_{split} in {path} has images of shape {tuple(x.shape[1:])} but x_train has "
                           f"{tuple(splits['train'][0].shape[1:])}: every split needs the same C x H x W")
    # Checked now, not after an epoch: the pictures and eval.py need test images, and the split below
    # needs two training images.
    for split, least in (("train", 2), ("val", 1), ("test", 1)):
        if split in splits and len(splits[split][0]) < least:
            raise CLIError(f"x_{split} in {path} has {len(splits[split][0])} images: it needs at least {least}")
    if "val" not in splits:
        n_val = max(1, len(splits["train"][0]) // 10)
        print(f"{path}: no x_val, so the last {n_val} training images are the validation set")
        splits["train"], splits["val"] = _split_off_last(*splits["train"], n_val)
    labels = torch.cat([y for _, y in splits.values()])
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if num_classes > len(labels):  # the class count is the largest label + 1: a stray id would make millions
        raise CLIError(f"{path} has the label {num_classes - 1}, which makes {num_classes} classes for "
                       f"{len(labels)} images: number the classes 0, 1, 2, ...")
    return _splits(splits["train"], splits["val"], splits["test"], num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# Corruption and the Parzen-window estimator
# ---------------------------------------------------------------------------------------------


def corrupt(x, sigma):
    """c(x~|x): additive Gaussian corruption x~ = x + sigma * eps, eps ~ N(0, I), not clipped."""
    return x + sigma * torch.randn_like(x)


def parzen_log_likelihoods(samples, data, sigmas, max_entries=2**24):
    """log p(x) under a Gaussian Parzen window on `samples`, for every row of `data` and every
    bandwidth in `sigmas`: a (len(sigmas), len(data)) float64 tensor.

        log p(x) = logsumexp_i(-|x - mu_i|^2 / (2 s^2)) - log N - D log(s sqrt(2 pi))

    Exact in log space (no kernel underflows), in float64, on the device of `samples`. The
    squared distances of each chunk of data rows are computed once and reused for every
    bandwidth; chunks keep the distance matrix under `max_entries`, so 10,000 samples against
    10,000 points in 11,025 dimensions fit in memory."""
    mu = samples.flatten(1).double()
    n, dims = mu.shape
    mu_sq = (mu * mu).sum(1)
    chunk = max(1, max_entries // n)
    out = torch.empty(len(sigmas), len(data), dtype=torch.float64, device=mu.device)
    for start in range(0, len(data), chunk):
        x = float_images(data[start:start + chunk].to(mu.device)).flatten(1).double()
        sq_dist = ((x * x).sum(1, keepdim=True) + mu_sq - 2 * x @ mu.T).clamp_min_(0)
        nearest = sq_dist.amin(1, keepdim=True)
        sq_dist -= nearest  # logsumexp's shift: the nearest sample's term becomes exp(0) = 1, the largest
        for i, s in enumerate(sigmas):
            log_norm = math.log(n) + dims * math.log(s * math.sqrt(2 * math.pi))
            # Terms below e^-60 cannot change a float64 sum that holds a 1; clamping them keeps exp
            # off its slow underflow path (twice as fast at small bandwidths).
            log_sum = (sq_dist / (-2 * s * s)).clamp_min_(-60).exp_().sum(1).log_()
            out[i, start:start + len(x)] = log_sum - nearest[:, 0] / (2 * s * s) - log_norm
    return out


def parzen_log_likelihood(samples, data, sigma):
    """log p(x) of every row of `data` under a Parzen window of bandwidth `sigma` on `samples`."""
    return parzen_log_likelihoods(samples, data, [sigma])[0]


def select_bandwidth(samples, data, sigmas):
    """The bandwidth with the highest mean log-likelihood of `data` (the validation split),
    and the mean log-likelihood for each bandwidth: (best_sigma, tensor of len(sigmas))."""
    means = parzen_log_likelihoods(samples, data, sigmas).mean(1).cpu()
    return float(sigmas[int(means.argmax())]), means


def mean_and_standard_error(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    se = values.std() / math.sqrt(len(values)) if len(values) > 1 else torch.tensor(0.0)
    return float(values.mean()), float(se)


# ---------------------------------------------------------------------------------------------
# Device, seeds, batches, pictures
# ---------------------------------------------------------------------------------------------


def choose_device(name="auto"):
    """--device: auto is CUDA when there is one, else the CPU; a device asked for by name must
    exist. CUDA matmuls may use TF32."""
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda (or --gpu): this PyTorch sees no CUDA device; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CLIError("--device mps: this PyTorch sees no Apple GPU (MPS); use --device cpu or auto")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def native_bf16(device):
    """Whether `device` computes in bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    whose flags in Linux's /proc/cpuinfo name AVX512-BF16 or AMX (x86) or BF16 (ARM). Other CPUs
    emulate bfloat16 with float32 arithmetic and conversions, slower than float32 alone."""
    if device.type == "cuda":  # bfloat16 tensor cores from compute capability 8.0 (Ampere) on; AMD's (ROCm) have it
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":  # mps: autocast to bfloat16 is not offered here
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: unknown, so taken as absent
        return False
    flags = set(" ".join(re.findall(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)).split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def choose_precision(precision, device):
    """--precision as the device allows: bf16 where the hardware has it, else fp32 and one line."""
    if precision == "bf16" and not native_bf16(device):
        what = "GPU" if device.type == "cuda" else "CPU (no avx512_bf16 or amx_bf16)" if device.type == "cpu" \
            else f"{device.type} device"
        print(f"note: --precision bf16: this {what} has no native bfloat16, which would be slower than fp32; "
              "the run stays fp32", file=sys.stderr)
        return "fp32"
    return precision


def autocast(run):
    """The context every model script runs its training step in. --precision bf16: torch.autocast
    to bfloat16 on the run's device, so matmuls and convolutions compute in bfloat16 while the
    weights, their gradients, the optimisers' state and the losses (autocast's float32 ops, such
    as the cross-entropies) stay float32. fp32: nothing."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16) if run.config["precision"] == "bf16" \
        else nullcontext()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def adam(params, lr, betas=(0.9, 0.999)):
    """Adam with the fused kernel: one pass over the parameters instead of several, on the CPU
    (a sixth of the time of the default for the MNIST networks) and on CUDA alike."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def on_device(tensor, device):
    """Put a dataset on the device when it fits in half of the free memory, else pin it so
    batches copy asynchronously."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return tensor.to(device) if tensor.nbytes < free // 2 else tensor.pin_memory()
    return tensor


def map_batches(fn, x, batch_size, device):
    """fn applied to x in batches on `device`, outputs concatenated on the CPU (no grad). Batches of
    uint8 images reach fn as float32 in [0, 1]."""
    with torch.no_grad():
        return torch.cat([fn(float_images(x[i:i + batch_size].to(device))).cpu()
                          for i in range(0, len(x), batch_size)])


@contextmanager
def frozen(*modules):
    """The modules' parameters get no gradient inside the block: they are fixed in this update,
    and only the gradient through them (to a generator's output, say) is needed. None is skipped."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only once the write finished."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of a plain open(), not mkstemp's private 0600
        yield tmp
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a read-only folder: one line, and the old file is intact
        raise CLIError(f"cannot write {path} ({error.strerror or first_line(error, 80)}); its previous version, "
                       "if any, is kept: free some space or choose a folder you can write to") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def save_grid(images, path, nrow=10):
    """A grid of images in [0, 1], enlarged (nearest) so small images stay visible. A PNG of one
    channel for grey images, compressed fast (zlib level 1): the pixels of torchvision's
    save_image, in a fifth of its time for the Omniglot grids written every epoch."""
    from torchvision.utils import make_grid

    images = float_images(images.detach().cpu()).float().clamp(0, 1)
    scale = max(1, 28 // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)  # 3 x H x W, grey images repeated
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)  # rounded as save_image rounds
    picture = Image.fromarray(pixels[0].numpy() if images.shape[1] == 1 else pixels.permute(1, 2, 0).numpy())
    with atomic_path(path) as tmp:
        picture.save(tmp, format="png", compress_level=1)


def plt_figure(*args, **kwargs):
    """A matplotlib figure drawn off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(*args, **kwargs)


def save_figure(figure, path):
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# The run: settings, run folder, checkpoints
# ---------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "adversarial-autoencoders/1"
SHARED_DEFAULTS = {"dataset": "digits", "data_dir": "data", "seed": 0, "precision": "fp32", "save_every": 1}
RESUMABLE = {"epochs", "device", "resume", "out", "save_every"}  # the flags a resumed run may change
LOCK_FILE = ".lock"
_held_locks = {}  # run folder -> (the open lock file of this process, the outermost folder it made)


class Run:
    """One training run: its settings, folder, device, data and (when resuming) checkpoint."""

    def __init__(self, model, config, out, device, data, checkpoint):
        self.model, self.config, self.out = model, config, out
        self.device, self.data, self.checkpoint = device, data, checkpoint


def dataset_tag(dataset):
    return Path(dataset).stem if dataset.endswith(".npz") else dataset


def start_run(model, args, defaults, variant=None):
    """Settle the settings (flags over the dataset's paper defaults, or the saved config when
    resuming), print them, seed, pick the device, load the data and prepare the run folder.

    `defaults` maps a dataset name to its row of paper settings; a .npz file uses the "mnist"
    row unless the table has a "npz" one. The run folder is --out, else runs/<model>-<dataset>,
    with -<variant> added when the flags pick a variant of the model (a mixture prior, say), so
    that the README's commands one after another do not meet each other's folders. The folder
    is locked for this process before anything in it is read or written."""
    config = vars(args).copy()
    given = config.copy()
    for key, value in SHARED_DEFAULTS.items():
        if config[key] is None:
            config[key] = value
    if config["dataset"].endswith(".npz"):  # absolute, so that eval.py finds it from any folder
        config["dataset"] = given["dataset"] = os.path.abspath(config["dataset"])
    run_name = f"{model}-{dataset_tag(config['dataset'])}" + (f"-{variant}" if variant else "")
    out = Path(config["out"] or f"runs/{run_name}")
    made = lock_run_folder(out)
    try:
        return _start_locked_run(model, config, given, defaults, out, shown_dataset=args.dataset)
    except BaseException:
        release_run_folder(out, made)  # a run refused at the start leaves no empty folders behind
        raise


def _start_locked_run(model, config, given, defaults, out, shown_dataset):
    checkpoint = None
    if config["resume"]:
        checkpoint = load_checkpoint(out / "checkpoint.pt", model, "drop --resume to start a new run")
        config = _resumed_config(out, given)
        if config["epochs"] < checkpoint.get("epoch", 0):  # refused before config.json is rewritten
            raise CLIError(f"the run in {out} has {checkpoint['epoch']} epochs already; --epochs "
                           f"{config['epochs']} is fewer: give more to train further, or drop --epochs")
    else:
        if (out / "checkpoint.pt").exists():
            raise CLIError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
        name = config["dataset"]
        if name.endswith(".npz"):
            tag = "npz" if "npz" in defaults else "mnist"
        elif name in defaults:
            tag = name
        elif name in ("digits", *CACHED_DATASETS):
            raise CLIError(f"{model}.py has no settings for {name}; use one of {', '.join(defaults)} or a .npz file")
        else:
            raise unknown_dataset(name)
        for key, value in defaults[tag].items():
            if config.get(key) is None:
                config[key] = value
    config["model"], config["out"] = model, str(out)

    seed_everything(config["seed"])
    device = choose_device(config.get("device"))
    # What the steps run in (autocast reads it) is what config.json records; runs from before --precision were fp32
    config["precision"] = choose_precision(config.get("precision", "fp32"), device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # Windows has no load average
    if device.type == "cpu" and load > (os.cpu_count() or 1) and "OMP_NUM_THREADS" not in os.environ:
        # On busy cores torch's threads wait for each other: a step ran 4-10x slower with 2 than with 1.
        torch.set_num_threads(1)
        print(f"note: the CPU is busy (load {load:.1f} on {os.cpu_count()} cores), so this run uses "
              "one thread; set OMP_NUM_THREADS to choose", file=sys.stderr)
    data = load_dataset(config["dataset"], config["data_dir"], config["image_size"])
    config["image_shape"] = list(data.image_shape)
    config["num_classes"] = data.num_classes
    if config["batch_size"] > len(data.x_train):
        raise CLIError(f"--batch-size {config['batch_size']} is larger than the training set "
                       f"({len(data.x_train)} images); choose a smaller one")

    print(f"{model} on {shown_dataset or config['dataset']} ({len(data.x_train)} train / {len(data.x_val)} val / "
          f"{len(data.x_test)} test, images {'x'.join(map(str, data.image_shape))}), device {device}")
    for key in sorted(k for k in config if k not in {"model", "dataset", "image_shape", "num_classes"}):
        print(f"  {key:<24} {config[key]}")
    write_json(out / "config.json", config)
    return Run(model, config, out, device, data, checkpoint)


def lock_run_folder(out):
    """Make `out` (if need be) and hold its lock file for the rest of this process: a second
    run on the same folder is refused at once, naming the first one's process id. The lock is
    the operating system's (fcntl.flock), so it dies with its process, however that ends.
    Returns the outermost folder made here (None if `out` existed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; choose another --out")
    made = next((folder for folder in reversed([out, *out.parents]) if not folder.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_FILE, "a+")
    except OSError as error:  # under a file, read-only, no such drive
        raise CLIError(f"cannot write the run folder {out} ({error.strerror or error}); choose another --out") \
            from None
    key = os.path.realpath(out)
    if key in _held_locks:  # this process's earlier run on the folder (tests run several) is over
        _held_locks.pop(key)[0].close()
    if fcntl is None:  # Windows: no flock; the folder is then not protected against a second run
        _held_locks[key] = handle, made
        return made
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CLIError(f"{out} is in use by another run (process {holder}); wait for it to end, or choose "
                       "another --out") from None
    except OSError:  # a file system without locks: the run goes on, unprotected, as on Windows
        print(f"note: {out} cannot be locked on this file system; do not start a second run in it", file=sys.stderr)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held_locks[key] = handle, made
    return made


def release_run_folder(out, made=None):
    """Let go of the folder's lock; then delete the folders lock_run_folder made, from `out` up to
    `made`, as long as nothing but the lock file was written in them."""
    handle, _ = _held_locks.pop(os.path.realpath(out), (None, None))
    if handle is not None:
        handle.close()
    if made is None:
        return
    out, lock = Path(out), Path(out) / LOCK_FILE
    if lock.exists() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
        lock.unlink()
    for folder in [out, *out.parents]:
        if any(folder.iterdir()):
            break
        folder.rmdir()
        if folder == made:
            break


def discard_unstarted_runs():
    """After a refusal that came once the run folder was prepared (a check of the model's own, a
    network too large for memory), the folders of this process's runs that hold no checkpoint lose
    their config.json, and the folders made for them go: a refused run leaves nothing behind."""
    for key, (_, made) in list(_held_locks.items()):
        if not (Path(key) / "checkpoint.pt").exists():
            (Path(key) / "config.json").unlink(missing_ok=True)
            release_run_folder(key, made)


def print_done(run):
    """The last line of a training run: its folder and every file in it that a reader looks at."""
    pictures = sorted(path.name for path in run.out.glob("*.png"))
    print(f"done: {run.out}/ " + ", ".join([*pictures, "samples/", "log.csv", "config.json", "checkpoint.pt"]))


def _resumed_config(out, given):
    """The saved settings, with --epochs (and --device) taken from this command line."""
    saved = read_config(out)
    for key, value in given.items():
        if key in RESUMABLE or value in (None, False) or saved.get(key) == value:
            continue
        flag = "--" + key.replace("_", "-")
        kept = f"keeps its saved {saved[key]}" if key in saved else f"was saved before {flag} existed"
        print(f"warning: ignoring {flag} {value}: the resumed run {kept}", file=sys.stderr)
    for key in RESUMABLE:
        if given.get(key) not in (None, False):
            saved[key] = given[key]
    return saved


def write_json(path, obj):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def read_config(run_dir):
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CLIError(f"{path} not found; is {run_dir} a run folder written by one of the model scripts?")
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict):
        raise CLIError(f"{path} is not the JSON of a run's settings; the run folder is damaged")
    return config


def save_checkpoint(path, state):
    """Written atomically: a failed write (a full disk) keeps the previous checkpoint, and says so."""
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    except RuntimeError as error:  # torch.save reports a failed write as a RuntimeError, not an OSError
        raise CLIError(f"cannot write {path} ({first_line(error, 80)}); the previous checkpoint, if any, is "
                       "kept: free some space, then resume") from None


def load_checkpoint(path, model=None, remedy="train the run first"):
    """A checkpoint written by save_checkpoint, loaded with weights_only=True (a file that
    would run code when unpickled is refused). Every failure is one CLIError line, ending with
    `remedy` (what the calling command can do about it)."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"no checkpoint at {path}; {remedy}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "weights only load failed" in str(error).lower():
            reason = "it holds Python objects besides tensors, which loading could run as code; it was not loaded"
        else:
            reason = first_line(error, 80)
        raise CLIError(f"{path} is not a valid checkpoint ({reason}); delete it, or {remedy}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CLIError(f"{path} is not a checkpoint written by these scripts; delete it, or {remedy}")
    if model is not None and checkpoint.get("model") != model:
        raise CLIError(f"{path} is a {checkpoint.get('model')} checkpoint, not {model}; use {checkpoint.get('model')}.py")
    return checkpoint


class TrainedRun:
    """A trained run: its folder, config.json, model (in eval mode), and how far training got."""

    def __init__(self, path, config, model, epoch, step):
        self.path, self.config, self.model, self.epoch, self.step = path, config, model, epoch, step
        self.name = str(path)

    @property
    def unfinished(self):
        """None for a finished run, else where it stopped: "epoch k of n, step s"."""
        epochs = self.config.get("epochs")
        if self.step:
            return f"epoch {self.epoch + 1} of {epochs}, step {self.step}"
        return None if epochs is None or self.epoch >= epochs else f"epoch {self.epoch} of {epochs}"


def load_run(run_dir, device="cpu"):
    """A run folder -> its trained model, in eval mode on `device`, rebuilt from config.json and
    checkpoint.pt by the model script that wrote them. Every failure is one CLIError line.

        run = common.load_run("runs/daae-mnist")
        with torch.no_grad():
            z = run.model.encode(x)              # x: N x C x H x W images in [0, 1]
            x_rec, x_new = run.model.decode(z), run.model.sample(16)
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise CLIError(f"{run_dir} is not a folder: give run folders written by the model scripts "
                       "(e.g. runs/aae-digits)")
    config = read_config(path)
    missing = [key for key in ("model", "dataset", "data_dir", "image_shape") if key not in config]
    if missing:
        raise CLIError(f"{path / 'config.json'} lacks {', '.join(missing)}; the run folder is damaged")
    module = _model_module(config.get("model"), path / "config.json")
    checkpoint = load_checkpoint(path / "checkpoint.pt", config["model"], f"train it with {config['model']}.py")
    try:
        model = module.build_model(config)
        model.load_state_dict(checkpoint["model_state"])
    except KeyError as error:
        raise CLIError(f"{path / 'config.json'} or its checkpoint lacks {error}; the run folder is damaged "
                       f"or was written by another version of {config['model']}.py") from None
    except RuntimeError as error:  # the weights do not fit the networks config.json describes
        raise CLIError(f"{path / 'checkpoint.pt'} does not match {path / 'config.json'} "
                       f"({first_line(error)})") from None
    return TrainedRun(path, config, model.to(device).eval(), checkpoint.get("epoch"), checkpoint.get("step", 0))


def _model_module(name, config_path):
    """The model script `name`.py beside this file (config.json names it); nothing else is imported."""
    if not isinstance(name, str) or not name.isidentifier() or name in ("eval", "common") \
            or not (Path(__file__).resolve().parent / f"{name}.py").is_file():
        raise CLIError(f"{config_path} names an unknown model {name!r}: there is no such model script "
                       "beside common.py (aae, daae, idaae, ...)")
    module = importlib.import_module(name)
    if not hasattr(module, "build_model"):
        raise CLIError(f"{name}.py has no build_model(config), so its runs cannot be rebuilt")
    return module


def write_log(out, history, plot=True):
    """log.csv, and losses.png when `plot` (drawing takes a third of a second)."""
    keys = list(history[0])
    with atomic_path(out / "log.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
    if not plot:
        return
    losses = [k for k in keys if k not in ("epoch", "seconds")]
    figure = plt_figure(figsize=(4 * len(losses), 3))
    epochs = [row["epoch"] for row in history]
    for i, key in enumerate(losses):
        axes = figure.add_subplot(1, len(losses), i + 1)
        axes.plot(epochs, [row[key] for row in history], marker="." if len(epochs) < 30 else None)
        axes.set_title(key)
        axes.set_xlabel("epoch")
    save_figure(figure, out / "losses.png")


# ---------------------------------------------------------------------------------------------
# The training loop around a model's step
# ---------------------------------------------------------------------------------------------


class _StopOnCtrlC:
    """The first Ctrl-C (or SIGTERM, a scheduler's or `kill`'s request) asks the loop to stop after
    the current step and save; a second one stops now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _rng_state():
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(run, model, optimizers, train_step, x, y, on_epoch_end=None, schedulers=None):
    """Train for run.config["epochs"] epochs of shuffled full batches of (x, y).

    `train_step(x_batch, y_batch)` is the model's own step (its paper's algorithm); it gets the
    batch on the device, images as float32 in [0, 1] (converted per batch from the stored uint8),
    and returns a dict of detached scalar loss tensors, which are summed on the device (no host
    sync per step). After each epoch the mean losses go to log.csv (and losses.png, at most once a
    minute); every config["save_every"] epochs and after the last, `on_epoch_end(epoch)` draws the
    model's pictures (eval mode, no grad) and the checkpoint is written atomically. A non-finite
    loss stops the run before its checkpoint is overwritten. Ctrl-C or SIGTERM finishes the step,
    saves mid-epoch, and raises TrainingInterrupted; --resume then continues exactly."""
    config, device, out = run.config, run.device, run.out
    schedulers = schedulers or {}
    x, y = on_device(x, device), on_device(y, device)
    batch_size, epochs, save_every = config["batch_size"], config["epochs"], config.get("save_every", 1)
    steps_per_epoch = len(x) // batch_size
    if batch_size < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise CLIError(f"--batch-size {batch_size}: these networks use batch normalisation, which needs at least "
                       "2 images a batch; choose a larger --batch-size")
    resume_command = f"python {run.model}.py --out {shlex.quote(str(out))} --resume"
    epoch, step, perm, sums, elapsed, history = 0, 0, None, {}, 0.0, []
    saved_epoch = None  # the epoch of the checkpoint on disk

    if run.checkpoint is not None:
        ckpt = run.checkpoint
        try:
            model.load_state_dict(ckpt["model_state"])
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(ckpt["optimizers"][name])
            for name, scheduler in schedulers.items():
                scheduler.load_state_dict(ckpt["schedulers"][name])
            epoch, step, elapsed, history = ckpt["epoch"], ckpt["step"], ckpt["elapsed"], ckpt["history"]
            saved_epoch = epoch
            perm = None if ckpt["perm"] is None else ckpt["perm"].to(x.device)
            sums = {k: v.to(device) for k, v in ckpt["sums"].items()}
            _set_rng_state(ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:  # an edited config.json, another version
            raise CLIError(f"{out / 'checkpoint.pt'} does not fit the run {out / 'config.json'} describes "
                           f"({first_line(error, 80)}): restore config.json as it was written, or start a new "
                           "run in another --out") from None
        print(f"resuming {out} at epoch {epoch + 1}" + (f", step {step + 1}" if step else ""))
        if epoch >= epochs:
            print(f"the run already has {epoch} epochs; pass a larger --epochs to train further")

    def checkpoint_state(epoch, step, perm, sums, elapsed):
        return {
            "model": run.model, "epoch": epoch, "step": step, "elapsed": elapsed, "history": history,
            "perm": None if perm is None else perm.cpu(), "sums": {k: v.cpu() for k, v in sums.items()},
            "model_state": model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "rng": _rng_state(),
        }

    model.train()
    last_plot = -math.inf
    with _StopOnCtrlC() as ctrl_c:
        while epoch < epochs:
            if perm is None:
                perm = torch.randperm(len(x), device=x.device)
            started = time.perf_counter()
            bar = tqdm(range(step, steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       initial=step, total=steps_per_epoch, disable=None, dynamic_ncols=True)
            for step in bar:
                idx = perm[step * batch_size:(step + 1) * batch_size]
                losses = train_step(float_images(x[idx].to(device, non_blocking=True)),
                                    y[idx].to(device, non_blocking=True))
                for key, value in losses.items():
                    sums[key] = sums[key] + value if key in sums else value.clone()
                if not bar.disable and step % 25 == 0:  # one host sync every 25 steps, for the live losses
                    bar.set_postfix({k: f"{float(v) / (step + 1):.3f}" for k, v in sums.items()})
                if ctrl_c.requested and step + 1 < steps_per_epoch:  # on the last step, finish the epoch
                    bar.close()
                    elapsed += time.perf_counter() - started
                    save_checkpoint(out / "checkpoint.pt", checkpoint_state(epoch, step + 1, perm, sums, elapsed))
                    raise TrainingInterrupted(f"stopped at epoch {epoch + 1}, step {step + 1}; saved "
                                              f"{out / 'checkpoint.pt'}. Resume with: {resume_command}")
            bar.close()
            means = {k: float(v) / steps_per_epoch for k, v in sums.items()}
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            if bad:
                kept = (f"{out / 'checkpoint.pt'} keeps epoch {saved_epoch}, before it went bad"
                        if saved_epoch is not None else "no checkpoint had been saved yet")
                raise CLIError(f"the {bad[0]} loss became {means[bad[0]]} in epoch {epoch + 1}; {kept}. "
                               "Try a lower --lr")
            for scheduler in schedulers.values():
                scheduler.step()
            epoch += 1
            elapsed += time.perf_counter() - started
            history.append({"epoch": epoch, **{k: round(v, 5) for k, v in means.items()},
                            "seconds": round(elapsed, 2)})
            tqdm.write(f"epoch {epoch}/{epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                       + f"  ({elapsed:.1f} s)")
            step, perm, sums, elapsed = 0, None, {}, 0.0
            if epoch % save_every == 0 or epoch == epochs or ctrl_c.requested:
                if on_epoch_end is not None:  # pictures draw from their own RNG: training's stays as it was
                    model.eval()
                    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        on_epoch_end(epoch)
                    model.train()
                save_checkpoint(out / "checkpoint.pt", checkpoint_state(epoch, 0, None, {}, 0.0))
                saved_epoch = epoch
            # matplotlib takes a third of a second (seconds on a busy CPU): once a minute is under 1 %
            plot = epoch == epochs or ctrl_c.requested or time.perf_counter() - last_plot > 60
            write_log(out, history, plot)
            if plot:
                last_plot = time.perf_counter()
            if ctrl_c.requested:
                raise TrainingInterrupted(f"stopped after epoch {epoch}; saved {out / 'checkpoint.pt'}. "
                                          f"Resume with: {resume_command}")
    return history
