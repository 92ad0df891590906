"""eval.py on tiny runs trained here (digits, a fake Omniglot folder): every study writes its
keys, the leave-one-drawer-out split, the chain-step study, the bandwidth chosen on validation
only, the comparison table, and one-line errors. The quality study's own tests are in
test_quality.py."""

import errno
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import aae
import common
import machinery
import eval as evaluation
from helpers import run_eval as run_cli
from helpers import run_script

RECONSTRUCTION_KEYS = {"mse", "se"}
SVM_KEYS = {"svm_rbf", "svm_rbf_pixels", "svm_rbf_pixels_auto", "svm_rbf_pca", "svm_rbf_pca_auto"}
LOO_KEYS = {"loo20_linear", "loo20_linear_se", "loo20_linear_max", "loo20_linear_pixels", "loo20_linear_pca"}


def eval_json(run_dir):
    return json.loads((run_dir / "eval.json").read_text())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """An AAE trained with corruption (sigma 0.5) for two epochs on digits."""
    out = tmp_path_factory.mktemp("runs") / "aae-digits"
    aae.main(["--epochs", "2", "--sigma", "0.5", "--latent-dim", "4", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def daae_run(tmp_path_factory):
    daae = pytest.importorskip("daae")
    out = tmp_path_factory.mktemp("runs") / "daae-digits"
    daae.main(["--epochs", "1", "--latent-dim", "4", "--sample-steps", "3", "--out", str(out)])
    return out


def write_omniglot_set(folder, alphabets, size=12):
    """The official layout <alphabet>/<character>/<id>_<drawer>.png, black strokes on white; each
    character is a different random stroke pattern, redrawn by each drawer with a few pixels moved."""
    rng = np.random.default_rng(len(alphabets))
    label = 0
    for alphabet, n_characters in sorted(alphabets.items()):
        for c in range(n_characters):
            character = folder / alphabet / f"character{c + 1:02d}"
            character.mkdir(parents=True)
            strokes = rng.random((size, size)) < 0.3
            for drawer in range(1, 21):
                drawn = strokes ^ (rng.random((size, size)) < 0.05)
                Image.fromarray(np.where(drawn, 0, 255).astype(np.uint8)).convert("1").save(
                    character / f"{900 + label:04d}_{drawer:02d}.png")
            label += 1


@pytest.fixture(scope="module")
def omniglot_run(digits_run, tmp_path_factory):
    """A fake Omniglot of 8x8 images (3 background characters, 22 evaluation characters) and a
    run folder that says it was trained there: the digits AAE's weights fit 8x8 images, and the
    protocol, not the model, is under test (an AAE trained on Omniglot needs 1000-unit layers)."""
    root = tmp_path_factory.mktemp("omniglot")
    write_omniglot_set(root / "images_background", {"Alpha": 3}, size=8)
    write_omniglot_set(root / "images_evaluation", {"Delta": 12, "Gamma": 10}, size=8)
    out = root / "aae-omniglot"
    shutil.copytree(digits_run, out)
    (out / "eval.json").unlink(missing_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.update(dataset="omniglot", data_dir=str(root / "moved"), num_classes=3, out=str(out))
    (out / "config.json").write_text(json.dumps(config))
    return out


# ---------------------------------------------------------------------------------------------
# Every study writes its keys
# ---------------------------------------------------------------------------------------------


def test_all_studies_on_digits_write_the_keys_and_print_tables(digits_run, capsys):
    status, out, err = run_cli(["all", str(digits_run), "--samples", "300"], capsys)
    assert status == 0, err
    results = eval_json(digits_run)
    assert RECONSTRUCTION_KEYS <= set(results["reconstruction"])
    assert results["reconstruction"]["sigma"] == 0.5 and results["reconstruction"]["images"] == 271
    assert SVM_KEYS <= set(results["classification"])
    assert all(0 <= results["classification"][key] <= 1 for key in SVM_KEYS)
    assert results["classification"]["svm_rbf_pixels"] > 0.9  # raw pixels separate digits well
    likelihood = results["likelihood"]
    assert likelihood["bandwidth"] in evaluation.BANDWIDTHS and likelihood["samples"] == 300
    assert {"mean", "se"} <= set(likelihood["test"]) and np.isfinite(likelihood["test"]["mean"])
    assert "steps" not in likelihood and "evaluation" not in likelihood  # an AAE has no chain; digits no eval set
    assert results["quality"]["samples"] == 300 and results["quality"]["feature_network"] == "digits classifier"
    assert out.count("| --- |") >= 4  # one markdown table per study


def test_reconstruction_matches_a_direct_computation_and_is_reproducible(digits_run):
    model = common.load_run(digits_run, torch.device("cpu")).model
    data = common.load_dataset("digits")
    common.seed_everything(0)
    first = evaluation.reconstruct(model, data, torch.device("cpu"))
    common.seed_everything(0)
    with torch.no_grad():
        x = data.x_test
        expected = (model.decode(model.encode(x + 0.5 * torch.randn_like(x))) - x).pow(2).flatten(1).mean(1)
    assert first["mse"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert first["se"] == pytest.approx(expected.std().item() / np.sqrt(len(x)), rel=1e-4)
    common.seed_everything(0)
    assert evaluation.reconstruct(model, data, torch.device("cpu")) == first


def test_a_study_merges_into_eval_json_and_keeps_the_others(digits_run, capsys):
    (digits_run / "eval.json").write_text(json.dumps({"mine": 1}))
    assert run_cli(["reconstruction", str(digits_run)], capsys)[0] == 0
    assert run_cli(["classification", str(digits_run), "--max-train", "300"], capsys)[0] == 0
    results = eval_json(digits_run)
    assert results["mine"] == 1 and "reconstruction" in results
    assert results["classification"]["train_images"] == 300
    assert any("--max-train" in note for note in results["classification"]["notes"])


def test_omniglot_protocol_end_to_end(omniglot_run, capsys):
    data_dir = str(omniglot_run.parent)  # the run folder's data_dir is gone: --data-dir finds the data
    status, out, err = run_cli(["all", str(omniglot_run), "--data-dir", data_dir], capsys)
    assert status == 0, err
    results = eval_json(omniglot_run)
    classification = results["classification"]
    assert (SVM_KEYS | LOO_KEYS) <= set(classification)
    assert classification["loo20_characters"] == 20 and classification["loo20_images"] == 400
    assert classification["loo20_linear_max"] >= classification["loo20_linear"]
    assert classification["loo20_linear_pixels"] > 0.5  # 20 characters, each a distinct pattern
    each = classification["loo20_linear_each"]  # per drawer, for eval.py compare
    assert list(each) == [str(d) for d in range(1, 21)] and np.mean(list(each.values())) == pytest.approx(
        classification["loo20_linear"])
    likelihood = results["likelihood"]
    assert {"mean", "se"} <= set(likelihood["test"]) and {"mean", "se"} <= set(likelihood["evaluation"])
    assert likelihood["evaluation"]["images"] == 22 * 20
    assert likelihood["samples"] == 1000  # the paper's count for Omniglot
    assert "leave one drawer out" in out


# ---------------------------------------------------------------------------------------------
# Leave one drawer out
# ---------------------------------------------------------------------------------------------


def test_leave_one_drawer_out_never_trains_on_the_tested_drawer():
    drawers = torch.arange(1, 21).repeat(7)[torch.randperm(140, generator=torch.Generator().manual_seed(0))]
    folds = evaluation.leave_one_drawer_out(drawers)
    assert [drawer for drawer, _, _ in folds] == list(range(1, 21))
    for drawer, train, test in folds:
        assert (drawers[test] == drawer).all() and len(test) == 7
        assert (drawers[train] != drawer).all() and len(train) == 133
        assert sorted(torch.cat([train, test]).tolist()) == list(range(140))


def test_first_characters_are_the_lowest_indices():
    y = torch.tensor([30, 2, 25, 7, 2, 19, 40, 0] * 3)
    chosen = evaluation.first_characters(y, n=4)
    assert set(y[chosen].tolist()) == {0, 2, 7, 19}
    assert chosen.sum() == 5 * 3


def test_drawer_study_uses_only_the_other_drawers(monkeypatch):
    """Every classifier is fitted on rows of other drawers and scored on the left-out one; the mean
    over the drawers comes with its standard error."""
    seen, accuracies = [], []
    real_accuracy = evaluation.accuracy

    def spy(classifier, x_train, y_train, x_test, y_test):
        seen.append((x_train[:, 0].copy(), x_test[:, 0].copy()))
        accuracies.append(real_accuracy(classifier, x_train, y_train, x_test, y_test))
        return accuracies[-1]

    monkeypatch.setattr(evaluation, "accuracy", spy)
    drawers = torch.arange(1, 21).repeat(3)
    y = torch.arange(3).repeat_interleave(20)
    features = np.random.default_rng(0).random((60, 5))
    features[:, 0] = drawers.numpy()  # column 0 of codes and pixels holds each row's drawer
    result = evaluation.drawer_study(features, features, y, drawers, n_components=5, seed=0)
    codes_and_pixels = [s for i, s in enumerate(seen) if i % 3 != 2]  # PCA features are rotated
    assert len(seen) == 60 and len(codes_and_pixels) == 40
    for train_drawers, test_drawers in codes_and_pixels:
        assert len(set(test_drawers)) == 1 and test_drawers[0] not in train_drawers
    assert LOO_KEYS <= set(result)
    per_drawer = [a for i, a in enumerate(accuracies) if i % 3 == 0]  # the codes' accuracy on each drawer
    assert result["loo20_linear"] == pytest.approx(np.mean(per_drawer))
    assert result["loo20_linear_se"] == pytest.approx(np.std(per_drawer, ddof=1) / np.sqrt(20))


# ---------------------------------------------------------------------------------------------
# Parzen: the bandwidth on validation, greyscale, the chain steps
# ---------------------------------------------------------------------------------------------


def test_bandwidth_is_chosen_on_validation_never_on_test(digits_run, monkeypatch):
    calls = []
    real = evaluation.log_likelihoods

    def spy(samples, data, bandwidths, desc):
        calls.append((data, list(bandwidths), samples))
        return real(samples, data, bandwidths, desc)

    monkeypatch.setattr(evaluation, "log_likelihoods", spy)
    run = common.load_run(digits_run, torch.device("cpu"))
    data = common.load_dataset("digits")
    result = evaluation.likelihood(run.model, data, run.config, torch.device("cpu"), samples=200)
    choosing = [c for c in calls if len(c[1]) > 1]
    scoring = [c for c in calls if len(c[1]) == 1]
    assert len(choosing) == 1 and torch.equal(choosing[0][0], data.x_val)
    assert len(scoring) == 1 and torch.equal(scoring[0][0], data.x_test) and scoring[0][1] == [result["bandwidth"]]
    best, _ = common.select_bandwidth(choosing[0][2], data.x_val, evaluation.BANDWIDTHS)
    assert result["bandwidth"] == best


@pytest.mark.parametrize("bandwidth_on", [None, "validation"])
def test_omniglot_chooses_the_bandwidth_on_drawer_20_and_scores_with_fresh_samples(bandwidth_on, monkeypatch):
    calls = []
    real = evaluation.log_likelihoods

    def spy(samples, data, bandwidths, desc):
        calls.append((samples, data, len(bandwidths)))
        return real(samples, data, bandwidths, desc)

    monkeypatch.setattr(evaluation, "log_likelihoods", spy)
    data = common.load_dataset("digits")
    data.extra["x_eval"] = data.x_test[:20]  # an evaluation set, as Omniglot has
    config = {"model": "fake", "dataset": "omniglot"}
    result = evaluation.likelihood(FakeChainModel(), data, config, torch.device("cpu"), samples=60, steps=[],
                                   bandwidth_on=bandwidth_on)
    (choosing,), scoring = [c for c in calls if c[2] > 1], [c for c in calls if c[2] == 1]
    assert [len(c[1]) for c in scoring] == [len(data.x_test), 20]  # drawer 20, then the evaluation set
    if bandwidth_on is None:  # the authors' protocol: chosen on drawer 20 (the test split), fresh samples score
        assert result["bandwidth_chosen_on"] == "test" and torch.equal(choosing[1], data.x_test)
        assert all(not torch.equal(c[0], choosing[0]) for c in scoring)
    else:
        assert result["bandwidth_chosen_on"] == "validation" and torch.equal(choosing[1], data.x_val)
        assert all(c[0] is choosing[0] for c in scoring)
    assert result["bandwidth_choice"]["images"] == len(choosing[1])


def test_colour_images_are_scored_in_greyscale(monkeypatch):
    shapes = []
    monkeypatch.setattr(evaluation, "log_likelihoods",
                        lambda samples, data, bandwidths, desc: shapes.append((samples.shape, data.shape))
                        or torch.zeros(len(bandwidths), len(data)))
    evaluation.parzen(torch.rand(10, 3, 4, 4), ("validation", torch.rand(6, 3, 4, 4)), {"test": torch.rand(5, 3, 4, 4)},
                      "x")
    assert shapes == [((10, 1, 4, 4), (6, 1, 4, 4)), ((10, 1, 4, 4), (5, 1, 4, 4))]
    grey = evaluation.greyscale(torch.tensor([0.0, 0.3, 0.9]).view(1, 3, 1, 1))
    assert grey.shape == (1, 1, 1, 1) and grey.item() == pytest.approx(0.4)


class FakeChainModel(torch.nn.Module):
    """A model whose chain step t gives images of the constant value t / 10."""

    latent_dim, sigma = 2, 0.0

    def sample(self, n, steps=None):
        return torch.rand(n, 1, 8, 8)

    def markov_chain_sample(self, n, steps):
        return [torch.full((n, 1, 8, 8), t / 10) for t in range(steps + 1)]


def test_chain_study_scores_one_entry_per_step_from_that_step(tmp_path, monkeypatch):
    scored = []
    real = evaluation.parzen

    def spy(samples, choose_on, sets, label, scoring_samples=None):
        scored.append(samples[0, 0, 0, 0].item())
        return real(samples, choose_on, sets, label, scoring_samples)

    monkeypatch.setattr(evaluation, "parzen", spy)
    data = common.load_dataset("digits")
    data.extra["x_eval"] = data.x_test[:20]  # an evaluation set, as Omniglot has
    config = {"model": "fake", "dataset": "digits", "sample_steps": 10}
    result = evaluation.likelihood(FakeChainModel(), data, config, torch.device("cpu"), samples=50,
                                   steps=[5, 0, 1], plot_path=tmp_path / "steps.png")
    assert list(result["steps"]) == ["0", "1", "5"]
    assert all({"mean", "se", "bandwidth"} <= set(v) for v in result["steps"].values())
    assert all(v["evaluation"]["images"] == 20 for v in result["steps"].values())
    assert scored[1:] == pytest.approx([0.0, 0.1, 0.5])  # after the plain samples: steps 0, 1, 5
    assert (tmp_path / "steps.png").stat().st_size > 0

    no_chain = torch.nn.Module()
    no_chain.sample, no_chain.sigma = FakeChainModel().sample, 0.0
    result = evaluation.likelihood(no_chain, data, config, torch.device("cpu"), samples=50, steps=[0, 1])
    assert "steps" not in result and any("no Markov chain" in note for note in result["notes"])


def test_daae_chain_steps_and_comparison_table(digits_run, daae_run, tmp_path, capsys):
    table = tmp_path / "table.md"
    status, out, err = run_cli(["likelihood", str(digits_run), str(daae_run), "--samples", "100",
                                "--steps", "0", "2", "--table", str(table)], capsys)
    assert status == 0, err
    assert set(eval_json(daae_run)["likelihood"]["steps"]) == {"0", "2"}
    assert (daae_run / "likelihood_steps.png").exists()
    lines = table.read_text().splitlines()
    assert lines[0] == f"| measure | {digits_run} | {daae_run} |" and "| model | aae | daae |" in lines
    chain = next(line for line in lines if line.startswith("| LL after 2 chain steps |"))
    assert chain.split(" | ")[1] == "–" and "## comparison" in out  # the AAE has no chain


def test_linear_classifier_per_attribute():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(400, 6))
    attributes = np.stack([codes[:, 0] > 0, codes[:, 1] + codes[:, 2] > 0, np.ones(400, bool)], 1).astype(int)
    accuracies = evaluation.attribute_accuracies(codes[:300], attributes[:300], codes[300:], attributes[300:],
                                                 ["a", "b", "always"], seed=0)
    assert list(accuracies) == ["a", "b", "always"]
    assert accuracies["a"] > 0.9 and accuracies["b"] > 0.9 and accuracies["always"] == 1.0


# ---------------------------------------------------------------------------------------------
# Errors: one line, no traceback
# ---------------------------------------------------------------------------------------------


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damaged_copy(run, tmp_path, how):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    if how == "unknown model":
        config["model"] = "os"
    elif how == "other networks":
        config["latent_dim"] = 7
    elif how == "corrupt checkpoint":
        (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    elif how == "unsafe checkpoint":
        with open(copy / "checkpoint.pt", "wb") as f:
            pickle.dump({"format": machinery.CHECKPOINT_FORMAT, "x": RunsCode(str(tmp_path / "pwned"))}, f, protocol=2)
    elif how == "bad eval.json":
        (copy / "eval.json").write_text("{")
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("how, words", [
    ("unknown model", "unknown model 'os'"),
    ("other networks", "does not match"),
    ("corrupt checkpoint", "not a valid checkpoint"),
    ("unsafe checkpoint", "not a valid checkpoint"),
    ("bad eval.json", "not valid JSON"),
])
def test_a_damaged_run_is_one_line(digits_run, tmp_path, capsys, how, words):
    status, out, err = run_cli(["reconstruction", str(damaged_copy(digits_run, tmp_path, how))], capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("argv, words", [
    (["reconstruction", "{missing}"], "is not a folder"),
    (["reconstruction", "{empty}"], "config.json not found"),
    (["bogus", "{empty}"], "invalid choice"),
    (["likelihood", "{empty}", "--samples", "0"], "--samples"),
    (["likelihood", "{empty}", "--steps", "-1"], "--steps"),
])
def test_bad_command_lines_are_one_line(tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    argv = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in argv]
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_a_daae_table_says_that_its_plain_samples_and_step_0_are_one_x0(daae_run, capsys):
    status, out, err = run_cli(["likelihood", str(daae_run), "--samples", "100"], capsys)
    assert status == 0, err
    assert "differ by sampling alone" in out
    status, out, err = run_cli(["likelihood", str(daae_run), "--samples", "100", "--steps", "3"], capsys)
    assert status == 0 and "differ by sampling alone" not in out  # no step 0: nothing to explain


# ---------------------------------------------------------------------------------------------
# A run folder eval.py cannot write; a study older than its run's checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["read-only file system", "read-only folder"])
def test_a_run_folder_that_cannot_be_written_is_refused_before_any_study(how, digits_run, tmp_path, monkeypatch,
                                                                         capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    if how == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        run.chmod(0o555)
    else:
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):  # what a read-only mount answers, even to root
            if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    studied, reconstruct = [], evaluation.reconstruct
    monkeypatch.setattr(evaluation, "reconstruct", lambda *args: studied.append(1) or reconstruct(*args))
    try:
        status, _, err = run_cli(["reconstruction", str(digits_run), str(run)], capsys)
    finally:
        run.chmod(0o755)
    assert status == 2 and studied == [], err  # not even the writable first run: all are checked first
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write eval.json in {run} (") and \
        "nothing was evaluated" in lines[0], lines


def test_a_study_older_than_its_runs_checkpoint_is_said_and_measured_again(tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    assert run_script(aae.main, ["--epochs", "1", "--latent-dim", "4", "--out", str(run)]) == 0
    assert run_script(aae.main, ["--epochs", "1", "--latent-dim", "4", "--seed", "1", "--out", str(other)]) == 0
    assert run_cli(["reconstruction", str(run), str(other)], capsys)[0] == 0
    (tmp_path / "table.json").write_text(json.dumps([{"result": "AAE: MSE", "paper": "–", "runs": ["run"],
                                                      "study": "reconstruction", "key": ["mse"], "digits": 4,
                                                      "budget": "b", "command": "c"}]))
    said = f"{run}/eval.json: reconstruction was measured at epoch 1, but its checkpoint is now at epoch 2"
    for fresh in (True, False):
        status, out, err = run_cli(["compare", str(run), "--against", str(other)], capsys)
        assert status == 0 and (said in out) != fresh and (said in err) != fresh, (out, err)
        status, out, err = run_cli(["table", str(tmp_path)], capsys)
        assert status == 0 and (said in err) != fresh, err
        if fresh:  # trained further after it was evaluated
            assert run_script(aae.main, ["--epochs", "2", "--out", str(run), "--resume"]) == 0
    assert f"re-measure it: python eval.py all {run}" in err
    assert run_cli(["reconstruction", str(run)], capsys)[0] == 0  # measured again: current, and nothing said
    assert json.loads((run / "eval.json").read_text())["reconstruction"]["epoch"] == 2
    status, out, err = run_cli(["compare", str(run), "--against", str(other)], capsys)
    assert status == 0 and "measured at epoch" not in out + err


def test_a_merge_removes_what_a_killed_eval_json_write_left(tmp_path):
    (tmp_path / ".eval.json.k9x.tmp").write_text('{"half": ')  # kill -9 during atomic_path's write
    evaluation.merge_results(tmp_path, "reconstruction", {"mse": 1.0})
    assert not (tmp_path / ".eval.json.k9x.tmp").exists()
    assert json.loads((tmp_path / "eval.json").read_text()) == {"reconstruction": {"mse": 1.0}}
