"""The DAAE paper's measurements (Creswell & Bharath), for any run folder of any model script.

    python eval.py reconstruct runs/daae-mnist
    python eval.py classify runs/aae-mnist runs/daae-mnist runs/idaae-mnist --max-train 10000
    python eval.py likelihood runs/daae-mnist --steps 0 1 5 10
    python eval.py quality runs/aae-mnist runs/daae-mnist --steps 0 5 10
    python eval.py all runs/aae-mnist runs/daae-mnist runs/idaae-mnist --table mnist.md
    python eval.py compare runs/daae-mnist-s1 runs/daae-mnist-s2 --against runs/aae-mnist-s1 runs/aae-mnist-s2

The first three studies follow the DAAE paper's evaluation protocol (arXiv:1703.01220: its
experiments, and its appendix for the log-likelihood); the fourth measures the samples as later
papers do:

  reconstruct  corrupt the test images with the run's training sigma, encode, decode; the mean
               squared error against the clean images, mean and standard error over the images
               (and each image's error, for compare).
               A supervised AAE (aae.py --supervised) decodes with each test image's true label.
  classify     an RBF SVC (scikit-learn's defaults) on the codes of the training split, accuracy
               on the test split; the same SVC on raw pixels and on PCA to the code size as
               baselines, these two also with gamma "auto" (1 / dims), the default of the
               authors' scikit-learn 0.18 (today's, "scale", gives the same for codes of unit
               variance). With an evaluation set of drawers (Omniglot, the paper's test (b)): the
               first 20 evaluation-set characters, for each drawer a linear SVM trained on the
               other 19 drawers and tested on it; mean and max over the 20 drawers. With
               attributes (CelebA): a linear classifier per attribute on the codes. For compare:
               whether each SVC was right on each test image, and each drawer's accuracy.
  likelihood   a Gaussian Parzen window on samples of the model; its bandwidth, from
               logspace(-1, 0, 10), is chosen on the validation split, and the mean
               log-likelihood (with its standard error) is reported on the test split and on the
               evaluation set when there is one. Omniglot follows the authors' notebooks: the
               bandwidth is chosen on drawer 20 (the paper's "testing" images), and a fresh set
               of samples scores drawer 20 and the evaluation set, where the paper's numbers
               were measured (--bandwidth-on validation for the split-off validation images).
               Models with a Markov chain (DAAE) are also scored after each number of chain steps
               in --steps, plotted in likelihood_steps.png.
               Colour images are scored in greyscale (the mean of the channels), as the authors did.
  quality      the Frechet Inception Distance (FID, Heusel et al., arXiv:1706.08500) of --samples
               samples against the test split, lower is better, and the Inception Score (IS,
               Salimans et al., arXiv:1606.03498), mean and sd over 10 splits of the samples,
               higher is better, up to the number of classes; both by torchmetrics. The feature
               network (--feature-network) is Inception-v3 for colour images, as the papers report
               them (its weights are downloaded once), and for grey ones (digits, MNIST, Omniglot,
               .npz files) a small CNN trained once on the dataset's own training split and cached
               in DATA_DIR/cache/, as sample quality on MNIST is usually measured; its test
               accuracy is printed. The validation images, scored the same way, show what real
               images get. Markov chains are scored after each of --steps, in quality_steps.png.
  all          the four.
  prior        whether the test codes follow the prior p(z): the energy distance between them and
               as many prior samples, with a permutation test (the AAE paper's Figure 2 as a
               number; for images and points; not part of all).
  compare      two groups of evaluated runs, e.g. a DAAE's seeds (the RUN_DIRs) against an AAE's
               (--against), from their eval.json alone: runs are paired by seed (else in the
               order given), and every measure both groups have is tested paired. Accuracy:
               image by image, McNemar's exact test on the discordant images of all pairs pooled;
               Omniglot's test (b): drawer by drawer, a paired t-test over the drawers;
               reconstruction: image by image, a paired t-test over the images; the Parzen
               log-likelihood, FID and IS: one value per run, a paired t-test over the pairs
               (none with one pair). The 95 % intervals of the per-image and per-drawer measures
               are a paired bootstrap over the items and the pairs; those of the per-run ones the
               t-test's. The first group's codes are also tested against the pixel and PCA
               baselines on the same images. Printed as markdown, a sentence per measure.
  table        the README's results table, from the runs stored in a results folder (results/):
               its table.json names each row's runs and figure (a stored one, mean ± sd over the
               runs, or a paired difference as compare computes it); nothing is evaluated.

Each study prints a markdown table and merges its results into RUN_DIR/eval.json (a study
replaces its own entry and keeps the others, under a lock: several eval.py processes can evaluate
one run at once). Given several run folders, a comparison table across them follows (the paper's
AAE vs DAAE vs iDAAE tables); --table writes it to a file.
"""

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import math
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import SGDClassifier
from sklearn.svm import SVC
from tqdm import tqdm

import common
import machinery
import toy

