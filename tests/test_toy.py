"""The toy datasets of points in the plane (toy25, ring8): their statistics, the ALI paper's
mode-coverage measure on samples whose answer is known, every model script end to end on them,
and eval.py's modes study."""

import json
import math
from pathlib import Path

import pytest
import torch

import aae
import ali
import common
import machinery
import daae
import eval as evaluation
import idaae
import learned_prior_aae
import semi_supervised_aae
import toy
from helpers import assert_training_progresses, run_eval, run_script

MODEL_SCRIPTS = {"aae": aae.main, "daae": daae.main, "idaae": idaae.main, "ali": ali.main,
                 "learned_prior_aae": learned_prior_aae.main, "semi_supervised_aae": semi_supervised_aae.main}


def test_toy25_is_the_ali_papers_grid_of_25_gaussians():
    data = common.load_dataset("toy25")
    assert [len(data.x_train), len(data.x_val), len(data.x_test)] == [100_000, 10_000, 10_000]
    assert data.image_shape == (2,) and data.num_classes == 25
    means, std = toy.MIXTURES["toy25"]
    assert sorted(set(means[:, 0].tolist())) == [-4, -2, 0, 2, 4] and std == 0.05
    for k in (0, 12, 24):  # each component's points: around its mean, with its spread
        points = data.x_train[data.y_train == k]
        assert torch.allclose(points.mean(0), means[k], atol=0.01)
        assert torch.allclose(points.std(0), torch.tensor([std, std]), rtol=0.05)
    counts = torch.bincount(data.y_train, minlength=25)
    assert counts.min() > 0.9 * 4000 and counts.max() < 1.1 * 4000  # equally likely
    again = common.load_dataset("toy25")
    assert torch.equal(again.x_test, data.x_test)  # the same points on every run
    assert not torch.equal(data.x_test[:100], data.x_val[:100])


def test_ring8_lies_on_a_circle_of_radius_2():
    data = common.load_dataset("ring8")
    assert data.num_classes == 8
    radius = data.x_train.norm(dim=1)
    assert abs(radius.mean().item() - 2) < 0.01 and radius.std().item() < 0.03


def test_toy_datasets_have_no_image_size():
    with pytest.raises(machinery.CLIError, match="points in the plane"):
        common.load_dataset("toy25", image_size=28)


def test_mode_coverage_on_hand_made_samples():
    means, std = toy.MIXTURES["toy25"]
    every_mode = means.repeat(40, 1) + 0.5 * std * torch.randn(1000, 2)
    assert evaluation.mode_coverage(every_mode, means, std) == {"modes_covered": 25, "high_quality": 1.0,
                                                                "modes_with_high_quality": 25}
    one_dropped = every_mode[(every_mode - means[7]).norm(dim=1) > 0.5]
    assert evaluation.mode_coverage(one_dropped, means, std)["modes_covered"] == 24
    one_mode = means[3] + std * torch.randn(500, 2)
    assert evaluation.mode_coverage(one_mode, means, std)["modes_covered"] == 1
    # Halfway between two modes: assigned (to a neighbour), so covered by the paper's rule, but not high-quality
    between = (means[:24] + means[1:]) / 2
    result = evaluation.mode_coverage(between, means, std)
    assert result["high_quality"] == 0.0 and result["modes_covered"] > 1 and result["modes_with_high_quality"] == 0
    one_good = torch.cat([between, means[5:6]])  # one sample on mode 5: that mode alone has a high-quality sample
    assert evaluation.mode_coverage(one_good, means, std)["modes_with_high_quality"] == 1


def test_reconstruction_loss_is_the_squared_error_for_points():
    x, out = torch.randn(8, 2), torch.randn(8, 2)
    assert torch.allclose(common.reconstruction_loss(out, x), (out - x).pow(2).mean())
    images, logits = torch.rand(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    assert torch.allclose(common.reconstruction_loss(logits, images),
                          torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), images), atol=1e-6)


def test_the_aae_learns_to_reconstruct_points():
    torch.manual_seed(0)
    data = common.load_dataset("toy25")
    config = {**aae.DEFAULTS["toy25"], "image_shape": [2], "prior": "gaussian", "labels": 0, "num_classes": 25,
              "sigma": 0.0, "supervised": False}
    model = aae.build_model(config)
    assert model.decoder.points  # a linear decoder output
    optimizers = aae.make_optimizers(model, config["lr"])
    history = [aae.train_step(model, optimizers, data.x_train[i * 100:(i + 1) * 100], data.y_train[:100], 0.0, 0)
               for i in range(200)]
    assert_training_progresses(history)


@pytest.mark.parametrize("model", sorted(MODEL_SCRIPTS))
def test_every_model_trains_on_toy25_and_eval_scores_its_modes(model, capsys):
    # 20 updates of 5,000 points: the CLI end to end, its pictures, and eval.py all (on 2,000 samples)
    argv = ["--dataset", "toy25", "--epochs", "1", "--batch-size", "5000", "--out", "run"]
    if model == "semi_supervised_aae":
        argv += ["--labels", "0"]
    assert run_script(MODEL_SCRIPTS[model], argv) == 0
    out = Path("run")
    for picture in ("samples.png", "reconstructions.png", "samples/epoch_001.png", "losses.png"):
        assert (out / picture).stat().st_size > 0, picture
    row = (out / "log.csv").read_text().splitlines()[1]  # epoch 1's losses
    assert all(math.isfinite(float(v)) for v in row.split(",") if v)
    status, printed, _ = run_eval(["all", "run", "--samples", "2000"], capsys)
    assert status == 0, printed
    assert "modes covered" in printed and "held-out points" in printed
    result = json.loads((out / "eval.json").read_text())["modes"]
    assert 1 <= result["modes_covered"] <= 25 and 0 <= result["high_quality"] <= 1
    assert result["points"] == 10_000 and result["reconstruction"] > 0
    assert len(result["squared_errors"].split()) == 10_000
    if model == "daae":  # x_0 and the chain's end
        assert list(result["steps"]) == ["10"]
    assert "classification" not in json.loads((out / "eval.json").read_text())


def test_image_studies_refuse_toy_runs_and_modes_refuses_image_runs(capsys):
    assert run_script(aae.main, ["--dataset", "toy25", "--epochs", "1", "--batch-size", "5000", "--out", "toy"]) == 0
    status, _, err = run_eval(["classification", "toy"], capsys)
    assert status != 0 and "points in the plane" in err and "modes" in err
    assert run_script(aae.main, ["--epochs", "1", "--out", "digits"]) == 0
    status, _, err = run_eval(["modes", "digits"], capsys)
    assert status != 0 and "toy datasets" in err


def test_clip_is_refused_on_points():
    assert run_script(daae.main, ["--dataset", "toy25", "--clip", "--out", "run"]) != 0
