"""What the model files share: the datasets, the corruption c(x~|x), the Parzen-window
estimator, a few small helpers and pictures, and the run (common.Run): its settings, its loop's
epochs and batches, its checkpoints. Nothing here is a model: each model's networks, losses,
updates and training loop live in its own file (aae.py, daae.py, ...), whose loop reads

    for epoch in run.epochs():                        # resumes where a checkpoint stopped
        for x, y in run.batches(data.x_train, labels):  # shuffled, on the device, floats in [0, 1]
            with common.autocast(run):
                losses = train_step(model, optimizers, x, ...)
            run.record(losses)                         # summed on the device: no host sync
        if run.saving(epoch):                          # --save-every, the last epoch, Ctrl-C
            with common.drawing(model):
                save_pictures(model, run, fixed_z, epoch)
            run.save_checkpoint()

What makes that safe (the folder's lock, atomic files, Ctrl-C, one-line errors, memory checks)
is in machinery.py, which a reader of the models may skip.
"""

import importlib.util
import math
import os
import random
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw, ImageOps
from sklearn.datasets import load_digits
from torchvision.datasets import utils as torchvision_utils
from tqdm import tqdm

import machinery
import toy
# load_run (what a user of a trained run calls) and the figures of the pictures: plumbing, kept there
from machinery import CLIError, first_line, load_run, plt_figure, save_figure  # noqa: F401

# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OMNIGLOT_ZIPS = {  # the archives and checksums torchvision.datasets.Omniglot uses
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
SPRITES_URL = "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz"
OFFLINE_HINT = "or use --dataset digits, which works offline"  # eval.py, which has no --dataset, says otherwise
EXPECTED_FILES = {  # what a user must put under --data-dir when downloads fail
    "mnist": "MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte (or their .gz)",
    "cifar10": "cifar-10-batches-py/ (cifar-10-python.tar.gz unpacked)",
    "svhn": "svhn/train_32x32.mat and svhn/test_32x32.mat",
    "celeba": "celeba/ with img_align_celeba/ (or img_align_celeba.zip), list_attr_celeba.txt, "
    "identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt, list_eval_partition.txt",
    "omniglot": "images_background/ and images_evaluation/, or their .zip from "  # or in omniglot-py/, torchvision's
    f"{OMNIGLOT_URL} (the 5-alphabet subset: python benchmarks/make_omniglot_small.py --zip ZIP --out DIR)",
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
    def image_shape(self) -> tuple[int, ...]:
        """C x H x W, or (2,) for the points of a toy dataset."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        extra_images = "".join(f", {key} {len(x)}" for key, x in self.extra.items() if key.startswith("x_"))
        return (f"{self.name}: {'x'.join(map(str, self.image_shape))}, train {len(self.x_train)}, val {len(self.x_val)}, "
                f"test {len(self.x_test)}{extra_images}{classes}")


def load_dataset(name: str, data_dir: str = "data", image_size: int | None = None,
                 download: bool = True) -> Dataset:
    """Load digits, mnist, omniglot, cifar10, svhn, celeba, sprites, a toy dataset of points in the
    plane (toy25, ring8) or a .npz file, split in three.

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
    elif name in toy.MIXTURES:
        if image_size is not None:
            raise CLIError(f"{name} holds points in the plane, not images; drop --image-size")
        arrays = _splits(*toy.load(name), num_classes=len(toy.MIXTURES[name][0]))
    elif name in CACHED_DATASETS:
        arrays = machinery.load_cached(name, data_dir, lambda: CACHED_DATASETS[name](data_dir, download))
    else:
        raise machinery.unknown_dataset(name)
    if image_size is not None:
        machinery.check_resized_fit(arrays, name, image_size)

    def images(x):
        return _resized(x, image_size)

    extra = {key: images(value) if key.startswith("x_") else value for key, value in arrays["extra"].items()}
    return Dataset(name, images(arrays["x_train"]), arrays["y_train"], images(arrays["x_val"]), arrays["y_val"],
                   images(arrays["x_test"]), arrays["y_test"], arrays["num_classes"], extra)


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


def labelled_subset(y_train, n, num_classes, seed):
    """Indices of n training images, n / num_classes of each class, grouped by class: the labelled
    set of a semi-supervised run (semi_supervised_aae.py), a fixed draw for each seed."""
    per_class = n // num_classes
    rng = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        of_class = (y_train == c).nonzero().squeeze(1)
        chosen.append(of_class[torch.randperm(len(of_class), generator=rng)[:per_class]])
    return torch.cat(chosen)


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
    root = machinery.omniglot_root(data_dir)  # data_dir or torchvision's omniglot-py/, its .zip files unpacked
    background, evaluation = (os.path.join(root, name) for name in OMNIGLOT_ZIPS)
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


def _build_sprites(data_dir: str, download: bool) -> dict:
    folder = os.path.join(data_dir, "data", "sprites")  # the archive's own layout, unpacked in data_dir
    if not os.path.isfile(os.path.join(folder, "sprites_splits.mat")):
        _fetch("sprites", data_dir, _download_archive, SPRITES_URL, data_dir, download)
    characters, split_indices = _fetch("sprites", data_dir, machinery.sprites_index, folder)
    if importlib.util.find_spec("h5py") is None:  # asked for once the files are there: they come first
        raise CLIError("sprites needs h5py to read its MATLAB v7.3 files: pip install h5py")

    def read(split: str):
        """Frames and per-frame attributes of the characters that split lists (1-based, as in MATLAB)."""
        indices = split_indices[split].ravel()
        parts = [machinery.read_sprites_character(os.path.join(folder, characters[i - 1]))
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


def _load_npz(path: str) -> dict:
    """x_train, y_train, x_test, y_test and optionally x_val, y_val from a .npz file (not cached)."""
    splits = machinery.npz_splits(path)
    if "val" not in splits:
        n_val = max(1, len(splits["train"][0]) // 10)
        print(f"{path}: no x_val, so the last {n_val} training images are the validation set")
        splits["train"], splits["val"] = _split_off_last(*splits["train"], n_val)
    labels = torch.cat([y for _, y in splits.values()])
    return _splits(splits["train"], splits["val"], splits["test"], num_classes=int(labels.max()) + 1)


# ---------------------------------------------------------------------------------------------
# Corruption and the Parzen-window estimator
# ---------------------------------------------------------------------------------------------


def corrupt(x, sigma):
    """c(x~|x): additive Gaussian corruption x~ = x + sigma * eps, eps ~ N(0, I), not clipped.
    sigma = 0 is no corruption: x itself, and no noise is drawn."""
    return x + sigma * torch.randn_like(x) if sigma > 0 else x


def reconstruction_loss(decoder_output, x):
    """The reconstruction error the model files minimise, a mean over batch and pixels. Images in [0, 1]:
    BCE(x, sigmoid(decoder_output)), from the decoder's logits (stabler, and faster on a CPU than the
    sigmoid's BCE: docs/performance.md). Points (toy.py): the squared error of a linear decoder output."""
    if toy.is_points(x.shape[1:]):
        return F.mse_loss(decoder_output, x)
    return F.binary_cross_entropy_with_logits(decoder_output, x)


def parzen_log_likelihoods(samples, data, bandwidths, max_entries=2**24):
    """log p(x) under a Gaussian Parzen window on `samples`, for every row of `data` and every
    bandwidth s in `bandwidths`: a (len(bandwidths), len(data)) float64 tensor.

        log p(x) = logsumexp_i(-|x - mu_i|^2 / (2 s^2)) - log N - D log(s sqrt(2 pi))

    Exact in log space (no kernel underflows), in float64, on the device of `samples`. The
    squared distances of each chunk of data rows are computed once and reused for every
    bandwidth; chunks keep the distance matrix under `max_entries`, so 10,000 samples against
    10,000 points in 11,025 dimensions fit in memory."""
    mu = samples.flatten(1).double()
    n, dims = mu.shape
    mu_sq = (mu * mu).sum(1)
    chunk = max(1, max_entries // n)
    out = torch.empty(len(bandwidths), len(data), dtype=torch.float64, device=mu.device)
    for start in range(0, len(data), chunk):
        x = float_images(data[start:start + chunk].to(mu.device)).flatten(1).double()
        sq_dist = ((x * x).sum(1, keepdim=True) + mu_sq - 2 * x @ mu.T).clamp_min_(0)
        nearest = sq_dist.amin(1, keepdim=True)
        sq_dist -= nearest  # logsumexp's shift: the nearest sample's term becomes exp(0) = 1, the largest
        for i, s in enumerate(bandwidths):
            log_norm = math.log(n) + dims * math.log(s * math.sqrt(2 * math.pi))
            # Terms below e^-60 cannot change a float64 sum that holds a 1; clamping them keeps exp
            # off its slow underflow path at small bandwidths.
            log_sum = (sq_dist / (-2 * s * s)).clamp_min_(-60).exp_().sum(1).log_()
            out[i, start:start + len(x)] = log_sum - nearest[:, 0] / (2 * s * s) - log_norm
    return out


def select_bandwidth(samples, data, bandwidths):
    """The bandwidth with the highest mean log-likelihood of `data` (the validation split),
    and the mean log-likelihood for each bandwidth: (best, tensor of len(bandwidths))."""
    means = parzen_log_likelihoods(samples, data, bandwidths).mean(1).cpu()
    return float(bandwidths[int(means.argmax())]), means


# ---------------------------------------------------------------------------------------------
# Small helpers: seeds, Adam, frozen networks, bf16, pictures
# ---------------------------------------------------------------------------------------------


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def adam(params, lr, betas=(0.9, 0.999)):
    """Adam with the fused kernel: one pass over the parameters instead of several, on the CPU
    and on CUDA alike (its time: docs/performance.md)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


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


def autocast(run):
    """The context every model script runs its training step in. --precision bf16: torch.autocast
    to bfloat16 on the run's device, so matmuls and convolutions compute in bfloat16 while the
    weights, their gradients, the optimisers' state and the losses (autocast's float32 ops, such
    as the cross-entropies) stay float32. fp32: nothing."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16) if run.config["precision"] == "bf16" \
        else nullcontext()


@contextmanager
def drawing(model):
    """The model draws its pictures in eval mode, without gradients, and from a copy of the random
    number generators: what training draws next stays as it was without pictures."""
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        model.train()


def map_batches(fn, x, batch_size, device):
    """fn applied to x in batches on `device`, outputs concatenated on the CPU (no grad). Batches of
    uint8 images reach fn as float32 in [0, 1]."""
    with torch.no_grad():
        return torch.cat([fn(float_images(x[i:i + batch_size].to(device))).cpu()
                          for i in range(0, len(x), batch_size)])


def save_grid(images, path, nrow=10, row_labels=None, column_labels=None):
    """A grid of images in [0, 1], enlarged (nearest) so small images stay visible; for grey images a PNG
    of one channel, compressed fast (zlib level 1: torchvision's save_image's pixels, faster). `row_labels`,
    cycled over the rows, are written in a margin on the left; `column_labels` in one above."""
    from torchvision.utils import make_grid

    images = float_images(images.detach().cpu()).float().clamp(0, 1)
    images = F.interpolate(images, scale_factor=max(1, 28 // images.shape[-1]), mode="nearest")  # x1: unchanged
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)  # 3 x H x W, grey images repeated
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)  # rounded as save_image rounds
    picture = Image.fromarray(pixels[0].numpy() if images.shape[1] == 1 else pixels.permute(1, 2, 0).numpy())
    if row_labels or column_labels:
        left, top = 6 * max(map(len, row_labels)) + 6 if row_labels else 0, 12 if column_labels else 0
        width, height = images.shape[-1] + 2, images.shape[-2] + 2
        labelled = Image.new(picture.mode, (picture.width + left, picture.height + top), "white")
        labelled.paste(picture, (left, top))
        draw = ImageDraw.Draw(labelled)
        for row in range(picture.height // height if row_labels else 0):
            draw.text((2, top + row * height + height // 2 - 3), row_labels[row % len(row_labels)], fill="black")
        for column, label in enumerate(column_labels or []):
            draw.text((left + column * width + 3, 1), label, fill="black")
        picture = labelled
    with machinery.atomic_path(path) as tmp:
        picture.save(tmp, format="png", compress_level=1)


def save_code_space(model, x_test, y_test, path, n_prior=2000, marks=None, prior=None):
    """Test codes, coloured by label where every image has one, over samples of the prior: the AAE
    paper's Figures 2, 4(a,c) and 11 (`marks`, its cluster heads, as black crosses). `prior`, the
    codes of a labelled prior and their labels, draws them beside the test codes instead, coloured
    by label: the learned-prior paper's Figures 11 and 13. Codes of more than two dimensions are
    drawn in one 2-D PCA of both sets (that paper uses t-SNE)."""
    from sklearn.decomposition import PCA

    z = map_batches(model.encode, x_test, 500, model.device())
    prior, prior_labels = prior if prior is not None else (model.sample_prior(n_prior).cpu(), None)
    if z.shape[1] > 2:
        pca = PCA(2).fit(torch.cat([z, prior]).numpy())
        z, prior = (torch.from_numpy(pca.transform(codes.numpy())) for codes in (z, prior))
    figure = plt_figure(figsize=(6, 6) if prior_labels is None else (12, 6))
    axes = figure.add_subplot(1, 1 if prior_labels is None else 2, 1)
    if prior_labels is None:  # the AAE paper's figures: the prior in grey under the test codes
        axes.scatter(prior[:, 0], prior[:, 1], s=2, c="lightgrey", label="prior samples")
    else:  # the learned-prior paper's: the prior's codes beside them
        _scatter_by_label(figure, figure.add_subplot(1, 2, 2, sharex=axes, sharey=axes, title="prior codes"),
                          prior, prior_labels)
    _scatter_by_label(figure, axes, z, y_test)
    axes.set_title("test codes" + (" over the prior" if prior_labels is None else ""))
    if marks is not None:
        axes.scatter(marks[:, 0], marks[:, 1], s=80, c="black", marker="x", label="cluster heads")
        axes.legend(loc="upper right")
    save_figure(figure, path)


def _scatter_by_label(figure, axes, points, labels):
    """Points coloured by label (a colour bar beside them), or in one colour unless every one has a label."""
    labelled = bool((labels >= 0).all())
    drawn = axes.scatter(points[:, 0], points[:, 1], s=4, c=labels.cpu() if labelled else "tab:blue", cmap="tab10",
                         vmin=-0.5, vmax=9.5)
    if labelled:
        figure.colorbar(drawn, ax=axes, ticks=range(10), label="label")
    axes.set_aspect("equal")


def save_manifold(model, path, steps=20):
    """The AAE paper's Figure 2(e) / 4(d): images decoded from a regular grid over the 2-D code space."""
    lim = model.sample_prior(5000).abs().quantile(0.99).item()
    axis = torch.linspace(-lim, lim, steps, device=model.device())
    grid = torch.stack(torch.meshgrid(axis, axis.flip(0), indexing="xy"), -1).view(-1, 2)
    save_grid(model.decode(grid), path, nrow=steps)


# ---------------------------------------------------------------------------------------------
# The run: its settings and data, the loop's epochs and batches, its checkpoints
# ---------------------------------------------------------------------------------------------


def start_run(model, args, defaults, variant=None, fill=None):
    """The run the flags ask for: the paper's settings for the dataset under the flags given (the
    saved ones with --resume), printed; the run folder, locked; the seeded RNGs, device and data.
    fill(config, data): the model's checks of its flags against the data, and the settings that
    depend on the data, done before config.json is written (once)."""
    with machinery.run_folder(model, args, defaults, variant) as (config, out, checkpoint):
        seed_everything(config["seed"])
        device = machinery.choose_device(config["device"])
        config["precision"] = machinery.choose_precision(config["precision"], device)  # what autocast reads
        machinery.one_thread_if_busy(device)
        data = load_dataset(config["dataset"], config["data_dir"], config["image_size"])
        config["image_shape"], config["num_classes"] = list(data.image_shape), data.num_classes
        machinery.check_batch_size(config["batch_size"], len(data.x_train))
        if fill is not None:
            fill(config, data)
        machinery.save_settings(model, config, out, data, device, shown_dataset=args.dataset)
    return Run(model, config, out, device, data, checkpoint)


class Run:
    """One training run: its settings, folder, device and data, and where its loop is (epoch, step,
    the epoch's shuffle, the loss sums), which every checkpoint saves and --resume restores."""

    def __init__(self, name, config, out, device, data, checkpoint=None):
        self.name, self.config, self.out, self.device, self.data = name, config, out, device, data
        self.checkpoint = checkpoint  # the one to resume from, or None
        self.epoch, self.step, self.perm, self.sums, self.elapsed, self.history = 0, 0, None, {}, 0.0, []
        self.model, self.optimizers, self.schedulers = None, {}, {}
        self.saved_epoch = None  # the epoch of the checkpoint on disk
        self.ctrl_c, self.last_plot, self.on_device = None, -math.inf, None

    def track(self, model, optimizers, schedulers=None):
        """The networks, optimisers and learning-rate schedules that every checkpoint saves. When
        resuming, their state (and the loop's) is restored from the checkpoint now."""
        self.model, self.optimizers, self.schedulers = model, optimizers, schedulers or {}
        machinery.check_batch_norm_batch(self.config["batch_size"], model)
        if self.checkpoint is not None:
            machinery.restore_checkpoint(self, self.checkpoint)

    def epochs(self):
        """1, 2, ..., config["epochs"], from where a resumed run stopped. After each: log.csv (and
        losses.png, at most once a minute: matplotlib is slow beside a step). The first Ctrl-C (or
        SIGTERM) stops the loop after the current step, saved, even mid-epoch; --resume continues exactly."""
        if self.checkpoint is not None:
            machinery.set_rng_state(self.checkpoint["rng"])
            print(f"resuming {self.out} at epoch {self.epoch + 1}" + (f", step {self.step + 1}" if self.step else ""))
        with machinery.StopOnCtrlC() as self.ctrl_c, machinery.tensorboard_log(self) as tensorboard:
            while self.epoch < self.config["epochs"]:
                yield self.epoch + 1  # the loop's body trains it: run.batches() counts it done
                plot = self.epoch == self.config["epochs"] or self.ctrl_c.requested \
                    or time.perf_counter() - self.last_plot > 60
                machinery.write_log(self.out, self.history, plot, self.name)
                if tensorboard and self.history and self.history[-1]["epoch"] == self.epoch:
                    tensorboard.epoch(self.history[-1])
                self.last_plot = time.perf_counter() if plot else self.last_plot
                if self.ctrl_c.requested:
                    raise machinery.TrainingInterrupted(
                        f"stopped after epoch {self.epoch}; saved {self.out / 'checkpoint.pt'}. Resume with: "
                        f"{machinery.resume_command(self.name, self.out)}")

    def batches(self, x, y):
        """The epoch's mini-batches of (x, y), shuffled anew every epoch, full batches only, on the
        device, images as float32 in [0, 1] (converted per batch from the stored uint8). After the
        last: the epoch's mean losses are printed and logged; a loss that is not finite stops the
        run, its last good checkpoint kept."""
        if self.on_device is None or self.on_device[0] is not x:  # moved to the device once per run
            self.on_device = x, machinery.on_device(x, self.device), machinery.on_device(y, self.device)
        _, x, y = self.on_device
        batch_size, epochs = self.config["batch_size"], self.config["epochs"]
        steps = len(x) // batch_size
        self.perm = torch.randperm(len(x), device=x.device) if self.perm is None else self.perm.to(x.device)
        started = time.perf_counter()
        bar = tqdm(range(self.step, steps), desc=f"epoch {self.epoch + 1}/{epochs}", leave=False, initial=self.step,
                   total=steps, disable=None, dynamic_ncols=True)
        for step in bar:
            idx = self.perm[step * batch_size:(step + 1) * batch_size]
            yield float_images(x[idx].to(self.device, non_blocking=True)), y[idx].to(self.device, non_blocking=True)
            self.step = step + 1  # the body has trained on the batch and recorded its losses
            if not bar.disable and step % 25 == 0:  # one host sync every 25 steps, for the live losses
                bar.set_postfix({k: f"{float(v) / self.step:.3f}" for k, v in self.sums.items()})
            if self.ctrl_c is not None and self.ctrl_c.requested and self.step < steps:  # the last step ends the epoch
                bar.close()
                self.elapsed += time.perf_counter() - started
                self.save_checkpoint()
                raise machinery.TrainingInterrupted(
                    f"stopped at epoch {self.epoch + 1}, step {self.step}; saved {self.out / 'checkpoint.pt'}. "
                    f"Resume with: {machinery.resume_command(self.name, self.out)}")
        bar.close()
        means = {k: float(v) / steps for k, v in self.sums.items()}
        machinery.check_finite(means, self.epoch + 1, self.out, self.saved_epoch)  # the NaN stop
        self.epoch += 1
        self.elapsed += time.perf_counter() - started
        self.history.append({"epoch": self.epoch, **{k: round(v, 5) for k, v in means.items()},
                             "seconds": round(self.elapsed, 2)})
        tqdm.write(f"epoch {self.epoch}/{epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                   + f"  ({self.elapsed:.1f} s)")
        self.step, self.perm, self.sums, self.elapsed = 0, None, {}, 0.0

    def record(self, losses):
        """Add a step's losses (detached scalar tensors) to the epoch's sums, on the device: no host sync."""
        for key, value in losses.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()

    def saving(self, epoch):
        """Whether this epoch draws its pictures and writes its checkpoint: every --save-every
        epochs, the last epoch, and an epoch that Ctrl-C ended."""
        return epoch % self.config["save_every"] == 0 or epoch == self.config["epochs"] \
            or (self.ctrl_c is not None and self.ctrl_c.requested)

    def every_tenth(self, epoch):
        """True ten times a run and at its end: for the pictures that take a while to draw."""
        return epoch % max(1, self.config["epochs"] // 10) == 0 or epoch == self.config["epochs"]

    def save_checkpoint(self):
        """checkpoint.pt, written atomically: what track() was given, the RNGs, and where the loop is;
        never a state gone NaN, which would replace the last good one."""
        machinery.check_finite_run(self)
        machinery.save_checkpoint(self.out / "checkpoint.pt", {
            "model": self.name, "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed,
            "history": self.history, "perm": None if self.perm is None else self.perm.cpu(),
            "sums": {k: v.cpu() for k, v in self.sums.items()}, "model_state": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}, "rng": machinery.rng_state()})
        if self.step == 0:
            self.saved_epoch = self.epoch

    def done(self):
        machinery.print_done(self.out)
