"""aae.py --supervised (Section 4): the decoder gets [one-hot label, z], the discriminator z
alone; samples.png is Figure 7 (a row per style z, a column per class); one-line errors."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aae
import common
import eval as evaluation
from helpers import run_script


def cli(argv):
    return run_script(aae.main, argv)


def test_the_decoder_gets_the_label_and_the_game_sees_z_alone():
    torch.manual_seed(0)
    model = aae.AAE((1, 8, 8), 4, encoder_hidden=[32], decoder_hidden=[32], discriminator_hidden=[32],
                    decoder_labels=10)
    assert model.decoder.net[0].in_features == 10 + 4 and model.discriminator.net[0].in_features == 4
    z, labels = torch.randn(3, 4), torch.tensor([0, 5, 9])
    torch.testing.assert_close(model.decoder_input(z, labels), torch.cat([F.one_hot(labels, 10).float(), z], 1))
    # The label changes the image decoded from one z.
    assert not torch.allclose(model.decode(z[:1], torch.tensor([0])), model.decode(z[:1], torch.tensor([1])))
    optimizers = {name: torch.optim.Adam(params, lr=1e-3) for name, params in [
        ("reconstruction", [*model.encoder.parameters(), *model.decoder.parameters()]),
        ("discriminator", model.discriminator.parameters()), ("encoder_adversarial", model.encoder.parameters())]}
    losses = aae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), torch.arange(16) % 10, 0.0, 0,
                            supervised=True)
    assert all(torch.isfinite(v) for v in losses.values())


def test_style_grid_is_a_row_per_z_and_a_column_per_class():
    model = aae.AAE((1, 8, 8), 4, encoder_hidden=[16], decoder_hidden=[16], discriminator_hidden=[16],
                    decoder_labels=10)
    fixed_z = torch.randn(3, 4)
    images = aae.label_grid(model.decode, fixed_z, 10)
    assert images.shape == (30, 1, 8, 8)
    # Image (row r, column k) is dec([k, z_r]).
    torch.testing.assert_close(images[1 * 10 + 7], model.decode(fixed_z[1:2], torch.tensor([7]))[0])


def test_cli_supervised_run_and_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["--supervised", "--epochs", "1", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["supervised"] and config["latent_dim"] == 2
    assert (out / "samples.png").is_file() and (out / "reconstructions.png").is_file()
    model = aae.build_model(config)
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model_state"])
    assert model.decoder_labels == 10

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "unlabelled.npz", x_train=rng.integers(0, 256, (50, 6, 6), dtype=np.uint8),
             y_train=np.full(50, -1), x_test=rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), y_test=np.full(10, -1))
    capsys.readouterr()
    for argv, message in {("--prior", "mixture", "--labels", "100"): "choose one",
                          ("--dataset", str(tmp_path / "unlabelled.npz"), "--batch-size", "8"): "has none"}.items():
        assert cli(["--supervised", "--epochs", "1", "--out", str(tmp_path / "bad"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_eval_reconstructs_with_the_true_labels_and_runs_every_study(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["--supervised", "--epochs", "1", "--out", str(out)]) == 0
    assert run_script(evaluation.main, ["all", str(out), "--samples", "300"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "eval.json").read_text())
    assert {"reconstruction", "classification", "likelihood"} <= set(results)
    assert "true label" in printed and any("true label" in n for n in results["reconstruction"]["notes"])

    # The MSE is that of dec([true label, enc(x)]), and another label gives another number.
    model = common.load_run(out).model
    data = common.load_dataset("digits")
    with torch.no_grad():
        def mse(labels):
            return (model.decode(model.encode(data.x_test), labels) - data.x_test).pow(2).mean().item()
        assert results["reconstruction"]["mse"] == pytest.approx(mse(data.y_test), rel=1e-5)
        assert mse((data.y_test + 1) % 10) != pytest.approx(mse(data.y_test), rel=1e-3)
