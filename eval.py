"""The DAAE paper's measurements (Creswell & Bharath), for any run folder of any model script.

    python eval.py reconstruction runs/daae-mnist
    python eval.py classification runs/aae-mnist runs/daae-mnist runs/idaae-mnist --max-train 10000
    python eval.py likelihood runs/daae-mnist --steps 0 1 5 10
    python eval.py quality runs/aae-mnist runs/daae-mnist --steps 0 5 10
    python eval.py all runs/aae-mnist runs/daae-mnist runs/idaae-mnist --table mnist.md
    python eval.py compare runs/daae-mnist-s1 runs/daae-mnist-s2 --against runs/aae-mnist-s1 runs/aae-mnist-s2

The first three studies follow the DAAE paper's evaluation protocol (arXiv:1703.01220: its
experiments, and its appendix for the log-likelihood); the fourth measures the samples as later
papers do:

  reconstruction
               corrupt the test images with the run's training sigma, encode, decode; the mean
               squared error against the clean images, mean and standard error over the images
               (and each image's error, for compare).
               A supervised AAE (aae.py --supervised) decodes with each test image's true label.
  classification
               an RBF SVC (scikit-learn's defaults) on the codes of the training split, accuracy
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
  prior        the energy distance of the test codes to p(z), with a permutation test (the AAE
               paper's Figure 2 as a number; images and points alike; not part of all).
  compare      two groups of evaluated runs, e.g. a DAAE's seeds (the RUN_DIRs) against an AAE's
               (--against), paired by seed, every measure both groups have tested paired
               (compare.py, which reads only eval.json).
  table        the README's results table from the runs stored in a results folder (results/),
               rendered by compare.py; nothing is evaluated.

Each study prints a markdown table and merges its results into RUN_DIR/eval.json (a study
replaces its own entry and keeps the others, under a lock: several eval.py processes can evaluate
one run at once). Given several run folders, a comparison table across them follows (the paper's
AAE vs DAAE vs iDAAE tables); --table writes it to a file.
"""

import argparse
import importlib
import math
import time

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import SGDClassifier
from sklearn.svm import SVC

import common
import compare
import feature_networks
import machinery
import toy
from machinery import CLIError, progress
from results import (CLASSIFICATION, CLUSTER_CORRECT, CLUSTER_MAJORITY_CORRECT, CORRECT, EACH, LIKELIHOOD, LOO20,
                     MODES, QUALITY, RECONSTRUCTION, SQUARED_ERRORS, SVM_RBF, check_writable, markdown, merge_results,
                     pack_bits, pack_numbers, read_eval_json, split_name, write_table)

STUDIES = (RECONSTRUCTION, CLASSIFICATION, LIKELIHOOD, QUALITY)  # of images, each named as in eval.json
TOY_STUDIES = (MODES,)  # of points in the plane (toy25, ring8)
PRIOR = "prior"  # of the codes, for images and points alike; asked for by name, not part of all
CODE_STUDIES = (PRIOR,)
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


# ---------------------------------------------------------------------------------------------
# The run's data (its split), and the mean with its standard error every study reports
# ---------------------------------------------------------------------------------------------


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
        except CLIError as error:  # its advice for the model scripts does not fit here
            raise CLIError(str(error).replace(common.OFFLINE_HINT, "or point eval.py's --data-dir at them")) \
                from None
    data = cache[key]
    if list(data.image_shape) != list(config["image_shape"]):
        raise CLIError(f"{config['dataset']} in {key[1]} has images of shape {list(data.image_shape)}, but "
                              f"the run was trained on {config['image_shape']}; point --data-dir at its data")
    return data


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
              SQUARED_ERRORS: pack_numbers(errors.tolist())}  # per test image, for `compare`
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
    result.update(reconstruction=mse, reconstruction_se=se, points=len(errors), **{SQUARED_ERRORS: pack_numbers(errors.tolist())})
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
    """Figure 2 as a number: the energy distance (Szekely & Rizzo) E = 2 E|z - z'| - E|z - z~| - E|z' - z'~|
    between the first 1,000 test codes z and as many prior samples z'. Zero only for equal distributions, no
    bandwidth to choose (an MMD's would have to suit every prior's scale); its permutation test gives the p-value
    and the value two samples of one distribution get. Codes: encode(x); for a stochastic encoder also one
    z ~ q(z|x) per image, the aggregated posterior q(z) that the objectives match."""
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
        result[LOO20 + suffix], result[f"{LOO20}{suffix}_se"] = mean_and_standard_error(values)
        result[f"{LOO20}{suffix}_max"] = float(np.max(values))
        each[LOO20 + suffix + EACH] = {str(drawer): value for (drawer, _, _), value in zip(folds, values)}
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
        raise CLIError(f"the {len(train)} training images drawn for the classifiers are all of one class; "
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
        right[SVM_RBF + key + CORRECT] = correct(SVC(gamma=gamma), f_train, y_train, f_test, y_test)
        accuracies[SVM_RBF + key] = float(np.mean(right[SVM_RBF + key + CORRECT]))
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
        result[CLUSTER_CORRECT], result[CLUSTER_MAJORITY_CORRECT] = pack_bits(right), pack_bits(majority)
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

IS_SPLIT_SEED = 0
QUALITY_BATCH = 100  # images per forward pass of the feature network (Inception-v3 sees them at 299 x 299)


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
    if network.name == feature_networks.INCEPTION and data.x_test.shape[1] == 1:
        notes.append(f"grey images repeated on the three channels {feature_networks.INCEPTION} expects")
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
                                            ("inception_score", f"Inception Score (± sd over {feature_networks.IS_SPLITS} splits)"))):
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
                     "Inception Score", f"sd over {feature_networks.IS_SPLITS} splits"], rows)


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


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive whole number, got {text}")
    return value