STUDIES = ("reconstruct", "classify", "likelihood", "quality")  # of images
TOY_STUDIES = ("modes",)  # of points in the plane (toy25, ring8)
CODE_STUDIES = ("prior",)  # of the codes, for images and points alike; asked for by name, not in all
PERMUTATIONS, PRIOR_CODES = 200, 1000  # the prior study's permutation test, on the first 1,000 test codes
TOY_SAMPLES = 10_000  # the ALI paper's: 10,000 samples of p(x), and 10,000 held-out points reconstructed
BANDWIDTHS = np.logspace(-1, 0, 10)  # the authors' grid of Parzen bandwidths
LOO_CHARACTERS = 20  # test (b): the first 20 characters of the evaluation set
BATCH = 500  # images per forward pass when encoding, decoding or sampling
CHAIN_BYTES = 2**28  # at most 256 MB of Markov-chain images held at once
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def progress(iterable, desc, **kwargs):
    return tqdm(iterable, desc=desc, leave=False, disable=None, dynamic_ncols=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Runs: a folder -> its settings, its trained model, its data
# ---------------------------------------------------------------------------------------------


def load_run(run_dir, device):
    """common.load_run (the run's model, in eval mode), once its eval.json is known to be readable:
    a damaged eval.json stops us before any work, not after it."""
    run = common.load_run(run_dir, device)
    read_eval_json(run.path)
    return run


def mean_and_standard_error(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    se = values.std() / math.sqrt(len(values)) if len(values) > 1 else torch.tensor(0.0)
    return float(values.mean()), float(se)


def load_data(config, data_dir, cache):
    """The run's dataset with the split it was trained on (the splits are fixed by common.py)."""
    key = (config["dataset"], data_dir or config["data_dir"], config.get("image_size"))
    if key not in cache:
        try:
            cache[key] = common.load_dataset(*key)
        except common.CLIError as error:  # its advice for the model scripts does not fit here
            raise common.CLIError(str(error).replace(common.OFFLINE_HINT, "or point eval.py's --data-dir at them")) \
                from None
    data = cache[key]
    if list(data.image_shape) != list(config["image_shape"]):
        raise common.CLIError(f"{config['dataset']} in {key[1]} has images of shape {list(data.image_shape)}, but "
                              f"the run was trained on {config['image_shape']}; point --data-dir at its data")
    return data


def read_eval_json(run_dir):
    path = Path(run_dir) / "eval.json"
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except ValueError:
        results = None
    if not isinstance(results, dict):
        raise common.CLIError(f"{path} is not valid JSON of eval.py's results; delete it and evaluate again")
    return results


EVAL_LOCK = ".eval.lock"  # beside eval.json; not the training's .lock, so a run can be evaluated while it trains


def merge_results(run_dir, study_key, result):
    """RUN_DIR/eval.json with this study's entry replaced and the other studies' entries kept.
    Several eval.py processes may evaluate one run at once: the read, change and write are done
    under RUN_DIR/.eval.lock, so that no process writes over a study another one merged after
    its read; the write itself is atomic, so a reader never sees half a file."""
    with machinery.exclusive_lock(Path(run_dir) / EVAL_LOCK):
        results = read_eval_json(run_dir)
        results[study_key] = result
        machinery.write_json(Path(run_dir) / "eval.json", results)


# Per-item results (one value per test image or drawer), kept in eval.json so that `compare` can
# pair two runs image by image without evaluating either again. Each list is one string: eval.json
# is written indented, one line per list element, and 10,000 elements would bury the results.


def pack_bits(correct):
    """[True, False, ...] -> "10...": one '0' or '1' character per test image, in the test split's order."""
    return "".join("1" if c else "0" for c in correct)


def unpack_bits(text):
    return np.array([c == "1" for c in text], dtype=bool)


def pack_numbers(values):
    """Numbers -> one string of them, to 6 significant digits, separated by spaces."""
    return " ".join(f"{float(v):.6g}" for v in values)


def unpack_numbers(text):
    return np.array(text.split(), dtype=float)


# ---------------------------------------------------------------------------------------------
# Reconstruction
# ---------------------------------------------------------------------------------------------


def reconstruct(model, data, device):
    """Per-image MSE between the clean test images and dec(enc(x + sigma eps)), sigma the
    training corruption (none for a model trained without it); mean and standard error, and each
    image's error (squared_errors, in the test split's order).
    A supervised AAE (aae.py --supervised) decodes [label, z]: it is given each test image's
    true label, as in training."""
    supervised = bool(getattr(model, "decoder_labels", 0))
    labels = data.y_test.to(device)

    def squared_errors(index):
        x = common.float_images(data.x_test[index.cpu()].to(device))
        x_in = common.corrupt(x, model.sigma) if model.sigma > 0 else x
        z = model.encode(x_in)
        x_rec = model.decode(z, labels[index]) if supervised else model.decode(z)
        return (x_rec - x).pow(2).flatten(1).mean(1)

    errors = common.map_batches(squared_errors, torch.arange(len(data.x_test)), BATCH, device)
    mse, se = mean_and_standard_error(errors)
    result = {"mse": mse, "se": se, "sigma": model.sigma, "images": len(errors),
              "squared_errors": pack_numbers(errors.tolist())}  # per test image, for `compare`
    if supervised:
        result["notes"] = ["the supervised AAE's decoder was given each test image's true label, dec([y, enc(x)])"]
    return result


def reconstruction_table(result):
    return markdown(["corruption sigma", "test images", "MSE", "SE"],
                    [[f"{result['sigma']:g}", result["images"], f"{result['mse']:.5f}", f"{result['se']:.5f}"]])


# ---------------------------------------------------------------------------------------------
# The toy datasets: modes covered, high-quality samples, reconstruction of held-out points
# ---------------------------------------------------------------------------------------------


def mode_coverage(samples, means, std):
    """The ALI paper's measure: every sample is assigned to the mixture component most responsible
    for it (with equal weights and variances, the nearest mean); a mode is covered when at least one
    sample is assigned to it. And the share of "high-quality" samples, within 3 std of their mode
    (as later papers report it, e.g. VEEGAN, Srivastava et al., 2017), and the modes that get at least
    one of those: samples spread over the whole plane cover every mode by the first count, not the last."""
    distance = torch.cdist(samples.double().cpu(), means.double())
    nearest, assigned = distance.min(1)
    good = nearest <= 3 * std
    return {"modes_covered": int(assigned.unique().numel()), "high_quality": float(good.double().mean()),
            "modes_with_high_quality": int(assigned[good].unique().numel())}


def modes(model, data, config, device, samples=None, steps=None):
    """The ALI paper's toy study: the modes that `samples` (10,000) draws of p(x) cover, their share
    of high-quality samples, and the squared distance |x - dec(enc(x))|^2 of the 10,000 held-out
    test points to their reconstructions (clean inputs, as the paper's; per point, for `compare`).
    A model with a Markov chain (the DAAE) is scored at x_0 and after each of `steps` (by default
    its sample_steps) too."""
    means, std = toy.MIXTURES[config["dataset"]]
    n, notes = samples or TOY_SAMPLES, []
    result = {"samples": n, "modes": len(means), "std": std, **mode_coverage(draw_samples(model, n, device), means, std)}
    supervised = bool(getattr(model, "decoder_labels", 0))
    labels = data.y_test.to(device)

    def squared_distances(index):
        x = data.x_test[index.cpu()].to(device)
        z = model.encode(x)
        return (model.decode(z, labels[index]) if supervised else model.decode(z)).sub(x).pow(2).sum(1)

    errors = common.map_batches(squared_distances, torch.arange(len(data.x_test)), BATCH, device)
    mse, se = mean_and_standard_error(errors)
    result.update(reconstruction=mse, reconstruction_se=se, points=len(errors), squared_errors=pack_numbers(errors.tolist()))
    if supervised:
        notes.append("the supervised AAE's decoder was given each test point's true mode, dec([y, enc(x)])")
    # Step 0 is x_0, the samples above: only the chain's later steps are scored again
    asked = [config.get("sample_steps", 0)] if steps is None else steps
    chain = chain_steps(model, config, [t for t in asked if t > 0], notes)
    if chain:
        chains = chain_samples(model, n, chain, 2, device)
        result["steps"] = {str(t): mode_coverage(chains[t], means, std) for t in chain}
    result["notes"] = notes
    return result


def modes_table(result):
    def row(name, r):
        return [name, f"{r['modes_covered']} of {result['modes']}", f"{r['high_quality']:.1%}",
                f"{r['modes_with_high_quality']} of {result['modes']}"]

    rows = [row("samples of p(x)", result)] + [row(f"after {t} chain steps", r) for t, r in result.get("steps", {}).items()]
    return (markdown(["samples", "modes covered", "high-quality (within 3 std)", "modes with a high-quality sample"],
                     rows)
            + f"\n\nreconstruction of {result['points']} held-out points: squared distance "
              f"{result['reconstruction']:.4f} ± {result['reconstruction_se']:.4f}")


def prior_match(model, data, device, permutations=PERMUTATIONS):
    """How well the test codes follow the prior (the AAE paper's Figure 2, as a number): the energy
    distance (Szekely & Rizzo) between the test split's codes and as many samples of p(z),
        E = 2 E|z - z'| - E|z - z~| - E|z' - z'~|,   z codes, z' prior samples,
    zero exactly when the two distributions are equal, with no kernel bandwidth to choose (an MMD
    would need one, and the priors differ in scale), in any dimension. Its permutation test
    (the two sets' labels shuffled) gives the p-value of "the codes are samples of p(z)", and the
    shuffled statistics' mean the value two samples of one distribution get. Codes are encode(x)
    (a stochastic encoder's posterior mean, as the pictures draw them); for a stochastic encoder
    also one sample z ~ q(z|x) per image, the aggregated posterior q(z) that the objectives match."""
    x = data.x_test[:PRIOR_CODES]  # the permutations index a (2n)^2 distance matrix
    encoders = {"codes": model.encode}
    if hasattr(model.encoder, "mean"):  # encoders.py's stochastic encoders: q(z|x) has a spread
        encoders["sampled codes"] = model.encoder
    result = {"images": len(x), "permutations": permutations}
    for name, encode in encoders.items():
        z = common.map_batches(encode, x, BATCH, device).double()
        both = torch.cat([z, model.sample_prior(len(z)).cpu().double()])
        distance, n = torch.cdist(both, both), len(z)
        # Column k of `is_code` marks which rows are "codes" in labelling k: 0 the true one, then shuffles.
        is_code = torch.stack([torch.arange(2 * n) < n] + [torch.randperm(2 * n) < n for _ in range(permutations)], 1)
        a, b = is_code.double(), (~is_code).double()
        within_a, within_b, across = ((u * (distance @ v)).sum(0) / n**2 for u, v in ((a, a), (b, b), (a, b)))
        energy = 2 * across - within_a - within_b
        observed, shuffled = float(energy[0]), energy[1:]
        result[name.replace(" ", "_")] = {"energy_distance": observed, "shuffled_mean": float(shuffled.mean()),
                                          "p_value": (1 + int((shuffled >= observed).sum())) / (1 + permutations)}
    return result


def prior_table(result):
    rows = [[name.replace("_", " "), f"{r['energy_distance']:.4f}", f"{r['shuffled_mean']:.4f}", f"{r['p_value']:.3f}"]
            for name, r in result.items() if isinstance(r, dict)]
    return markdown(["test codes against p(z)", "energy distance", "two samples of one distribution",
                     f"p ({result['permutations']} permutations)"], rows)


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def encode(model, x, device):
    return common.map_batches(model.encode, x, BATCH, device).flatten(1).numpy()


def pixels(x):
    return common.float_images(x).flatten(1).numpy()


def pca(n_components, x_train, *others, seed=0):
    """x_train and the others projected on the first principal components of x_train."""
    n_components = min(n_components, *x_train.shape)
    fitted = PCA(n_components, random_state=seed).fit(x_train)
    return [fitted.transform(x) for x in (x_train, *others)]


def correct(classifier, x_train, y_train, x_test, y_test):
    """The classifier fitted on the training features: for each test row, whether it predicts its label."""
    return classifier.fit(x_train, y_train).predict(x_test) == y_test


def accuracy(classifier, x_train, y_train, x_test, y_test):
    return float(np.mean(correct(classifier, x_train, y_train, x_test, y_test)))


def subsample(n, max_n, seed):
    """Sorted indices of a random max_n of range(n) (all of them when max_n is None or >= n)."""
    if max_n is None or max_n >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_n].sort().values


def first_characters(y, n=LOO_CHARACTERS):
    """Boolean mask of the images of the n characters with the lowest indices."""
    return torch.isin(y, y.unique().sort().values[:n])


def leave_one_drawer_out(drawers):
    """[(drawer, train indices, test indices)]: each drawer's images are the test set once, and
    the images of every other drawer are its training set."""
    return [(int(d), (drawers != d).nonzero().squeeze(1), (drawers == d).nonzero().squeeze(1))
            for d in drawers.unique().sort().values]


def drawer_study(codes, images, y, drawers, n_components, seed):
    """Test (b): linear SVMs, one per left-out drawer, on codes, pixels and PCA of the pixels: the
    mean, standard error and max over the drawers, and each drawer's accuracy (the _each keys)."""
    # "A linear SVM" in the paper: SVC(kernel="linear"), the same libsvm SVC as test (a) with the
    # kernel changed (hinge loss, C = 1), rather than liblinear's squared-hinge LinearSVC.
    accuracies = {"codes": [], "pixels": [], "pca": []}
    y = y.numpy()
    folds = leave_one_drawer_out(drawers)
    for drawer, train, test in progress(folds, "leave one drawer out"):
        train, test = train.numpy(), test.numpy()
        pca_train, pca_test = pca(n_components, images[train], images[test], seed=seed)  # fitted on the 19 drawers
        for features, (f_train, f_test) in (("codes", (codes[train], codes[test])),
                                            ("pixels", (images[train], images[test])),
                                            ("pca", (pca_train, pca_test))):
            accuracies[features].append(accuracy(SVC(kernel="linear"), f_train, y[train], f_test, y[test]))
    result, each = {}, {}
    for features, values in accuracies.items():
        suffix = "" if features == "codes" else f"_{features}"
        result[f"loo20_linear{suffix}"], result[f"loo20_linear{suffix}_se"] = mean_and_standard_error(values)
        result[f"loo20_linear{suffix}_max"] = float(np.max(values))
        each[f"loo20_linear{suffix}_each"] = {str(drawer): value for (drawer, _, _), value in zip(folds, values)}
    return {**result, **each}


def attribute_accuracies(codes_train, y_train, codes_test, y_test, names, seed):
    """A linear classifier per attribute: hinge loss with an L2 penalty of 0.01, as in the
    authors' CelebA code (scikit-learn's SGDClassifier(loss="hinge", alpha=0.01))."""
    result = {}
    for j, name in enumerate(progress(names, "attributes")):
        if len(np.unique(y_train[:, j])) < 2:  # an attribute that never varies: predict its one value
            result[name] = float(np.mean(y_test[:, j] == y_train[0, j]))
            continue
        classifier = SGDClassifier(loss="hinge", alpha=0.01, random_state=seed)
        result[name] = accuracy(classifier, codes_train, y_train[:, j], codes_test, y_test[:, j])
    return result


def svm_study(model, data, train, device, seed):
    """Test (a): RBF SVCs trained on the codes, the pixels and PCA of the pixels of the training
    images `train`, scored on the test split: each one's accuracy, and whether it was right on each
    test image (the _correct keys, for `compare`)."""
    x_train, y_train, y_test = data.x_train[train], data.y_train[train].numpy(), data.y_test.numpy()
    if len(np.unique(y_train)) < 2:
        raise common.CLIError(f"the {len(train)} training images drawn for the classifiers are all of one class; "
                              "a classifier needs two: give a larger --max-train")
    features = {"": (encode(model, x_train, device), encode(model, data.x_test, device)),
                "_pixels": (pixels(x_train), pixels(data.x_test))}
    features["_pca"] = tuple(pca(model.latent_dim, *features["_pixels"], seed=seed))
    # SVC() as the paper has it, with today's defaults: C = 1, gamma = "scale", 1 / (dims x the
    # features' variance). The authors' scikit-learn 0.18 defaulted to gamma = "auto", 1 / dims,
    # another gamma wherever that variance is not 1 (pixels in [0, 1] have far less): the
    # baselines of their tables are scored that way too (the _auto keys). The codes keep today's
    # SVC only: codes matched to the N(0, I) prior of the paper's models have roughly unit
    # variance, where the two gammas agree.
    classifiers = {"": ("", "scale"), "_pixels": ("_pixels", "scale"), "_pixels_auto": ("_pixels", "auto"),
                   "_pca": ("_pca", "scale"), "_pca_auto": ("_pca", "auto")}
    accuracies, right = {}, {}
    for key, (suffix, gamma) in progress(classifiers.items(), "RBF SVMs"):
        f_train, f_test = features[suffix]
        right[f"svm_rbf{key}_correct"] = correct(SVC(gamma=gamma), f_train, y_train, f_test, y_test)
        accuracies[f"svm_rbf{key}"] = float(np.mean(right[f"svm_rbf{key}_correct"]))
    return {**accuracies, "train_images": len(train), "test_images": len(y_test),
            "code_dims": features[""][0].shape[1], "pixel_dims": features["_pixels"][0].shape[1],
            "pca_dims": features["_pca"][0].shape[1], **{key: pack_bits(v) for key, v in right.items()}}


def attribute_study(model, data, train, device, seed):
    """CelebA: a linear classifier per attribute on the codes of the training images `train`."""
    n_attributes = data.y_train.shape[1]
    names = CELEBA_ATTRIBUTES if n_attributes == len(CELEBA_ATTRIBUTES) else \
        [f"attribute_{j}" for j in range(n_attributes)]
    each = attribute_accuracies(encode(model, data.x_train[train], device), data.y_train[train].numpy(),
                                encode(model, data.x_test, device), data.y_test.numpy(), names, seed)
    return {"attributes_linear": float(np.mean(list(each.values()))), "attributes_linear_each": each,
            "train_images": len(train), "code_dims": model.latent_dim}


def classify(model, data, device, max_train=None, seed=0):
    """Every classification test the dataset has labels for: (a) class labels, attributes, and
    (b) an evaluation set with drawers."""
    result, notes = {}, []
    train = subsample(len(data.x_train), max_train, seed)
    if data.y_train.ndim == 2:  # attributes (CelebA: N x 40 in {0, 1})
        result.update(attribute_study(model, data, train, device, seed))
    elif data.num_classes >= 2 and (data.y_train >= 0).all():
        result.update(svm_study(model, data, train, device, seed))
    else:
        notes.append(f"{data.name} has no class labels: no classifier on the test split")
    if "train_images" in result and len(train) < len(data.x_train):
        notes.append(f"classifiers trained on a random {len(train)} of the {len(data.x_train)} training images "
                     "(--max-train)")

    if "drawer_eval" in data.extra:
        x_eval, y_eval, drawers = data.extra["x_eval"], data.extra["y_eval"], data.extra["drawer_eval"]
        if len(x_eval) == 0:
            notes.append("the evaluation set is empty: no leave-one-drawer-out test")
        else:
            chosen = first_characters(y_eval)
            characters = len(y_eval[chosen].unique())
            if characters < LOO_CHARACTERS:
                notes.append(f"the evaluation set has only {characters} characters, fewer than {LOO_CHARACTERS}")
            x = x_eval[chosen]
            result.update(drawer_study(encode(model, x, device), pixels(x), y_eval[chosen], drawers[chosen],
                                       model.latent_dim, seed))
            result.update(loo20_characters=characters, loo20_images=len(x))
    result["notes"] = notes
    return result


def classification_table(result, config):
    percent = "{:.2%}".format
    features = (("", "codes"), ("_pixels", "raw pixels"), ("_pca", "PCA of the pixels"))
    rows = []
    if "svm_rbf" in result:
        dims = {"": result["code_dims"], "_pixels": result["pixel_dims"], "_pca": result["pca_dims"]}
        auto = ", gamma auto (the authors' sklearn 0.18 default)"
        svcs = [("", "", "codes"), ("_pixels", "_pixels", "raw pixels"),
                ("_pixels_auto", "_pixels", "raw pixels" + auto), ("_pca", "_pca", "PCA of the pixels"),
                ("_pca_auto", "_pca", "PCA of the pixels" + auto)]
        rows += [[f"RBF SVC: {result['train_images']} training -> {result['test_images']} "
                  f"{split_name(config, 'test')} images", name,
                  dims[suffix], percent(result[f"svm_rbf{key}"]), ""] for key, suffix, name in svcs]
    if "loo20_linear" in result:
        rows += [[f"linear SVM, leave one drawer out: {result['loo20_characters']} evaluation characters", name,
                  "", f"{percent(result[f'loo20_linear{suffix}'])} ± {percent(result[f'loo20_linear{suffix}_se'])}",
                  percent(result[f"loo20_linear{suffix}_max"])] for suffix, name in features]
    if "attributes_linear" in result:
        each = result["attributes_linear_each"]
        rows.append([f"linear, one per attribute ({len(each)}), mean over them", "codes", result["code_dims"],
                     percent(result["attributes_linear"]), percent(max(each.values()))])
    table = markdown(["classifier", "features", "dims", "accuracy (mean)", "max"], rows) if rows else ""
    if "attributes_linear" in result:
        table += "\n\n" + markdown(["attribute", "accuracy"], [[k, percent(v)] for k, v in each.items()])
    return table


# ---------------------------------------------------------------------------------------------
# The AAE paper's own measures for semi_supervised_aae.py runs (Sections 5 and 6), and baselines
# ---------------------------------------------------------------------------------------------

NN_BASELINE_STEPS = 2000  # Adam steps of the NN baseline on the labelled images (its loss is near 0 long before)


def cluster_correct(p_val, y_val, p_test, y_test):
    """Section 6's rule: each cluster k takes the label of the ONE validation image with the
    highest q(y = k | x); each test image the label of its argmax cluster. Right or wrong per
    test image."""
    cluster_label = y_val[p_val.argmax(0)]
    return (cluster_label[p_test.argmax(1)] == y_test).numpy()


def majority_cluster_correct(p_val, y_val, p_test, y_test):
    """Not the paper's rule, reported beside it: each cluster takes the most frequent label of the
    validation images assigned to it (a cluster with none keeps the paper's rule's label)."""
    cluster_label = y_val[p_val.argmax(0)].clone()
    assigned = p_val.argmax(1)
    for k in range(p_val.shape[1]):
        if (assigned == k).any():
            cluster_label[k] = y_val[assigned == k].mode().values
    return (cluster_label[p_test.argmax(1)] == y_test).numpy()


def cluster_error(p_val, y_val, p_test, y_test):
    return float((~cluster_correct(p_val, y_val, p_test, y_test)).mean())


def majority_cluster_error(p_val, y_val, p_test, y_test):
    return float((~majority_cluster_correct(p_val, y_val, p_test, y_test)).mean())


def nn_baseline_error(module, config, x, y, x_test, y_test, device, seed):
    """The paper's "NN baseline": a network of the encoder's shape (its trunk and y head, freshly
    initialised, with the run's input noise and dropout) trained by cross-entropy on the
    labelled images alone, with the run's learning rate and labelled batch size."""
    torch.manual_seed(seed)
    encoder = module.build_model(config).encoder.to(device).train()
    optimizer = common.adam(encoder.parameters(), config["lr"])
    x, y = common.float_images(x.to(device)), y.to(device)
    batch = min(len(x), config["batch_size"])
    for _ in progress(range(NN_BASELINE_STEPS), "NN baseline"):
        index = torch.randint(len(x), (batch,), device=device)
        logits, _ = encoder(common.corrupt(x[index], config["input_noise"]))
        loss = torch.nn.functional.cross_entropy(logits, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    encoder.eval()
    predicted = common.map_batches(lambda b: encoder(b)[0].argmax(1), x_test, BATCH, device)
    return float((predicted != y_test).float().mean())


def semi_supervised_study(run, data, device, seed):
    """semi_supervised_aae.py runs: the test error of argmax q(y|x) (Section 5) and, on the same
    labelled images, the NN baseline and an RBF SVC on raw pixels; or, for clustering runs
    (--labels 0), Section 6's cluster error, and majority voting beside it."""
    model, config = run.model, run.config
    module = importlib.import_module(config["model"])  # a model script common.load_run has checked
    code = "y W_C + z (Section 7)" if config["reduce_dim"] else "[q(y|x), z]"
    result = {"notes": [f"the SVC 'codes' are the code the decoder sees, {code}"]}
    if data.num_classes < 2 or (data.y_test < 0).any():
        result["notes"].append(f"{data.name} has no class labels: no classification error")
        return result

    def probabilities(x):
        return common.map_batches(model.class_probabilities, x, BATCH, device)

    p_test = probabilities(data.x_test)
    if config["labels"]:
        result["semi_supervised_error"] = float((p_test.argmax(1) != data.y_test).float().mean())
        labelled = common.labelled_subset(data.y_train, config["labels"], data.num_classes, config["seed"])
        x, y = data.x_train[labelled], data.y_train[labelled]
        result["nn_baseline_error"] = nn_baseline_error(module, config, x, y, data.x_test, data.y_test, device, seed)
        result["svm_pixels_error"] = 1 - accuracy(SVC(), pixels(x), y.numpy(), pixels(data.x_test),
                                                  data.y_test.numpy())
        result["labelled_images"] = len(labelled)
    else:
        p_val = probabilities(data.x_val)
        right = cluster_correct(p_val, data.y_val, p_test, data.y_test)
        majority = majority_cluster_correct(p_val, data.y_val, p_test, data.y_test)
        result["cluster_error"], result["cluster_error_majority"] = float((~right).mean()), float((~majority).mean())
        result["clusters"] = config["clusters"]
        result["clusters_used"] = len(p_test.argmax(1).unique())  # test images' argmax clusters
        result["cluster_correct"], result["cluster_majority_correct"] = pack_bits(right), pack_bits(majority)
    return result


def semi_supervised_table(result):
    percent = "{:.2%}".format
    rows = [[title, percent(result[key])] for key, title in (
        ("semi_supervised_error", f"semi-supervised AAE, argmax q(y|x) ({result.get('labelled_images')} labels)"),
        ("nn_baseline_error", "NN baseline: the encoder's network on the labelled images alone"),
        ("svm_pixels_error", "RBF SVC on the raw pixels of the labelled images"),
        ("cluster_error", f"clustering, {result.get('clusters')} clusters: the paper's rule (one validation image)"),
        ("cluster_error_majority", "clustering: majority vote of the validation images (not the paper's)"),
    ) if key in result]
    return markdown(["classifier", "test error"], rows) if rows else ""


# ---------------------------------------------------------------------------------------------
# Parzen log-likelihood
# ---------------------------------------------------------------------------------------------


def greyscale(x):
    """Colour images as the mean of their channels (the authors scored Sprites this way)."""
    return common.float_images(x).mean(1, keepdim=True) if x.shape[1] == 3 else x


def log_likelihoods(samples, data, bandwidths, desc):
    """common.parzen_log_likelihoods in chunks of data rows, with a progress bar:
    a (len(bandwidths), len(data)) tensor on the CPU."""
    chunk = max(1, min(1000, 2**24 // len(samples)))
    return torch.cat([common.parzen_log_likelihoods(samples, data[i:i + chunk], bandwidths).cpu()
                      for i in progress(range(0, len(data), chunk), desc)], 1)


def parzen(samples, choose_on, scored, label, scoring_samples=None):
    """The bandwidth whose window on `samples` gives the best mean log-likelihood of the images of
    `choose_on` (a (name, images) pair), then the mean and standard error of the log-likelihood of
    each set in `scored` under a window of that bandwidth on `scoring_samples` (fresh samples, as
    the authors' Omniglot protocol draws; by default the same `samples`)."""
    chosen_on, x_choose = choose_on
    samples = greyscale(samples)
    choosing = log_likelihoods(samples, greyscale(x_choose), BANDWIDTHS, f"{label}: bandwidth on {chosen_on}")
    means = choosing.mean(1)
    best = int(means.argmax())
    bandwidth = float(BANDWIDTHS[best])
    mean, se = mean_and_standard_error(choosing[best])
    result = {"bandwidth": bandwidth, "bandwidth_chosen_on": chosen_on,
              "bandwidth_choice": {"mean": mean, "se": se, "images": len(x_choose),
                                   "by_bandwidth": {f"{s:.4f}": float(m) for s, m in zip(BANDWIDTHS, means)}}}
    scoring_samples = samples if scoring_samples is None else greyscale(scoring_samples)
    for name, x in scored.items():
        values = log_likelihoods(scoring_samples, greyscale(x), [bandwidth], f"{label}: {name}")[0]
        mean, se = mean_and_standard_error(values)
        result[name] = {"mean": mean, "se": se, "images": len(x)}
    return result


def draw_samples(model, n, device):
    """n samples dec(z), z ~ p(z), on the device (where the Parzen estimator then runs). A model with
    a Markov chain (a DAAE, whose sample() runs the chain) gives x_0 here: its chain is scored at
    the steps asked for, by chain_samples."""
    steps = {"steps": 0} if hasattr(model, "markov_chain_sample") else {}
    with torch.no_grad():
        return torch.cat([model.sample(min(BATCH, n - i), **steps).to(device)
                          for i in progress(range(0, n, BATCH), "sampling")])


def chain_samples(model, n, steps, image_dims, device):
    """{t: the images after t steps of n Markov chains} for every t in `steps`; the chains run in
    groups so that only a few hundred MB of images are held at once."""
    last = max(steps)
    group = max(1, min(n, CHAIN_BYTES // (4 * image_dims * (last + 1))))
    kept = {t: [] for t in steps}
    with torch.no_grad():
        for i in progress(range(0, n, group), f"{last} chain steps"):
            chain = model.markov_chain_sample(min(group, n - i), last)
            for t in steps:
                kept[t].append(chain[t].to(device))
    return {t: torch.cat(images) for t, images in kept.items()}


def chain_steps(model, config, steps, notes):
    """The Markov-chain steps to score: `steps`, by default 0 and the run's sample_steps (the
    paper's: the first samples and the chain's end); none for a model without a chain, noted
    when steps were asked for."""
    if not hasattr(model, "markov_chain_sample"):
        if steps:
            notes.append(f"{config['model']} has no Markov chain: --steps ignored")
        return []
    if steps is None:
        steps = [0, config["sample_steps"]] if "sample_steps" in config else []
    if 0 in steps:
        notes.append("the plain samples and the chains' step 0 are both x_0 = dec(z), from other draws of z: "
                     "they differ by sampling alone")
    return sorted(set(steps))


def default_samples(config):
    """The paper's sample counts: 10,000 for MNIST (and .npz datasets, which use the MNIST
    settings), 1,000 otherwise (Omniglot, Sprites; digits too, where it takes a second)."""
    return 10_000 if config["dataset"] == "mnist" or config["dataset"].endswith(".npz") else 1_000


def default_bandwidth_set(config):
    """Where the bandwidth is chosen by default: for Omniglot the authors' protocol, drawer 20 (the
    paper's "testing" images; their notebooks, which report the evaluation set's log-likelihood);
    elsewhere the validation split, as their MNIST notebook does."""
    return "test" if config["dataset"] == "omniglot" else "validation"


def check_sample_memory(config, samples, steps, device):
    """Refuse --samples and --steps up front when the images they ask for cannot fit in memory: up
    to two sample sets for each number of steps (a fresh set when the bandwidth is chosen on the
    test split), and one whole chain, which holds every step it takes."""
    n, image_bytes = samples or default_samples(config), 4 * math.prod(config["image_shape"])
    steps = set(steps or ()) if "sample_steps" in config else set()
    kept = 2 * n * image_bytes * (1 + len(steps)) + (max(steps, default=0) + 1) * image_bytes
    machinery.check_memory(kept, f"{n:,} samples" + (f" at {len(steps)} chain lengths" if steps else ""),
                        ("--samples", "--steps"), device)


def likelihood(model, data, config, device, samples=None, steps=None, plot_path=None, bandwidth_on=None):
    """The Parzen study: samples of the model (and, with a Markov chain, the chain after each
    number of `steps`) scored on the test split and the evaluation set; plot_path gets the
    log-likelihood against the steps. bandwidth_on: "validation" or "test" (the split the
    bandwidth is chosen on; default_bandwidth_set). Chosen on the test split, the scores come
    from a fresh set of samples, as in the authors' Omniglot notebooks."""
    notes = []
    n = samples or default_samples(config)
    if samples is None:
        notes.append(f"{n} samples, the default for {machinery.dataset_tag(config['dataset'])} (--samples)")
    if data.x_test.shape[1] == 3:
        notes.append("scored in greyscale: the mean of the three colour channels")
    bandwidth_on = bandwidth_on or default_bandwidth_set(config)
    choose_on = (bandwidth_on, data.x_test if bandwidth_on == "test" else data.x_val)
    fresh = bandwidth_on == "test"  # the bandwidth saw the test images: score with other samples
    if fresh:
        notes.append(f"bandwidth chosen on the {split_name(config, 'test')} images with one set of samples, "
                     "log-likelihoods from a fresh set (the authors' Omniglot protocol)")
    scored = {"test": data.x_test}
    x_eval = data.extra.get("x_eval")
    if x_eval is not None and len(x_eval):
        scored["evaluation"] = x_eval
    result = {"samples": n, **parzen(draw_samples(model, n, device), choose_on, scored, "samples",
                                     draw_samples(model, n, device) if fresh else None)}

    steps = chain_steps(model, config, steps, notes)
    if steps:
        result["steps"] = {}
        image_dims = math.prod(data.image_shape)
        chains = chain_samples(model, n, steps, image_dims, device)
        fresh_chains = chain_samples(model, n, steps, image_dims, device) if fresh else chains
        for t, images in chains.items():
            scores = parzen(images, choose_on, scored, f"{t} steps", fresh_chains[t])
            result["steps"][str(t)] = {**scores["test"], "bandwidth": scores["bandwidth"],
                                       **{k: scores[k] for k in ("bandwidth_choice", "evaluation") if k in scores}}
        if plot_path is not None and len(result["steps"]) > 1:
            save_steps_plot(result["steps"], plot_path, config)
    edges = [s for s in [result["bandwidth"], *(v["bandwidth"] for v in result.get("steps", {}).values())]
             if s in (BANDWIDTHS[0], BANDWIDTHS[-1])]
    if edges:
        notes.append(f"the chosen bandwidth {edges[0]:g} is at the edge of the grid logspace(-1, 0, 10)")
    result["notes"] = notes
    return result


def save_steps_plot(steps, path, config):
    """Log-likelihood (mean +/- standard error) of the test split, and of the evaluation set when
    there is one, against the number of Markov-chain steps."""
    t = [int(k) for k in steps]
    figure = common.plt_figure(figsize=(5, 3.5))
    axes = figure.add_subplot(1, 1, 1)
    series = {"test": list(steps.values())}
    if all("evaluation" in v for v in steps.values()):
        series["evaluation"] = [v["evaluation"] for v in steps.values()]
    for name, scores in series.items():
        axes.errorbar(t, [v["mean"] for v in scores], yerr=[v["se"] for v in scores], marker="o", capsize=3,
                      label=name)
    axes.legend()
    axes.set_xlabel("Markov-chain steps")
    axes.set_ylabel("Parzen log-likelihood")
    axes.set_title(f"{config['model']} on {machinery.dataset_tag(config['dataset'])}")
    common.save_figure(figure, path)


def likelihood_table(result, config):
    def row(source, name, scores, bandwidth):
        return [source, split_name(config, name), scores["images"], f"{bandwidth:.3f}", f"{scores['mean']:.1f}",
                f"{scores['se']:.1f}"]

    rows = [row(f"{result['samples']} samples", name, result[name], result["bandwidth"])
            for name in ("test", "evaluation") if name in result]
    for t, scores in result.get("steps", {}).items():
        rows.append(row(f"{result['samples']} chains, {t} steps", "test", scores, scores["bandwidth"]))
        if "evaluation" in scores:
            rows.append(row(f"{result['samples']} chains, {t} steps", "evaluation", scores["evaluation"],
                            scores["bandwidth"]))
    chosen_on = split_name(config, result["bandwidth_chosen_on"])
    return markdown(["Parzen window on", "scored set", "images", f"bandwidth (chosen on {chosen_on})",
                     "log-likelihood", "SE"], rows)


# ---------------------------------------------------------------------------------------------
# Sample quality: FID and the Inception Score
# ---------------------------------------------------------------------------------------------

INCEPTION = "Inception-v3"
IS_SPLIT_SEED = 0
IS_SPLITS = 10  # the Inception Score's mean and spread over 10 splits of the samples (Salimans et al., 2016)
QUALITY_BATCH = 100  # images per forward pass of the feature network (Inception-v3 sees them at 299 x 299)
CLASSIFIER_FEATURES = 128  # the size of the classifier's penultimate layer, where FID is measured
CLASSIFIER_STEPS, CLASSIFIER_BATCH, CLASSIFIER_LR = 1000, 128, 1e-3
CLASSIFIER_VERSION = b"1"  # part of the cache key: a change to the classifier or its training trains a new one


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
        raise common.CLIError(f"{INCEPTION} needs torch-fidelity: pip install torch-fidelity, or use "
                              "--feature-network classifier (a classifier of the run's own dataset)") from None
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a damaged download a RuntimeError
        reason = machinery.first_line(error, 100)
        raise common.CLIError(f"cannot load the {INCEPTION} weights for FID and IS ({reason}); they are "
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
        raise common.CLIError(f"{data.name} has no class labels to train a classifier on: use --feature-network "
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
        except (common.CLIError, RuntimeError) as error:  # a full disk: the study goes on, the next one trains again
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


def quality_scores(images, fid, inception_score, network, device):
    """FID of `images` against the reference features already in `fid`, and their Inception Score."""
    fid.reset()  # keeps the reference images' features
    inception_score.reset()
    for i in progress(range(0, len(images), QUALITY_BATCH), network.name):
        batch = network.prepare(images[i:i + QUALITY_BATCH].to(device))
        fid.update(batch, real=False)
        inception_score.update(batch)
    # torchmetrics splits the images for IS in a random order: the same order every time, so that the
    # same images (the validation split, say) score the same IS in every table and every run
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(IS_SPLIT_SEED)
        mean, std = inception_score.compute()
    return {"fid": float(fid.compute()), "inception_score": float(mean), "inception_score_std": float(std),
            "images": len(images)}


def quality(model, data, config, device, network, samples=None, steps=None, plot_path=None):
    """FID against the test split and the Inception Score of samples of the model (and, with a
    Markov chain, of the chain after each number of `steps`), judged by `network`; the validation
    images, scored the same way, show what real images of the dataset score. plot_path gets FID and
    IS against the steps."""
    n = samples or default_samples(config)
    notes = [f"feature network: {network.name}"
             + (f" (test accuracy {network.about['classifier_test_accuracy']:.2%})" if network.about else "")]
    if samples is None:
        notes.append(f"{n} samples, the default for {machinery.dataset_tag(config['dataset'])} (--samples)")
    if network.name == INCEPTION and data.x_test.shape[1] == 1:
        notes.append(f"grey images repeated on the three channels {INCEPTION} expects")
    print(f"quality: {n} samples, FID against the {len(data.x_test)} {split_name(config, 'test')} images, "
          f"on {network.name}")
    metric_device = device if device.type != "mps" else torch.device("cpu")  # FID sums in float64, which MPS lacks
    fid, inception_score = (metric.to(metric_device) for metric in network.metrics())
    # The reference set is the test split, which the Parzen study scores too: never images the model trained on.
    for i in progress(range(0, len(data.x_test), QUALITY_BATCH), "reference features"):
        fid.update(network.prepare(data.x_test[i:i + QUALITY_BATCH].to(metric_device)), real=True)

    def scores(images):
        return quality_scores(images, fid, inception_score, network, metric_device)

    result = {"feature_network": network.name, **network.about, "reference": "test",
              "reference_images": len(data.x_test), "samples": n, **scores(draw_samples(model, n, device))}
    steps = chain_steps(model, config, steps, notes)
    if steps:
        chains = chain_samples(model, n, steps, math.prod(data.image_shape), device)
        result["steps"] = {str(t): scores(images) for t, images in chains.items()}
        if plot_path is not None and len(steps) > 1:
            save_quality_plot(result["steps"], plot_path, config, network.name)
    result["validation"] = scores(data.x_val)
    result["notes"] = notes
    return result


def save_quality_plot(steps, path, config, network):
    """FID and the Inception Score (mean +/- sd over the splits) against the Markov-chain steps."""
    t = [int(k) for k in steps]
    figure = common.plt_figure(figsize=(9, 3.5))
    for i, (key, label) in enumerate((("fid", "FID (lower is better)"),
                                            ("inception_score", f"Inception Score (± sd over {IS_SPLITS} splits)"))):
        axes = figure.add_subplot(1, 2, i + 1)
        spread = [v["inception_score_std"] for v in steps.values()] if key == "inception_score" else None
        axes.errorbar(t, [v[key] for v in steps.values()], yerr=spread, marker="o", capsize=3)
        axes.set_xlabel("Markov-chain steps")
        axes.set_ylabel(label)
    figure.suptitle(f"{config['model']} on {machinery.dataset_tag(config['dataset'])}, judged by {network}")
    common.save_figure(figure, path)


def quality_table(result, config):
    def row(source, scores):
        return [source, f"{scores['fid']:.2f}", f"{scores['inception_score']:.2f}",
                f"{scores['inception_score_std']:.2f}"]

    rows = [row(f"{result['samples']} samples", result)]
    rows += [row(f"{result['samples']} chains, {t} steps", scores) for t, scores in result.get("steps", {}).items()]
    rows.append(row(f"{result['validation']['images']} {split_name(config, 'validation')} images (real)",
                    result["validation"]))
    return markdown(["images", f"FID against the {result['reference_images']} {split_name(config, 'test')} images",
                     "Inception Score", f"sd over {IS_SPLITS} splits"], rows)


# ---------------------------------------------------------------------------------------------
# compare: two groups of evaluated runs (e.g. the DAAE's seeds against the AAE's), paired tests
# on what eval.json holds; nothing is evaluated again
# ---------------------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the same intervals each time compare reads the same eval.json files
BOOTSTRAP_COUNTS = 2**22  # resample counts held at once (32 MB)


def mcnemar(a_correct, b_correct):
    """McNemar's exact test on paired right (1) / wrong (0) outcomes, arrays of any shape (every
    item of every pair pooled): of the discordant items, where one classifier is right and the
    other wrong, is A the right one as often as B? The two-sided binomial test of the count where
    only A is right among the discordant items, with probability 1/2 (scipy.stats.binomtest).
    Returns (only A right, only B right, p); p = 1 when no item is discordant."""
    a, b = np.asarray(a_correct, dtype=bool).ravel(), np.asarray(b_correct, dtype=bool).ravel()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def resample_counts(rng, n, resamples):
    """How often each of n items is drawn in each of `resamples` draws of n with replacement: a
    (resamples, n) array of counts."""
    drawn = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n)


def bootstrap_interval(differences, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """The 95 % percentile interval of the mean of `differences`, a (pairs, items) array, under a
    paired bootstrap: each resample draws the items with replacement, the same items for every
    pair (the pairs score the same test images or drawers), and the pairs with replacement, and
    takes the mean of the drawn differences."""
    d = np.atleast_2d(np.asarray(differences, dtype=float))
    pairs, items = d.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_COUNTS // items)
    means = []
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        item_counts, pair_counts = resample_counts(rng, items, n), resample_counts(rng, pairs, n)
        # The mean of the drawn differences from counts, not copies: each pair's sum over the
        # drawn items, weighted by how often the pair was drawn.
        means.append(((item_counts @ d.T) * pair_counts).sum(1) / (pairs * items))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high)


def paired_t(a, b):
    """The paired t-test of a against b (scipy.stats.ttest_rel): (p, (low, high)), the 95 % t
    interval of the mean of a - b; None with fewer than two pairs. Differences that are all equal
    have no spread to test: p is 1 if they are 0, else 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2:
        return None
    d = a - b
    if np.all(d == d[0]):
        return (1.0 if d[0] == 0 else 0.0), (float(d[0]), float(d[0]))
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(0.95)
    return float(test.pvalue), (float(interval.low), float(interval.high))


@dataclass
class Difference:
    """A - B on one measure: the two groups' means, the mean difference, its 95 % interval and p
    (None where there is no test), the test that gave p, and what was paired."""

    a: float
    b: float
    difference: float
    interval: tuple | None
    p: float | None
    test: str
    extent: str
    detail: str = ""


def p_text(p):
    """p to two significant digits; below 0.001 as "< 0.001", where smaller ones only say how sure."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def count(n, word):
    return f"{n:,} {word}" + ("s" if n != 1 else "")


def compare_correct(a, b, pair_word="pair"):
    """Two classifiers on the same test images: a and b are (pairs, images) arrays of right (1) and
    wrong (0). Accuracies and their difference in points; the interval by bootstrap_interval over
    the images and the pairs; p by McNemar's exact test on the discordant images of all pairs
    pooled (the detail gives each pair's own)."""
    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    accuracy_a, accuracy_b = 100 * float(a.mean()), 100 * float(b.mean())
    low, high = bootstrap_interval(a - b)
    each = ", ".join(p_text(mcnemar(a_i, b_i)[2]) for a_i, b_i in zip(a, b))
    return Difference(accuracy_a, accuracy_b, accuracy_a - accuracy_b, (100 * low, 100 * high), mcnemar(a, b)[2],
                      "McNemar", f"{count(len(a), pair_word)} x {count(a.shape[1], 'image')}",
                      f"McNemar p of each {pair_word}: {each}" if len(a) > 1 else "")


def compare_items(a, b, item_word, pair_word="pair"):
    """Per-item values of both groups on the same items (test images, drawers): a and b are
    (pairs, items) arrays. The mean difference; its interval by bootstrap_interval over the items
    and the pairs; p by the paired t-test over the items of their means over the pairs."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    tested = paired_t(a.mean(0), b.mean(0))
    return Difference(float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), bootstrap_interval(a - b),
                      tested[0] if tested else None, f"paired t over the {item_word}s",
                      f"{count(len(a), pair_word)} x {count(a.shape[1], item_word)}")


def compare_runs(a, b, pair_word="pair"):
    """One value per run (Parzen log-likelihood, FID, IS): a and b hold the pairs' values. The mean
    difference, with p and the interval of the paired t-test over the pairs; no test with one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    tested = paired_t(a, b)
    p, interval = tested if tested else (None, None)
    return Difference(float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), interval, p,
                      "paired t over the pairs", count(len(a), pair_word))


@dataclass
class EvaluatedRun:
    path: Path
    config: dict
    results: dict  # its eval.json


def read_evaluated(run_dir):
    """A run folder's config.json and eval.json (compare reads nothing else), or one CLIError line."""
    path = Path(run_dir)
    if not path.is_dir():
        raise common.CLIError(f"{run_dir} is not a folder: give run folders that eval.py has evaluated")
    config = machinery.read_config(path)
    results = read_eval_json(path)
    if not results:
        raise common.CLIError(f"{path} has no eval.json: evaluate it first (python eval.py all {path})")
    return EvaluatedRun(path, config, results)


def check_same_data(runs):
    """compare pairs runs image by image: all of them trained and evaluated on one dataset at one
    image size (common.py fixes the splits), or one CLIError line. A .npz file counts by its name,
    so that runs made where it lay in another folder (results/, another machine) pair with yours."""
    def data(run):
        size = run.config.get("image_size")
        return machinery.dataset_tag(str(run.config.get("dataset"))) + (f" at {size} x {size}" if size else "")

    other = next((run for run in runs if data(run) != data(runs[0])), None)
    if other is not None:
        raise common.CLIError(f"compare needs runs of one dataset: {runs[0].path} is {data(runs[0])}, {other.path} "
                              f"is {data(other)}")


def pair_runs(a_runs, b_runs):
    """[(a, b)]: the two groups' runs paired by their training seed (config["seed"]) when both groups
    have the same seeds, each once; else in the order given. And a line that says which."""
    if len(a_runs) != len(b_runs):
        raise common.CLIError(f"compare pairs the two groups' runs, but there are {len(a_runs)} before --against "
                              f"and {len(b_runs)} after it; give as many in each")
    seeds_a, seeds_b = ([run.config.get("seed") for run in runs] for runs in (a_runs, b_runs))
    if None not in seeds_a + seeds_b and len(set(seeds_a)) == len(seeds_a) and sorted(seeds_a) == sorted(seeds_b):
        by_seed = {run.config["seed"]: run for run in b_runs}
        return [(a, by_seed[a.config["seed"]]) for a in a_runs], f"paired by seed: {', '.join(map(str, seeds_a))}"
    return list(zip(a_runs, b_runs)), (f"note: the groups' seeds differ ({', '.join(map(str, seeds_a))} and "
                                       f"{', '.join(map(str, seeds_b))}): runs paired in the order given")


def group_names(a_runs, b_runs):
    """The groups' labels: their model (config["model"]), with the corruption sigma when both are
    one model; "A" and "B" when that does not tell them apart."""
    def label(runs, with_sigma):
        models = {run.config.get("model") for run in runs}
        sigmas = {run.config.get("sigma") for run in runs}
        if len(models) > 1 or None in models or (with_sigma and (len(sigmas) > 1 or None in sigmas)):
            return None
        return models.pop() + (f" σ {sigmas.pop():g}" if with_sigma else "")

    names = [label(runs, False) for runs in (a_runs, b_runs)]
    if names[0] == names[1]:
        names = [label(runs, True) for runs in (a_runs, b_runs)]
    return names if None not in names and names[0] != names[1] else ["A", "B"]


def stored(run, study, *keys):
    """run's eval.json entry study -> keys..., or None when it was not measured."""
    value = run.results.get(study)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def per_item_values(runs, study, key, unpack):
    """The (runs, items) array of every run's per-item results study -> key, unpacked; one CLIError
    line when a run lacks them (its eval.json is older than they are) or when the runs scored
    different numbers of items (not the same test split)."""
    values = []
    for run in runs:
        if stored(run, study, key) is None:
            command = "reconstruct" if study == "reconstruction" else "classify"
            raise common.CLIError(f"{run.path / 'eval.json'} has no {study} results per test image or drawer "
                                  f"({key}), which compare pairs: re-run `python eval.py {command} {run.path}` "
                                  "(or `all`)")
        values.append(unpack(stored(run, study, key)))
    counts = {len(v) for v in values}
    if len(counts) > 1:
        raise common.CLIError(f"the runs' {study} scored {' and '.join(map(str, sorted(counts)))} items: not the "
                              "same test split; evaluate them all with the same data and options")
    return np.stack(values)


def drawer_values(each):
    """loo20_linear_each ({drawer: accuracy}) as accuracies in the order of the drawers."""
    return np.array([each[k] for k in sorted(each, key=int)])


@dataclass
class Compared:
    """One row of compare's tables: its name, the measure (the name too, but for a baseline), the
    difference, and how to show it."""

    name: str
    measure: str
    difference: Difference
    digits: int = 2
    higher_is_better: bool = True
    percent: bool = False  # an accuracy, in points


def group_differences(pairs, config):
    """A - B on every measure every run of both groups has: ([Compared], notes on what was left
    out or differs)."""
    a_runs, b_runs = [a for a, _ in pairs], [b for _, b in pairs]
    runs, n = a_runs + b_runs, len(pairs)
    rows, notes = [], []

    def everyone_has(study, *keys):
        having = [run for run in runs if stored(run, study, *keys) is not None]
        if having and len(having) < len(runs):
            notes.append(f"note: {'/'.join((study, *keys))} is not in every eval.json (not in "
                         f"{', '.join(str(r.path) for r in runs if r not in having)}): left out")
        return len(having) == len(runs)

    def split(values):
        return values[:n], values[n:]

    drawers = everyone_has("classification", "loo20_linear")
    if everyone_has("classification", "svm_rbf"):
        a, b = split(per_item_values(runs, "classification", "svm_rbf_correct", unpack_bits))
        measure = "test (a) accuracy" if drawers else "test accuracy"
        rows.append(Compared(f"{measure} (%)", measure, compare_correct(a, b), percent=True))
    if everyone_has("classification", "cluster_correct"):  # Section 6: the paper's rule, then majority voting
        for key, measure in (("cluster_correct", "cluster accuracy, the paper's rule"),
                             ("cluster_majority_correct", "cluster accuracy, majority vote")):
            a, b = split(per_item_values(runs, "classification", key, unpack_bits))
            rows.append(Compared(f"{measure} (%)", measure, compare_correct(a, b), percent=True))
    if drawers:
        a, b = split(100 * per_item_values(runs, "classification", "loo20_linear_each", drawer_values))
        rows.append(Compared("test (b) accuracy (%)", "test (b) accuracy", compare_items(a, b, "drawer"), percent=True))
    if everyone_has("reconstruction", "mse"):
        a, b = split(per_item_values(runs, "reconstruction", "squared_errors", unpack_numbers))
        rows.append(Compared("reconstruction MSE", "reconstruction MSE", compare_items(a, b, "image"), digits=5,
                             higher_is_better=False))
    if everyone_has("modes", "modes_covered"):  # the toy datasets
        a, b = split([stored(run, "modes", "modes_covered") for run in runs])
        rows.append(Compared("modes covered", "modes covered", compare_runs(a, b), digits=1))
        a, b = split([stored(run, "modes", "modes_with_high_quality") for run in runs])
        rows.append(Compared("modes with a high-quality sample", "modes with a high-quality sample",
                             compare_runs(a, b), digits=1))
        a, b = split([100 * stored(run, "modes", "high_quality") for run in runs])
        rows.append(Compared("high-quality samples (%)", "high-quality samples", compare_runs(a, b), digits=1,
                             percent=True))
        a, b = split(per_item_values(runs, "modes", "squared_errors", unpack_numbers))
        rows.append(Compared("reconstruction, squared distance", "reconstruction", compare_items(a, b, "point"),
                             digits=4, higher_is_better=False))
    for name in ("test", "evaluation"):
        if everyone_has("likelihood", name, "mean"):
            a, b = split([stored(run, "likelihood", name, "mean") for run in runs])
            measure = f"Parzen LL, {split_name(config, name)}"
            rows.append(Compared(measure, measure, compare_runs(a, b), digits=1))
    if everyone_has("quality", "fid"):
        if len({stored(run, "quality", "feature_network") for run in runs}) > 1:
            notes.append("note: FID and IS were measured by different feature networks: left out")
        else:
            for key, name, higher_is_better in (("fid", "FID", False), ("inception_score", "Inception Score", True)):
                a, b = split([stored(run, "quality", key) for run in runs])
                rows.append(Compared(name, name, compare_runs(a, b), higher_is_better=higher_is_better))
    if len({stored(run, "reconstruction", "sigma") for run in runs} - {None}) > 1:
        notes.append("note: each run's reconstruction study corrupts with its own training sigma, and these differ: "
                     "the MSEs measure different tasks")
    for study, key, flag in (("classification", "train_images", "--max-train"), ("likelihood", "samples", "--samples"),
                             ("quality", "samples", "--samples")):
        if len({stored(run, study, key) for run in runs} - {None}) > 1:
            notes.append(f"note: the runs' {study} studies differ in {key} ({flag}): their difference includes that")
    return rows, notes


def baseline_differences(a_runs):
    """A's codes against the baselines on the same images, run by run: RBF SVCs on the raw pixels
    and on PCA of them, with today's gamma and the authors' (gamma auto), and test (b)'s linear
    SVMs on pixels and PCA. [Compared]."""
    rows = []
    drawers = all(stored(run, "classification", "loo20_linear") is not None for run in a_runs)
    if all(stored(run, "classification", "svm_rbf") is not None for run in a_runs):
        measure = "test (a) accuracy" if drawers else "test accuracy"
        codes = per_item_values(a_runs, "classification", "svm_rbf_correct", unpack_bits)
        for key, name in (("svm_rbf_pixels", "pixels, gamma scale"), ("svm_rbf_pixels_auto", "pixels, gamma auto"),
                          ("svm_rbf_pca", "PCA, gamma scale"), ("svm_rbf_pca_auto", "PCA, gamma auto")):
            baseline = per_item_values(a_runs, "classification", f"{key}_correct", unpack_bits)
            rows.append(Compared(name, measure, compare_correct(codes, baseline, "run"), percent=True))
    if drawers:
        codes = 100 * per_item_values(a_runs, "classification", "loo20_linear_each", drawer_values)
        for key, name in (("loo20_linear_pixels", "pixels, test (b)"), ("loo20_linear_pca", "PCA, test (b)")):
            baseline = 100 * per_item_values(a_runs, "classification", f"{key}_each", drawer_values)
            difference = compare_items(codes, baseline, "drawer", "run")
            rows.append(Compared(name, "test (b) accuracy", difference, percent=True))
    return rows


def verdict(row, a_name, b_name):
    """The table's word on a difference: who is better when its 95 % interval excludes 0."""
    if row.difference.interval is None:
        return "one seed: no test"
    low, high = row.difference.interval
    if low <= 0 <= high:
        return "within noise"
    return f"{a_name if (low > 0) == row.higher_is_better else b_name} better"


def difference_table(rows, columns, winners):
    """rows ([Compared]) as markdown under `columns` (what was measured, A, B, A − B: A's and B's
    means and their difference), then the 95 % interval, p and the verdict, which names `winners`
    (A's and B's)."""
    body = []
    for row in rows:
        d, digits = row.difference, row.digits
        interval = "–" if d.interval is None else f"{d.interval[0]:+.{digits}f} to {d.interval[1]:+.{digits}f}"
        body.append([row.name, f"{d.a:.{digits}f}", f"{d.b:.{digits}f}",
                     f"{d.difference:+.{digits}f}", interval, "–" if d.p is None else p_text(d.p),
                     verdict(row, *winners)])
    return markdown([*columns, "95 % interval", "p", "verdict"], body)


def sentence(row, subject):
    """A difference in words, as a markdown list item wrapped at 100 columns: its size, interval
    and test, and whether it is larger than its uncertainty (its 95 % interval excludes 0)."""
    d, digits = row.difference, row.digits
    said = f"{subject} on {row.measure}: {d.difference:+.{digits}f}{' points' if row.percent else ''}"
    if d.interval is None:
        said += f" ({d.extent}): one seed: no test."
    else:
        low, high = d.interval
        size = "within its uncertainty" if low <= 0 <= high else "larger than its uncertainty"
        tested = ""
        if d.p is not None:
            tested = f", {d.test} p " + (p_text(d.p) if d.p < 0.001 else f"= {p_text(d.p)}")
        if d.detail:
            tested += f"; {d.detail}"
        said += f", 95 % interval {low:+.{digits}f} to {high:+.{digits}f} ({d.extent}{tested}): {size}."
    return textwrap.fill(said, 100, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)


def compare(a_dirs, b_dirs, names=None):
    """compare's report, markdown: how the runs were paired, notes, the table of A - B on every
    measure both groups have with a sentence for each, and the table of A's codes against the
    pixel and PCA baselines on the same images."""
    a_runs, b_runs = [read_evaluated(d) for d in a_dirs], [read_evaluated(d) for d in b_dirs]
    check_same_data(a_runs + b_runs)
    pairs, pairing = pair_runs(a_runs, b_runs)
    a_name, b_name = names or group_names(a_runs, b_runs)
    rows, notes = group_differences(pairs, a_runs[0].config)
    baselines = baseline_differences(a_runs)
    if not rows and not baselines:
        raise common.CLIError("the two groups' eval.json files have no measure in common: evaluate both with the "
                              "same studies (python eval.py all RUN_DIR ...)")
    lines = [pairing, *notes]
    if rows:
        columns = ["measure", a_name, b_name, f"{a_name} − {b_name}"]
        lines += ["", f"## {a_name} vs {b_name}", "", difference_table(rows, columns, (a_name, b_name)), "",
                  *(sentence(row, f"{a_name} − {b_name}") for row in rows)]
    if baselines:
        lines += ["", f"## {a_name}'s codes vs the baselines on the same images", "",
                  difference_table(baselines, ["baseline (accuracy, %)", f"{a_name} codes", "baseline",
                                               "codes − baseline"], ("codes", "baseline")), "",
                  textwrap.fill("gamma scale: 1 / (dims x the features' variance), today's SVC() default; gamma "
                                "auto: 1 / dims, the default of the authors' scikit-learn 0.18.", 100), "",
                  *(sentence(row, f"{a_name} codes − baseline ({row.name})") for row in baselines)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Tables and main
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The README's results table, rendered from the runs stored in results/
# ---------------------------------------------------------------------------------------------

RESULTS_COLUMNS = ["result", "paper", "this project", "data, budget, seeds", "command"]


def stored_cell(runs, spec):
    """mean ± sd over the runs of one stored figure (eval.json's spec["study"] / spec["key"] path)."""
    values = [stored(run, spec["study"], *spec["key"]) for run in runs]
    if None in values:
        missing = runs[values.index(None)].path
        raise common.CLIError(f"{missing}/eval.json has no {'/'.join([spec['study'], *spec['key']])}: evaluate it "
                              f"(python eval.py all {missing})")
    values = np.array(values, dtype=float) * spec.get("scale", 1)
    digits = spec.get("digits", 2)
    spread = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{values.mean():.{digits}f}{spread}{spec.get('unit', '')}"


def difference_cell(runs, spec, folder):
    """A paired difference, as `compare` computes it: the runs against spec["against"] (or, with
    spec["baseline"], against a baseline on the same images), on spec["measure"]."""
    if "against" in spec:
        pairs, _ = pair_runs(runs, [read_evaluated(folder / name) for name in spec["against"]])
        rows, _ = group_differences(pairs, runs[0].config)
    else:
        rows = baseline_differences(runs)
    name = spec.get("baseline", spec["measure"])
    row = next((row for row in rows if row.name == name), None)
    if row is None:
        raise common.CLIError(f"{folder}/table.json asks for {name!r}, which compare does not measure for "
                              f"{', '.join(spec['runs'])}")
    d, digits = row.difference, spec.get("digits", row.digits)
    unit = " points" if row.percent else ""
    if d.interval is None:
        return f"{d.difference:+.{digits}f}{unit} (one seed)"
    return f"{d.difference:+.{digits}f}{unit}, 95 % {d.interval[0]:+.{digits}f} to {d.interval[1]:+.{digits}f}"


def results_table(folder):
    """The markdown table of FOLDER/table.json's rows, each figure computed from the eval.json of
    the runs stored under FOLDER: a stored figure as mean ± sd over its runs, a difference paired
    by seed and by image as `compare` reports it; a row without runs says it is not re-measured."""
    folder = Path(folder)
    try:
        specs = json.loads((folder / "table.json").read_text())
    except (OSError, ValueError) as error:
        raise common.CLIError(f"cannot read {folder / 'table.json'} ({machinery.first_line(error, 80)}): give the "
                              "results folder (results)") from None
    body = []
    for spec in specs:
        if "runs" not in spec:  # a figure of an earlier version of the code, whose runs are not stored
            body.append([spec["result"], spec["paper"], f"not re-measured ([earlier figure]({spec['docs']}))",
                         spec["budget"], spec["command"]])
            continue
        runs = [read_evaluated(folder / name) for name in spec["runs"]]
        cell = stored_cell(runs, spec) if "key" in spec else difference_cell(runs, spec, folder)
        body.append([spec["result"], spec["paper"], cell, spec["budget"], spec["command"]])
    return markdown(RESULTS_COLUMNS, body)


OMNIGLOT_SPLITS = {"test": "drawer 20", "evaluation": "evaluation set", "validation": "5 % of drawers 1-19"}


def split_name(config, split):
    """A split named by its images: Omniglot's test split is drawer 20 of the training characters
    (the paper's "testing" set), its evaluation set 20 alphabets never trained on."""
    return OMNIGLOT_SPLITS.get(split, split) if config["dataset"] == "omniglot" else split


def markdown(header, rows):
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def comparison_table(runs, results):
    """The runs side by side, one row per measurement of the studies run (the paper's tables, transposed)."""
    def plus_minus(entry, key, digits):
        return f"{entry[key]:.{digits}f} ± {entry['se']:.{digits}f}"

    config = runs[0].config if len({r.config["dataset"] for r in runs}) == 1 else {"dataset": None}
    columns = {"run": lambda r: r.name, "model": lambda r: r.config["model"],
               "sigma": lambda r: f"{r.model.sigma:g}"}
    studies = set().union(*(results[r.name] for r in runs))
    if "modes" in studies:
        def coverage(entry, total):
            return (f"{entry['modes_covered']} of {total}, {entry['high_quality']:.1%} high-quality in "
                    f"{entry['modes_with_high_quality']}")

        columns["samples: modes covered"] = lambda r: coverage(results[r.name]["modes"], results[r.name]["modes"]["modes"])
        steps = sorted({int(t) for r in runs for t in results[r.name].get("modes", {}).get("steps", {})})
        for t in steps:
            columns[f"after {t} chain steps"] = lambda r, t=t: coverage(results[r.name]["modes"]["steps"][str(t)],
                                                                         results[r.name]["modes"]["modes"])
        columns["reconstruction (squared distance)"] = lambda r: (
            f"{results[r.name]['modes']['reconstruction']:.4f} ± {results[r.name]['modes']['reconstruction_se']:.4f}")
    if "reconstruction" in studies:
        columns["reconstruction MSE"] = lambda r: plus_minus(results[r.name]["reconstruction"], "mse", 4)
    if "classification" in studies:
        for key, title in (("svm_rbf", "SVC codes"), ("svm_rbf_pixels", "SVC pixels"),
                           ("svm_rbf_pixels_auto", "SVC pixels (gamma auto)"), ("svm_rbf_pca", "SVC PCA"),
                           ("svm_rbf_pca_auto", "SVC PCA (gamma auto)"),
                           ("loo20_linear", "LOO-20 codes (mean)"), ("loo20_linear_max", "LOO-20 codes (max)"),
                           ("loo20_linear_pixels", "LOO-20 pixels"), ("loo20_linear_pca", "LOO-20 PCA"),
                           ("attributes_linear", "attributes (mean)"), ("semi_supervised_error", "q(y|x) error"),
                           ("nn_baseline_error", "NN baseline error"), ("svm_pixels_error", "SVC pixels error"),
                           ("cluster_error", "cluster error")):
            if any(key in results[r.name].get("classification", {}) for r in runs):
                columns[title] = lambda r, key=key: f"{results[r.name]['classification'][key]:.2%}"
    if "likelihood" in studies:
        for split in ("test", "evaluation"):
            if any(split in results[r.name].get("likelihood", {}) for r in runs):
                columns[f"Parzen LL {split_name(config, split)}"] = lambda r, split=split: plus_minus(
                    results[r.name]["likelihood"][split], "mean", 1)
        steps = sorted({int(t) for r in runs for t in results[r.name].get("likelihood", {}).get("steps", {})})
        for t in steps:
            columns[f"LL after {t} chain steps"] = lambda r, t=t: plus_minus(
                results[r.name]["likelihood"]["steps"][str(t)], "mean", 1)
    if "quality" in studies:
        networks = {results[r.name]["quality"]["feature_network"] for r in runs if "quality" in results[r.name]}
        if len(networks) > 1:  # FIDs and ISs of two feature networks cannot be compared
            columns["feature network"] = lambda r: results[r.name]["quality"]["feature_network"]

        def fid_and_is(scores):
            return f"{scores['fid']:.2f}", f"{scores['inception_score']:.2f} ± {scores['inception_score_std']:.2f}"

        columns["FID"] = lambda r: fid_and_is(results[r.name]["quality"])[0]
        columns["IS ± sd"] = lambda r: fid_and_is(results[r.name]["quality"])[1]
        steps = sorted({int(t) for r in runs for t in results[r.name].get("quality", {}).get("steps", {})})
        for t in steps:
            for i, title in enumerate(("FID", "IS")):
                columns[f"{title} after {t} chain steps"] = lambda r, t=t, i=i: fid_and_is(
                    results[r.name]["quality"]["steps"][str(t)])[i]

    def cell(column, run):
        try:
            return column(run)
        except KeyError:
            return "–"

    # A row per measure and a column per run: a terminal holds a few runs side by side, not 16 measures
    return markdown(["measure", *(run.name for run in runs)],
                    [[title, *(cell(column, run) for run in runs)] for title, column in columns.items() if title != "run"])


def parse_args(argv):
    parser = machinery.ArgumentParser(prog="eval.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=[*STUDIES, *TOY_STUDIES, *CODE_STUDIES, "all", "compare", "table"],
                        help="which study to run (all: every study of the run's data, prior apart; modes is the one of toy25 "
                             "and ring8, whose points are not images); compare: the RUN_DIRs' results against those of --against; "
                             "table: the README's results table from the runs stored in the folder given (results)")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by the model scripts")
    parser.add_argument("--against", nargs="+", metavar="RUN_DIR",
                        help="compare: the second group of run folders, paired with the first by seed")
    parser.add_argument("--names", nargs=2, metavar=("A", "B"),
                        help="compare: the two groups' labels (default: their model, and sigma when both are one)")
    parser.add_argument("--data-dir", help="where the datasets are (default: the data_dir each run was trained with)")
    parser.add_argument("--samples", type=machinery.positive_int,
                        help="model samples for the Parzen window and for FID and IS (default 10,000 for MNIST and "
                             ".npz datasets, 1,000 otherwise)")
    parser.add_argument("--steps", type=non_negative_int, nargs="+",
                        help="Markov-chain steps to score for models that have a chain (default: 0 and the "
                             "run's sample_steps)")
    parser.add_argument("--bandwidth-on", choices=("validation", "test"),
                        help="the split the Parzen bandwidth is chosen on (default: test for omniglot, the authors' "
                             "protocol: drawer 20, then the evaluation set is scored with fresh samples; validation "
                             "otherwise)")
    parser.add_argument("--feature-network", choices=("inception", "classifier"),
                        help="what judges the samples for FID and IS: inception (Inception-v3, downloaded once) or "
                             "classifier (a CNN trained once on the run's own dataset) (default: inception for "
                             "colour images, classifier for grey ones)")
    parser.add_argument("--max-train", type=machinery.positive_int,
                        help="train the classifiers on a random subset of this many training images")
    parser.add_argument("--table", help="write the comparison table (markdown; compare: its report) to this file")
    parser.add_argument("--seed", type=machinery.seed_value, default=0,
                        help="seeds corruption, sampling and subsets (default 0)")
    machinery.add_device_flags(parser)
    return parser.parse_args(argv)


def check_writable(path):
    """--table: a file that can be written (its folder exists or can be made), or one CLIError line."""
    path = Path(path)
    if path.is_dir():
        raise common.CLIError(f"--table {path} is a folder; give a file name, e.g. {path / 'table.md'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise common.CLIError(f"--table {path} cannot be written ({error.strerror or error}); choose another "
                              "file") from None


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive whole number, got {text}")
    return value


def write_table(path, text):
    with machinery.atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")


def compare_command(args):
    """eval.py compare A1 A2 ... --against B1 B2 ...: compare's report, printed and written to --table."""
    if not args.against:
        raise common.CLIError("compare needs a second group of run folders: eval.py compare A1 A2 ... --against "
                              "B1 B2 ...")
    if args.names and args.names[0] == args.names[1]:
        raise common.CLIError(f"--names {args.names[0]} {args.names[1]}: give the two groups different names")
    if args.table:
        check_writable(args.table)
    report = compare(args.runs, args.against, args.names)
    print(report)
    if args.table:
        write_table(args.table, report)
        print(f"\ncomparison written to {args.table}")


def studies_for(study, run):
    """The studies `study` asks of this run: with all, every study of its data (images or points);
    a single one only if it fits its data, else one CLIError line."""
    points = run.config["dataset"] in toy.MIXTURES
    if study == "all":
        return TOY_STUDIES if points else STUDIES
    if study in CODE_STUDIES:
        return (study,)
    if points and study not in TOY_STUDIES:
        raise common.CLIError(f"{run.path} holds points in the plane ({run.config['dataset']}), which {study} cannot "
                              f"score: use eval.py modes (or all)")
    if not points and study in TOY_STUDIES:
        raise common.CLIError(f"{study} is the study of the toy datasets (toy25, ring8), and {run.path} was trained "
                              f"on {run.config['dataset']}: use eval.py all")
    return (study,)


def main(argv=None):
    args = parse_args(argv)
    if args.study == "compare":
        return compare_command(args)
    if args.study == "table":
        table = results_table(args.runs[0])
        print(table)
        if args.table:
            write_table(args.table, table)
        return
    if args.against or args.names:
        raise common.CLIError("--against and --names are for eval.py compare")
    device = machinery.choose_device(args.device)
    if args.table:  # checked now: the studies before the table is written can take hours
        check_writable(args.table)
    runs = [load_run(run_dir, device) for run_dir in args.runs]  # every folder checked before any work
    studies_of = {run.name: studies_for(args.study, run) for run in runs}
    for run in runs:
        if {"likelihood", "quality"} & set(studies_of[run.name]):  # both draw --samples, and chains of --steps
            check_sample_memory(run.config, args.samples, args.steps, device)
    choices = {run.name: args.feature_network or default_feature_network(run.config) for run in runs}
    data_cache, networks, results = {}, {}, {}
    if any("quality" in studies_of[run.name] and choices[run.name] == "inception" for run in runs):
        networks["inception"] = inception_network()  # offline is found out before hours of work
    for run in runs:
        studies = studies_of[run.name]
        data = load_data(run.config, args.data_dir, data_cache)
        progress_note = f"unfinished: {run.unfinished}" if run.unfinished else f"epoch {run.epoch}"
        print(f"\n## {run.name}: {run.config['model']}, {progress_note}, {data}")
        results[run.name] = {}
        for study in studies:
            if study == "quality":  # before the seed: a classifier trained or read leaves the same random numbers
                network_key = "inception" if choices[run.name] == "inception" else id(data)
                if network_key not in networks:  # one Inception-v3, one classifier per dataset
                    networks[network_key] = feature_network(choices[run.name], data,
                                                            args.data_dir or run.config["data_dir"], device)
            common.seed_everything(args.seed)  # each study's numbers do not depend on the others run before it
            started = time.perf_counter()
            if study == "reconstruct":
                key, result = "reconstruction", reconstruct(run.model, data, device)
                table = reconstruction_table(result)
            elif study == "classify":
                key, result = "classification", classify(run.model, data, device, args.max_train, args.seed)
                table = classification_table(result, run.config)
                if hasattr(run.model, "class_probabilities"):  # semi_supervised_aae.py: the paper's own measures
                    extra = semi_supervised_study(run, data, device, args.seed)
                    notes = result["notes"] + extra.pop("notes")
                    result.update(extra, notes=notes)
                    table += "\n\n" + semi_supervised_table(result)
            elif study == "likelihood":
                key, result = "likelihood", likelihood(run.model, data, run.config, device, args.samples, args.steps,
                                                       run.path / "likelihood_steps.png", args.bandwidth_on)
                table = likelihood_table(result, run.config)
            elif study == "modes":
                key, result = "modes", modes(run.model, data, run.config, device, args.samples, args.steps)
                table = modes_table(result)
            elif study == "prior":
                key, result = "prior", prior_match(run.model, data, device)
                table = prior_table(result)
            else:
                key, result = "quality", quality(run.model, data, run.config, device, networks[network_key],
                                                 args.samples, args.steps, run.path / "quality_steps.png")
                table = quality_table(result, run.config)
            result.update(seconds=round(time.perf_counter() - started, 2), epoch=run.epoch, seed=args.seed)
            if run.unfinished:
                result["unfinished"] = run.unfinished
            print(f"\n### {key} ({result['seconds']:.1f} s)\n")
            for note in result.get("notes", []):
                print(f"note: {note}")
            if table:
                print(table)
            merge_results(run.path, key, result)
            results[run.name][key] = result
        print(f"\nresults merged into {run.path / 'eval.json'}")
    table = comparison_table(runs, results)
    if len(runs) > 1:
        print(f"\n## comparison\n\n{table}")
    if args.table:
        write_table(args.table, table)
        print(f"\ncomparison table written to {args.table}")


if __name__ == "__main__":
    machinery.cli(main)
