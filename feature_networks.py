"""The networks that judge samples for eval.py's quality study (FID and the Inception Score):
Inception-v3 for colour images, as the papers report them, and for grey ones a small classifier
trained once on the dataset's own training split and cached beside the data. Machinery for the
study, not a study: downloads, caches and their checks."""

import contextlib
import hashlib
import io
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import common
import machinery
from machinery import CLIError, progress

INCEPTION = "Inception-v3"
IS_SPLITS = 10  # the Inception Score's mean and spread over 10 splits of the samples (Salimans et al., 2016)
CLASSIFIER_FEATURES = 128  # the size of the classifier's penultimate layer, where FID is measured
CLASSIFIER_STEPS, CLASSIFIER_BATCH, CLASSIFIER_LR = 1000, 128, 1e-3
CLASSIFIER_VERSION = b"1"  # part of the cache key: a change to the classifier or its training trains a new one
BATCH = 500  # images per forward pass when the classifier is tested


@dataclass
class FeatureNetwork:
    """What judges the samples: its name (in eval.json and the tables), a maker of torchmetrics'
    FID and IS on it, what it needs done to images in [0, 1], and what a reader should know about
    it (the classifier's test accuracy)."""

    name: str
    metrics: Callable
    prepare: Callable
    about: dict


def torchmetrics_quality():
    """torchmetrics' FrechetInceptionDistance and InceptionScore, imported only when the quality
    study runs: torchmetrics imports torchvision's models, which takes seconds."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    return FrechetInceptionDistance, InceptionScore


def quality_metrics(fid_feature, is_feature, **kwargs):
    """torchmetrics' FID, which keeps the reference images' features when it is reset (they are
    computed once for every set of samples), and its Inception Score over IS_SPLITS splits."""
    FrechetInceptionDistance, InceptionScore = torchmetrics_quality()
    with warnings.catch_warnings():  # IS keeps every sample's logits: 40 MB for 10,000 Inception-v3 samples
        warnings.filterwarnings("ignore", "Metric `InceptionScore` will save all extracted features")
        return (FrechetInceptionDistance(feature=fid_feature, reset_real_features=False, **kwargs),
                InceptionScore(feature=is_feature, splits=IS_SPLITS, **kwargs))


def inception_network():
    """Inception-v3 as the papers measure FID and IS on natural images: its 2048 pool features
    and its logits, with the TensorFlow weights that torch-fidelity ports (downloaded once into
    torch's hub cache). normalize: torchmetrics turns images in [0, 1] into the bytes it expects;
    grey images are repeated on the three channels."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    print(f"loading the {INCEPTION} weights (downloaded into {checkpoints} the first time, about 100 MB)")
    try:
        with contextlib.redirect_stderr(io.StringIO()) as download:  # torch.hub's messages, kept for success
            quality_metrics(2048, "logits_unbiased", normalize=True)  # loads the weights now: offline is one line
        sys.stderr.write(download.getvalue())
    except ModuleNotFoundError:  # torchmetrics' Inception-v3 is torch-fidelity's
        raise CLIError(f"{INCEPTION} needs torch-fidelity: pip install torch-fidelity, or use "
                              "--feature-network classifier (a classifier of the run's own dataset)") from None
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a damaged download a RuntimeError
        reason = machinery.first_line(error, 100)
        raise CLIError(f"cannot load the {INCEPTION} weights for FID and IS ({reason}); they are "
                              f"downloaded once into {checkpoints}: connect to the internet once, or use "
                              "--feature-network classifier (a classifier trained on the run's own dataset)") from None
    return FeatureNetwork(INCEPTION, lambda: quality_metrics(2048, "logits_unbiased", normalize=True),
                          lambda x: common.float_images(x).clamp(0, 1).expand(-1, 3, -1, -1), {})


class DatasetClassifier(torch.nn.Module):
    """The feature network of the grey datasets, where Inception-v3 (trained on colour photos)
    does not fit, as sample quality on MNIST is usually measured: a small CNN trained on the
    dataset's own training split. forward: class logits, for the Inception Score; features: its
    penultimate layer, for FID."""

    def __init__(self, image_shape, num_classes):
        super().__init__()
        channels, height, width = image_shape
        size = max(4, min(height, width, 28))  # larger images (Omniglot's 105 x 105) are averaged down to 28 x 28
        self.features = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(size),
            torch.nn.Conv2d(channels, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * (size // 4) ** 2, CLASSIFIER_FEATURES), torch.nn.ReLU())
        self.features.num_features = CLASSIFIER_FEATURES  # where torchmetrics' FID reads the feature size
        self.logits = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(CLASSIFIER_FEATURES, num_classes))

    def forward(self, x):
        return self.logits(self.features(x))


def train_classifier(data, device):
    """The classifier trained by cross-entropy on the training split (Adam, CLASSIFIER_STEPS random
    batches), and its accuracy on the test split. Seed 0 whatever --seed is: every run on a dataset
    is judged by the same network."""
    torch.manual_seed(0)
    classifier = DatasetClassifier(data.image_shape, data.num_classes).to(device).train()
    optimizer = common.adam(classifier.parameters(), CLASSIFIER_LR)
    x, y = data.x_train.to(device), data.y_train.to(device)
    for _ in progress(range(CLASSIFIER_STEPS), "training the classifier"):
        index = torch.randint(len(x), (CLASSIFIER_BATCH,), device=device)
        loss = torch.nn.functional.cross_entropy(classifier(common.float_images(x[index])), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    classifier.eval()
    predicted = common.map_batches(lambda b: classifier(b).argmax(1), data.x_test, BATCH, device)
    return classifier, float((predicted == data.y_test).float().mean())


def classifier_cache(data, data_dir):
    """(path, key) of a dataset's classifier: data_dir/cache/classifier-<dataset>-<C>x<H>x<W>-<key>.pt,
    beside the datasets' caches. The key hashes the training and test images and labels and the
    classifier's version, so another dataset, another --image-size, or an edited .npz file of the
    same name never reads a classifier that was not trained on it."""
    key = hashlib.sha256(CLASSIFIER_VERSION)
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_test):
        key.update(str(tuple(tensor.shape)).encode())
        key.update(tensor.contiguous().numpy().tobytes())
    key = key.hexdigest()[:16]
    shape = "x".join(map(str, data.image_shape))
    return Path(data_dir) / "cache" / f"classifier-{machinery.dataset_tag(data.name)}-{shape}-{key}.pt", key


def read_classifier(path, key, data):
    """The cached classifier and its test accuracy, or None (with the reason on stderr) when the file
    is damaged or not this dataset's; loaded with weights_only=True, so it cannot run code."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("key") != key:
            raise ValueError("not this dataset's classifier")
        classifier = DatasetClassifier(data.image_shape, data.num_classes)
        classifier.load_state_dict(saved["model_state"])
        return classifier, float(saved["test_accuracy"])
    except Exception as error:  # a truncated or damaged file: torch names many kinds of failure
        reason = machinery.first_line(error, 80)
        print(f"the classifier cache {path} is damaged ({reason}); training it again", file=sys.stderr)
        return None


def classifier_network(data, data_dir, device):
    """The classifier of the run's own dataset as the feature network, trained once and read from
    data_dir/cache/ after; its test accuracy is printed: how good a judge it is. The classes are the
    dataset's labels: digits for digits, MNIST and .npz files, and for Omniglot its characters (the
    background set's, as common.py numbers them), drawers 1-19 training and drawer 20 testing."""
    if data.num_classes < 2 or data.y_train.ndim != 1 or (data.y_train < 0).any():
        raise CLIError(f"{data.name} has no class labels to train a classifier on: use --feature-network "
                              "inception")
    path, key = classifier_cache(data, data_dir)
    cached = read_classifier(path, key, data) if path.is_file() else None
    if cached is None:
        print(f"training a classifier of {machinery.dataset_tag(data.name)} for FID and IS ({CLASSIFIER_STEPS} steps; "
              f"once: it is cached in {path})")
        started = time.perf_counter()
        classifier, accuracy = train_classifier(data, device)
        try:
            with machinery.atomic_path(path) as tmp:
                torch.save({"key": key, "model_state": classifier.state_dict(), "test_accuracy": accuracy}, tmp)
        except (CLIError, RuntimeError) as error:  # a full disk: the study goes on, the next one trains again
            print(f"warning: the classifier was not cached ({error})", file=sys.stderr)
        print(f"trained in {time.perf_counter() - started:.1f} s", end="; ")
    else:
        classifier, accuracy = cached
        print(f"classifier of {machinery.dataset_tag(data.name)} read from {path} (delete it to train it again)", end="; ")
    print(f"its accuracy on the {len(data.y_test)} test images: {accuracy:.2%}")
    classifier = classifier.to(device).eval().requires_grad_(False)
    return FeatureNetwork(f"{machinery.dataset_tag(data.name)} classifier",
                          lambda: quality_metrics(classifier.features, classifier),
                          lambda x: common.float_images(x).clamp(0, 1), {"classifier_test_accuracy": accuracy})


def default_feature_network(config):
    """Inception-v3 for colour images (CIFAR-10, SVHN, CelebA, Sprites), as the papers report FID
    and IS; the dataset's own classifier for grey ones (digits, MNIST, Omniglot, .npz files)."""
    return "inception" if config["image_shape"][0] == 3 else "classifier"


def feature_network(choice, data, data_dir, device):
    """--feature-network: "inception" or "classifier" (of the run's dataset) as a FeatureNetwork."""
    return inception_network() if choice == "inception" else classifier_network(data, data_dir, device)