def studies_for(study, run):
    """The studies `study` asks of this run: with all, every study of its data (images or points);
    a single one only if it fits its data, else one CLIError line."""
    points = run.config["dataset"] in toy.MIXTURES
    if study == "all":
        return TOY_STUDIES if points else STUDIES
    if study in CODE_STUDIES:
        return (study,)
    if points and study not in TOY_STUDIES:
        raise CLIError(f"{run.path} holds points in the plane ({run.config['dataset']}), which {study} cannot "
                              f"score: use eval.py modes (or all)")
    if not points and study in TOY_STUDIES:
        raise CLIError(f"{study} is the study of the toy datasets (toy25, ring8), and {run.path} was trained "
                              f"on {run.config['dataset']}: use eval.py all")
    return (study,)


def main(argv=None):
    args = parse_args(argv)
    if args.study == "compare":
        return compare.compare_command(args)
    if args.study == "table":
        return compare.table_command(args)
    if args.against or args.names:
        raise CLIError("--against and --names are for eval.py compare")
    device = machinery.choose_device(args.device)
    if args.table:  # checked now: the studies before the table is written can take hours
        check_writable(args.table)
    runs = [common.load_run(run_dir, device) for run_dir in args.runs]  # every folder checked before any work,
    for run in runs:  # its eval.json too: a damaged one, or a folder it cannot be written in, stops us before
        read_eval_json(run.path)  # hours of work, not after them
        machinery.check_folder_writable(run.path, "eval.json")
    studies_of = {run.name: studies_for(args.study, run) for run in runs}
    for run in runs:
        if {LIKELIHOOD, QUALITY} & set(studies_of[run.name]):  # both draw --samples, and chains of --steps
            check_sample_memory(run.config, args.samples, args.steps, device)
    choices = {run.name: args.feature_network or feature_networks.default_feature_network(run.config) for run in runs}
    data_cache, networks, results = {}, {}, {}
    if any(QUALITY in studies_of[run.name] and choices[run.name] == "inception" for run in runs):
        networks["inception"] = feature_networks.inception_network()  # offline is found out before hours of work
    for run in runs:
        studies = studies_of[run.name]
        data = load_data(run.config, args.data_dir, data_cache)
        progress_note = f"unfinished: {run.unfinished}" if run.unfinished else f"epoch {run.epoch}"
        print(f"\n## {run.name}: {run.config['model']}, {progress_note}, {data}")
        results[run.name] = {}
        for study in studies:
            if study == QUALITY:  # before the seed: a classifier trained or read leaves the same random numbers
                network_key = "inception" if choices[run.name] == "inception" else id(data)
                if network_key not in networks:  # one Inception-v3, one classifier per dataset
                    networks[network_key] = feature_networks.feature_network(choices[run.name], data,
                                                            args.data_dir or run.config["data_dir"], device)
            common.seed_everything(args.seed)  # each study's numbers do not depend on the others run before it
            started = time.perf_counter()
            if study == RECONSTRUCTION:
                result = reconstruct(run.model, data, device)
                table = reconstruction_table(result)
            elif study == CLASSIFICATION:
                result = classify(run.model, data, device, args.max_train, args.seed)
                table = classification_table(result, run.config)
                if hasattr(run.model, "class_probabilities"):  # semi_supervised_aae.py: the paper's own measures
                    extra = semi_supervised_study(run, data, device, args.seed)
                    notes = result["notes"] + extra.pop("notes")
                    result.update(extra, notes=notes)
                    table += "\n\n" + semi_supervised_table(result)
            elif study == LIKELIHOOD:
                result = likelihood(run.model, data, run.config, device, args.samples, args.steps,
                                    run.path / "likelihood_steps.png", args.bandwidth_on)
                table = likelihood_table(result, run.config)
            elif study == MODES:
                result = modes(run.model, data, run.config, device, args.samples, args.steps)
                table = modes_table(result)
            elif study == PRIOR:
                result = prior_match(run.model, data, device)
                table = prior_table(result)
            else:
                result = quality(run.model, data, run.config, device, networks[network_key], args.samples, args.steps,
                                 run.path / "quality_steps.png")
                table = quality_table(result, run.config)
            result.update(seconds=round(time.perf_counter() - started, 2), epoch=run.epoch, seed=args.seed)
            if run.unfinished:
                result["unfinished"] = run.unfinished
            print(f"\n### {study} ({result['seconds']:.1f} s)\n")
            for note in result.get("notes", []):
                print(f"note: {note}")
            if table:
                print(table)
            merge_results(run.path, study, result)
            results[run.name][study] = result
        print(f"\nresults merged into {run.path / 'eval.json'}")
    table = compare.comparison_table(runs, results, {run.name: run.model.sigma for run in runs})
    if len(runs) > 1:
        print(f"\n## comparison\n\n{table}")
    if args.table:
        write_table(args.table, table)
        print(f"\ncomparison table written to {args.table}")


if __name__ == "__main__":
    machinery.cli(main)
