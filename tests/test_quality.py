"""eval.py quality: FID and the Inception Score by torchmetrics, checked against their definitions
(numpy and scipy); the dataset's own classifier, trained once and then read from its cache;
Inception-v3 offline as one line; and the study end to end on a tiny digits run of every model."""

import json
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch

import aae
import common
import machinery
import eval as evaluation
import feature_networks
from helpers import run_eval as run_cli, run_script

QUALITY_KEYS = {"fid", "inception_score", "inception_score_std", "feature_network", "samples"}
CPU = torch.device("cpu")


def random_network():
    """An untrained classifier as the feature network: FID's algebra holds for any features."""
    torch.manual_seed(0)
    classifier = feature_networks.DatasetClassifier((1, 8, 8), 10).eval().requires_grad_(False)
    return feature_networks.FeatureNetwork("random", lambda: feature_networks.quality_metrics(classifier.features, classifier),
                                     lambda x: x.clamp(0, 1), {})


def fid_against(reference, images, network):
    fid, inception_score = network.metrics()
    fid.update(network.prepare(reference), real=True)
    return evaluation.quality_scores(images, fid, inception_score, network, CPU)["fid"]


# ---------------------------------------------------------------------------------------------
# FID and IS against their definitions
# ---------------------------------------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
    x = common.load_dataset("digits").x_train
    network = random_network()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=generator)
    fids = [fid_against(x, x + sigma * noise, network) for sigma in (0.0, 0.05, 0.2, 0.5)]
    assert abs(fids[0]) < 1e-3 * fids[1]
    assert fids[0] < fids[1] < fids[2] < fids[3]


def test_fid_agrees_with_the_means_and_covariances_of_the_features():
    x = common.load_dataset("digits").x_train
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))  # full-rank covariances
    features.num_features = 16
    network = feature_networks.FeatureNetwork("linear", lambda: feature_networks.quality_metrics(features, features),
                                        lambda x: x, {})
    real, fake = x[:600], (x[600:] + 0.2 * torch.randn_like(x[600:])).clamp(0, 1)
    with torch.no_grad():
        f_real, f_fake = (features(images).double().numpy() for images in (real, fake))
    mu_real, mu_fake = f_real.mean(0), f_fake.mean(0)
    cov_real, cov_fake = np.cov(f_real, rowvar=False), np.cov(f_fake, rowvar=False)
    # Heusel et al. (2017): |mu_r - mu_g|^2 + Tr(C_r + C_g - 2 (C_r C_g)^(1/2))
    expected = np.sum((mu_real - mu_fake) ** 2) + np.trace(cov_real + cov_fake
                                                           - 2 * scipy.linalg.sqrtm(cov_real @ cov_fake).real)
    assert fid_against(real, fake, network) == pytest.approx(expected, rel=1e-4)


class Oracle(torch.nn.Module):
    """Sure of every image's class, which its first pixel holds (class k: k / 10)."""

    num_features = 10

    def forward(self, x):
        return 30.0 * torch.nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long(), 10).float()


def inception_score(labels):
    images = torch.zeros(len(labels), 1, 8, 8)
    images[:, 0, 0, 0] = torch.tensor(labels) / 10
    network = feature_networks.FeatureNetwork("oracle", lambda: feature_networks.quality_metrics(Oracle(), Oracle()),
                                        lambda x: x, {})
    fid, score = network.metrics()
    fid.update(images, real=True)
    torch.manual_seed(0)
    result = evaluation.quality_scores(images, fid, score, network, CPU)
    return result["inception_score"], result["inception_score_std"]


def test_inception_score_is_one_for_one_class_and_the_class_count_for_a_balanced_perfect_set():
    mean, sd = inception_score([3] * 1000)
    assert mean == pytest.approx(1.0, abs=1e-6) and sd == pytest.approx(0.0, abs=1e-6)
    mean, sd = inception_score(list(range(10)) * 100)
    # Each of the 10 splits holds 100 random images of the 1000: nearly, not exactly, 10 of each class.
    assert 9.3 < mean <= 10.0 and sd < 0.3
    mean, _ = inception_score([0, 1] * 500)
    assert mean == pytest.approx(2.0, abs=0.05)


