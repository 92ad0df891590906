"""Write mnist10k.npz, the 8,000 / 1,000 / 1,000 MNIST digits of the docs' CPU-budget runs: the
10,000 official MNIST test digits (the t10k files torchvision downloads), in a fixed shuffle
(torch.randperm with seed 0): its first 8,000 are x_train, the next 1,000 x_val, the last 1,000
x_test, uint8 images 28 x 28 with their labels. Any model script takes the file as --dataset.

    python make_mnist10k.py                          # reads (or downloads) data/MNIST/raw/t10k-*
    python make_mnist10k.py --data-dir DIR --out mnist10k.npz
"""

import os

import numpy as np
import torch
from torchvision.datasets import MNIST
from torchvision.datasets import utils as torchvision_utils
from torchvision.datasets.mnist import read_image_file, read_label_file

import machinery

T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLIT = (0.8, 0.1, 0.1)  # train, validation, test: 8,000 / 1,000 / 1,000 of the 10,000


def t10k_file(raw, name, download):
    """The path of an uncompressed t10k file in `raw`: unpacked from its .gz, or downloaded from
    torchvision's MNIST mirrors (with torchvision's checksum) when neither is there."""
    path = os.path.join(raw, name)
    if not os.path.exists(path):
        if not os.path.exists(path + ".gz"):
            if not download:
                raise machinery.CLIError(f"no {name} (or {name}.gz) in {raw}: put MNIST's t10k files there")
            md5 = dict(MNIST.resources)[f"{name}.gz"]
            try:
                torchvision_utils.download_url(MNIST.mirrors[0] + f"{name}.gz", raw, md5=md5)
            except OSError as error:
                raise machinery.CLIError(f"cannot download {name}.gz ({machinery.first_line(error, 80)}): put "
                                         f"MNIST's t10k files in {raw}") from None
        torchvision_utils.extract_archive(path + ".gz", raw)
    return path


def mnist10k(data_dir, download=True):
    """{x_train, y_train, x_val, y_val, x_test, y_test} of the shuffled t10k digits."""
    raw = os.path.join(data_dir, "MNIST", "raw")
    images, labels = T10K
    x = read_image_file(t10k_file(raw, images, download))
    y = read_label_file(t10k_file(raw, labels, download))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_train, n_val = round(SPLIT[0] * len(x)), round(SPLIT[1] * len(x))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    arrays = {}
    for split, index in parts.items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[index].numpy(), y[index].numpy().astype(np.int64)
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
