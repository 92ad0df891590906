"""Write mnist10k.npz, the 8,000 / 1,000 / 1,000 MNIST digits of the docs' CPU-budget runs: the
10,000 official MNIST test digits (the t10k files torchvision downloads), in a fixed shuffle
(torch.randperm with seed 0): its first 8,000 are x_train, the next 1,000 x_val, the last 1,000
x_test, uint8 images 28 x 28 with their labels. Any model script takes the file as --dataset.

    python make_mnist10k.py                          # reads (or downloads) data/MNIST/raw/t10k-*
    python make_mnist10k.py --data-dir DIR --out mnist10k.npz
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np
import torch
from torchvision.datasets import MNIST
from torchvision.datasets import utils as torchvision_utils

import machinery

T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLIT = (0.8, 0.1, 0.1)  # train, validation, test: 8,000 / 1,000 / 1,000 of the 10,000
# An IDX file (LeCun's MNIST format): a magic number 0x0803 (unsigned bytes, 3 dimensions) for the
# images, 0x0801 (1 dimension) for the labels, then each dimension's size as a big-endian uint32.
IDX = {"images": (2051, (28, 28)), "labels": (2049, ())}


def t10k_file(raw, name, download):
    """The path of a t10k file in `raw`, uncompressed or its .gz (read as it is: nothing is
    unpacked beside it), downloaded from torchvision's MNIST mirrors (with torchvision's
    checksum) when neither is there."""
    path = os.path.join(raw, name)
    if not os.path.exists(path) and not os.path.exists(path + ".gz"):
        if not download:
            raise machinery.CLIError(f"no {name} (or {name}.gz) in {raw}: put MNIST's t10k files there")
        md5 = dict(MNIST.resources)[f"{name}.gz"]
        try:
            torchvision_utils.download_url(MNIST.mirrors[0] + f"{name}.gz", raw, md5=md5)
        except (OSError, RuntimeError) as error:  # RuntimeError: the checksum of a damaged download
            raise machinery.CLIError(f"cannot download {name}.gz ({machinery.first_line(error, 80)}): put "
                                     f"MNIST's t10k files in {raw}") from None
    return path if os.path.exists(path) else path + ".gz"


def read_idx(path, kind):
    """The uint8 array of an MNIST IDX file of `kind` (images or labels), or of its .gz, checked:
    its magic number, and its length against the sizes its header gives. Else one CLIError line."""
    remedy = f"delete it and put MNIST's {os.path.basename(path)} there (it is downloaded when missing)"
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:  # a cut-off or damaged .gz
        raise machinery.CLIError(f"{path} is damaged or cut off ({machinery.first_line(error, 60)}): {remedy}") \
            from None
    magic, image_size = IDX[kind]
    start = 4 * (2 + len(image_size))
    if len(data) < start or struct.unpack(">I", data[:4])[0] != magic:
        raise machinery.CLIError(f"{path} is not an MNIST {kind} file (it starts with {data[:12]!r}, not the IDX "
                                 f"number {magic}): {remedy}")
    shape = struct.unpack(f">{1 + len(image_size)}I", data[4:start])
    if shape[1:] != image_size or len(data) - start != math.prod(shape):
        raise machinery.CLIError(f"{path} holds {len(data) - start:,} bytes of {kind} where its header announces "
                                 f"{' x '.join(map(str, shape))}: it is cut off or not MNIST's; {remedy}")
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


def mnist10k(data_dir, download=True):
    """{x_train, y_train, x_val, y_val, x_test, y_test} of the shuffled t10k digits."""
    raw = os.path.join(data_dir, "MNIST", "raw")
    images, labels = (t10k_file(raw, name, download) for name in T10K)
    x, y = read_idx(images, "images"), read_idx(labels, "labels")
    if len(x) != len(y):  # the 60,000 training labels beside the 10,000 test images, say
        raise machinery.CLIError(f"{images} has {len(x):,} images but {labels} has {len(y):,} labels: put the "
                                 "t10k images and labels of one download there")
    if y.size and y.max() > 9:
        raise machinery.CLIError(f"{labels} has the label {y.max()}, not a digit 0-9: it is not MNIST's labels file")
    x, y = torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_train, n_val = round(SPLIT[0] * len(x)), round(SPLIT[1] * len(x))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    arrays = {}
    for split, index in parts.items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[index].numpy(), y[index].numpy()
    return arrays


def main(argv=None):
    parser = machinery.ArgumentParser(prog="make_mnist10k.py", description=__doc__,
                                      formatter_class=machinery.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="where MNIST/raw/ is, or is downloaded to (default: data)")
    parser.add_argument("--out", default="mnist10k.npz", help="the .npz to write (default: mnist10k.npz)")
    args = parser.parse_args(argv)
    arrays = mnist10k(args.data_dir)
    with machinery.atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    sizes = " / ".join(str(len(arrays[f"x_{split}"])) for split in ("train", "val", "test"))
    print(f"wrote {args.out}: {sizes} MNIST t10k digits (train / val / test)")


if __name__ == "__main__":
    machinery.cli(main)