def test_the_same_images_score_the_same_inception_score_whatever_the_random_state():
    network = random_network()
    images = common.float_images(common.load_dataset("digits").x_val)
    fid, score = network.metrics()
    fid.update(network.prepare(images), real=True)
    scores = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # what the studies before it drew differs from run to run
        scores.append(evaluation.quality_scores(images, fid, score, network, CPU)["inception_score"])
    assert scores[0] == scores[1]


# ---------------------------------------------------------------------------------------------
# The dataset's own classifier and its cache
# ---------------------------------------------------------------------------------------------


def test_the_classifier_is_trained_once_then_read_from_its_cache(tmp_path, monkeypatch, capsys):
    trained = []
    real_train = feature_networks.train_classifier

    def spy(data, device):
        trained.append(data.image_shape)
        return real_train(data, device)

    monkeypatch.setattr(feature_networks, "train_classifier", spy)
    data = common.load_dataset("digits")
    first = feature_networks.classifier_network(data, tmp_path, CPU)
    assert "training a classifier of digits" in capsys.readouterr().out
    second = feature_networks.classifier_network(data, tmp_path, CPU)
    out = capsys.readouterr().out
    assert len(trained) == 1 and "read from" in out and f"{first.about['classifier_test_accuracy']:.2%}" in out
    assert first.about == second.about and first.about["classifier_test_accuracy"] > 0.8  # 200 steps on digits
    (path,) = (tmp_path / "cache").glob("classifier-digits-1x8x8-*.pt")
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # written atomically, no leftovers

    # Another image size, or other images under the same name, never read this classifier.
    feature_networks.classifier_network(common.load_dataset("digits", image_size=12), tmp_path, CPU)
    other = common.load_dataset("digits")
    other.x_train = other.x_train.flip(-1)
    feature_networks.classifier_network(other, tmp_path, CPU)
    assert trained == [(1, 8, 8), (1, 12, 12), (1, 8, 8)] and len(list((tmp_path / "cache").glob("*.pt"))) == 3


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("damage", ["truncated", "unsafe", "another dataset's"])
def test_a_damaged_or_unsafe_classifier_cache_is_trained_again(tmp_path, capsys, damage):
    data = common.load_dataset("digits")
    path, key = feature_networks.classifier_cache(data, tmp_path)
    path.parent.mkdir()
    if damage == "truncated":
        path.write_bytes(b"PK\x03\x04 half a file")
    elif damage == "unsafe":
        with open(path, "wb") as f:
            pickle.dump({"key": key, "x": RunsCode(str(tmp_path / "pwned"))}, f, protocol=2)
    else:
        feature_networks.classifier_network(common.load_dataset("digits", image_size=12), tmp_path, CPU)
        (other,) = (tmp_path / "cache").glob("*.pt")
        other.rename(path)
    capsys.readouterr()
    network = feature_networks.classifier_network(data, tmp_path, CPU)
    out, err = capsys.readouterr()
    assert "damaged" in err and "training a classifier" in out and network.about["classifier_test_accuracy"] > 0.8
    assert not (tmp_path / "pwned").exists()
    assert feature_networks.read_classifier(path, key, data) is not None  # the new one replaced it


def test_a_dataset_without_labels_needs_inception(tmp_path):
    data = common.load_dataset("digits")
    data.y_train = torch.full_like(data.y_train, -1)
    with pytest.raises(machinery.CLIError, match="--feature-network inception"):
        feature_networks.classifier_network(data, tmp_path, CPU)


# ---------------------------------------------------------------------------------------------
# Inception-v3 offline
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """An AAE of one epoch on a tiny colour .npz dataset (3 x 8 x 8), whose default feature network is
    Inception-v3."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    arrays = {f"{x}_{split}": value for split, n in (("train", 200), ("test", 50)) for x, value in
              (("x", rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)), ("y", rng.integers(0, 3, n)))}
    np.savez(root / "colour.npz", **arrays)
    aae.main(["--dataset", str(root / "colour.npz"), "--epochs", "1", "--out", str(root / "run")])
    return root / "run"


@pytest.mark.parametrize("argv", [["{colour}"], ["{digits}", "--feature-network", "inception"]])
def test_inception_offline_is_one_line_that_names_the_classifier(colour_run, digits_run, tmp_path, monkeypatch,
                                                                 capsys, argv):
    pytest.importorskip("torch_fidelity")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached by an earlier download
    argv = ["quality", *[a.format(colour=colour_run, digits=digits_run) for a in argv]]
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Inception-v3" in err and "--feature-network classifier" in err and "connect" in err
    assert "## " not in out  # refused before any study ran


# ---------------------------------------------------------------------------------------------
# End to end, every model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "aae-digits"
    aae.main(["--epochs", "1", "--latent-dim", "4", "--out", str(out)])
    return out


MODELS = {  # one tiny digits run of every model script
    "aae": ["--latent-dim", "4"],
    "daae": ["--latent-dim", "4", "--sample-steps", "3"],
    "idaae": ["--latent-dim", "4", "--sample-steps", "2"],
    "learned_prior_aae": ["--batch-size", "256"],
    "ali": ["--latent-dim", "4"],
    "semi_supervised_aae": ["--hidden", "64"],
}


@pytest.fixture(scope="module")
def every_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("every-model")
    for model, argv in MODELS.items():
        module = __import__(model)
        assert run_script(module.main, ["--epochs", "1", "--out", str(root / model), *argv]) == 0
    return root


def test_quality_of_every_model_on_digits_offline(every_model, tmp_path, capsys):
    runs = [str(every_model / model) for model in MODELS]
    table = tmp_path / "table.md"
    status, out, err = run_cli(["quality", *runs, "--samples", "200", "--table", str(table)], capsys)
    assert status == 0, err
    assert out.count("training a classifier of digits") == 1  # once for the six runs
    for model in MODELS:
        result = json.loads((every_model / model / "eval.json").read_text())["quality"]
        assert QUALITY_KEYS <= set(result) and result["feature_network"] == "digits classifier"
        assert result["samples"] == 200 and result["reference"] == "test" and result["reference_images"] == 271
        assert result["fid"] > 0 and 1 <= result["inception_score"] <= 10
        assert 0.8 < result["classifier_test_accuracy"] <= 1
        assert result["validation"]["fid"] < result["fid"]  # real digits look more like digits than 1-epoch samples
    daae = json.loads((every_model / "daae" / "eval.json").read_text())["quality"]
    assert set(daae["steps"]) == {"0", "3"} and (every_model / "daae" / "quality_steps.png").stat().st_size > 0
    assert daae["steps"]["0"]["fid"] != daae["steps"]["3"]["fid"]
    lines = table.read_text().splitlines()
    assert len(lines[0].split(" | ")) == 1 + len(MODELS)  # the measure, then a column per run
    measures = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]
    assert all(title in measures for title in ("FID", "IS ± sd", "FID after 3 chain steps", "IS after 2 chain steps"))
    assert "feature network" not in measures  # one network for every run: comparable


def test_quality_is_reproducible_and_the_same_whether_the_classifier_was_trained_or_read(every_model, tmp_path,
                                                                                        capsys):
    run = every_model / "daae"
    results = []
    for _ in range(2):  # the working folder's data/cache/ is empty before the first
        assert run_cli(["quality", str(run), "--samples", "150", "--steps", "1"], capsys)[0] == 0
        results.append(json.loads((run / "eval.json").read_text())["quality"])
    for result in results:
        del result["seconds"]
    assert results[0] == results[1] and list(results[0]["steps"]) == ["1"]


def test_all_includes_quality_and_the_comparison_shows_every_measure_side_by_side(every_model, capsys):
    runs = [str(every_model / model) for model in ("aae", "daae")]
    status, out, err = run_cli(["all", *runs, "--samples", "150", "--max-train", "300"], capsys)
    assert status == 0, err
    table = out.split("## comparison")[1].strip().splitlines()
    assert table[0] == f"| measure | {runs[0]} | {runs[1]} |"
    measures = [line.split(" | ")[0].removeprefix("| ") for line in table[2:] if line.startswith("| ")]
    for title in ("reconstruction MSE", "SVC codes", "Parzen LL test", "FID", "IS ± sd"):
        assert title in measures
