"""The AAE: its priors and networks, the two-phase step, and the command line end to end,
including exact resume (after a finished epoch and after Ctrl-C mid-epoch) and bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

import aae
import common
from helpers import assert_training_progresses, run_script, tiny_npz

ROOT = Path(__file__).resolve().parents[1]


def cli(argv):
    """Run `python aae.py ARGV` in-process; return its exit status."""
    return run_script(aae.main, argv)


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


# ---------------------------------------------------------------------------------------------
# Priors and networks
# ---------------------------------------------------------------------------------------------


def test_mixture_prior_components_follow_the_labels():
    torch.manual_seed(0)
    for k in (0, 3, 7):
        z = aae.sample_prior("mixture", 2000, 2, "cpu", torch.full((2000,), k))
        angle = 2 * math.pi * k / 10
        torch.testing.assert_close(z.mean(0), 4 * torch.tensor([math.cos(angle), math.sin(angle)]), atol=0.05, rtol=0)
        assert z.std(0).mean().item() == pytest.approx(0.5, rel=0.05)
    unlabelled = aae.sample_prior("mixture", 5000, 2, "cpu", torch.full((5000,), -1))  # -1: unlabelled
    assert unlabelled.norm(dim=1).mean().item() == pytest.approx(4, rel=0.05)
    assert unlabelled.mean(0).abs().max() < 0.2  # spread over the whole circle


def test_swissroll_prior_segments_follow_the_labels():
    torch.manual_seed(0)
    for k in (0, 5, 9):
        z = aae.sample_prior("swissroll", 2000, 2, "cpu", torch.full((2000,), k))
        radius = z.norm(dim=1)
        assert 3 * math.sqrt(k / 10) - 0.35 < radius.min() and radius.max() < 3 * math.sqrt((k + 1) / 10) + 0.35


@pytest.mark.parametrize("conv, shape", [(False, (1, 28, 28)), (True, (3, 64, 64)), (True, (3, 32, 32))])
def test_network_shapes(conv, shape):
    model = aae.AAE(shape, 12, conv=conv, encoder_hidden=[32], decoder_hidden=[32], discriminator_hidden=[16],
                    label_slots=11)
    x = torch.rand(5, *shape)
    z = model.encode(x)
    assert z.shape == (5, 12)
    x_hat = model.decode(z)
    assert x_hat.shape == (5, *shape) and 0 <= x_hat.min() and x_hat.max() <= 1
    onehot = torch.nn.functional.one_hot(torch.arange(5), 11).float()
    assert model.discriminator(z, onehot).shape == (5,)
    assert model.sample(3).shape == (3, *shape)
    # The training steps take BCE from the decoder's logits: the same loss as BCE on its output.
    logits = model.decoder.logits(z)
    assert torch.allclose(torch.sigmoid(logits), x_hat)
    assert torch.allclose(torch.nn.functional.binary_cross_entropy_with_logits(logits, x),
                          torch.nn.functional.binary_cross_entropy(x_hat, x))


def test_losses_at_equilibrium_are_ln2():
    half = torch.zeros(8)  # logit 0 = probability 1/2
    assert aae.discriminator_loss(half, half).item() == pytest.approx(2 * math.log(2))
    assert aae.encoder_adversarial_loss(half).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------


def tiny_model_and_optimizers(lr=1e-3, reconstruction_lr=None):
    torch.manual_seed(0)
    model = aae.AAE((1, 8, 8), 4, encoder_hidden=[64], decoder_hidden=[64], discriminator_hidden=[64])
    rec_lr = lr if reconstruction_lr is None else reconstruction_lr
    optimizers = {
        "reconstruction": torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=rec_lr),
        "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=lr),
        "encoder_adversarial": torch.optim.Adam(model.encoder.parameters(), lr=lr),
    }
    return model, optimizers


def test_regularisation_phase_changes_encoder_and_discriminator_not_decoder():
    model, optimizers = tiny_model_and_optimizers(reconstruction_lr=0.0)  # switch the reconstruction phase off
    before = {k: v.clone() for k, v in model.state_dict().items()}
    aae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), torch.zeros(16, dtype=torch.long), 0.0, 0)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder", "discriminator"}


def test_losses_fall_on_tiny_data():
    data = common.load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    model, optimizers = tiny_model_and_optimizers()
    history = []
    for _ in range(40):
        for i in range(0, 256, 32):
            history.append(aae.train_step(model, optimizers, x[i:i + 32], y[i:i + 32], 0.0, 0))
    assert_training_progresses(history)


def test_label_conditioned_discriminator_sees_the_one_hot():
    torch.manual_seed(0)
    model = aae.AAE((1, 8, 8), 2, prior="mixture", encoder_hidden=[32], decoder_hidden=[32],
                    discriminator_hidden=[32], label_slots=11)
    assert model.discriminator.net[0].in_features == 2 + 11
    optimizers = {name: torch.optim.Adam(params, lr=1e-3) for name, params in [
        ("reconstruction", [*model.encoder.parameters(), *model.decoder.parameters()]),
        ("discriminator", model.discriminator.parameters()), ("encoder_adversarial", model.encoder.parameters())]}
    labels = torch.tensor([0, 1, 2, -1] * 4)  # -1 = "unlabelled"
    losses = aae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), labels, 0.0, 11)
    assert all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------------------------------------
# The command line, run folder and resume
# ---------------------------------------------------------------------------------------------


def test_cli_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    assert cli(["--epochs", "2", "--out", str(out), "--prior", "mixture"]) == 0
    for name in ("config.json", "checkpoint.pt", "log.csv", "losses.png", "samples.png", "reconstructions.png",
                 "samples/epoch_001.png", "samples/epoch_002.png", "code_space.png", "manifold.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "aae" and config["latent_dim"] == 2 and config["lr"] == 1e-3
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    model = aae.build_model(config)
    model.load_state_dict(weights(out / "checkpoint.pt"))


def test_the_readmes_commands_in_a_row_get_a_run_folder_each(tmp_path, monkeypatch):
    # `python aae.py`, then `python aae.py --prior mixture`, without --out: two default folders.
    monkeypatch.chdir(tmp_path)
    assert cli(["--epochs", "1"]) == 0
    assert cli(["--epochs", "1", "--prior", "mixture"]) == 0
    assert cli(["--epochs", "2", "--prior", "mixture", "--resume"]) == 0
    assert json.loads((tmp_path / "runs/aae-digits/config.json").read_text())["prior"] == "gaussian"
    assert json.loads((tmp_path / "runs/aae-digits-mixture/config.json").read_text())["epochs"] == 2


def test_a_busy_cpu_gets_one_thread_and_a_machine_without_load_average_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (100.0, 100.0, 100.0))
    assert cli(["--epochs", "1", "--out", str(tmp_path / "busy")]) == 0
    assert "the CPU is busy (load 100.0" in capsys.readouterr().err and torch.get_num_threads() == 1
    monkeypatch.delattr(os, "getloadavg")  # as on Windows
    assert cli(["--epochs", "1", "--out", str(tmp_path / "windows")]) == 0


def test_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    assert cli(["--epochs", "3", "--out", str(tmp_path / "straight"), "--seed", "3"]) == 0
    assert cli(["--epochs", "1", "--out", str(tmp_path / "resumed"), "--seed", "3"]) == 0
    capsys.readouterr()
    assert cli(["--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    assert "warning" not in capsys.readouterr().err  # flags left out are not "changed settings"
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    log = (tmp_path / "resumed/log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3"]


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    assert cli(["--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    calls = []
    step = aae.train_step

    def interrupted_step(*args):
        calls.append(1)
        if len(calls) == 25:  # epoch 2 (19 steps an epoch on digits), step 6
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args)

    monkeypatch.setattr(aae, "train_step", interrupted_step)
    assert cli(["--epochs", "2", "--out", str(tmp_path / "resumed")]) == 130
    assert "--resume" in capsys.readouterr().err
    saved = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 6)
    monkeypatch.setattr(aae, "train_step", step)
    assert cli(["--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_keeps_the_saved_settings_and_says_so(tmp_path, capsys):
    assert cli(["--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli(["--epochs", "2", "--out", str(tmp_path), "--resume", "--lr", "0.5"]) == 0
    assert "ignoring --lr 0.5: the resumed run keeps its saved 0.001" in capsys.readouterr().err
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-3


def test_resume_names_a_flag_its_older_run_never_saved(tmp_path, capsys):
    assert cli(["--epochs", "1", "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    del config["save_every"], config["precision"]  # a run from before these flags existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert cli(["--epochs", "2", "--out", str(tmp_path), "--resume", "--precision", "bf16"]) == 0
    assert "ignoring --precision bf16: the resumed run was saved before --precision existed" in capsys.readouterr().err
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "fp32"


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    calls = []
    step = aae.train_step

    def failing_step(*args):
        calls.append(1)
        losses = step(*args)
        if len(calls) > 19:  # from epoch 2 on
            losses["reconstruction"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(aae, "train_step", failing_step)
    assert cli(["--epochs", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "reconstruction loss became nan in epoch 2" in err and len(err.splitlines()) == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_bad_input_is_one_line_and_no_traceback(tmp_path, monkeypatch, capsys):
    def fail_download(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(common.torchvision_utils, "download_and_extract_archive", fail_download)
    existing = tmp_path / "existing"
    assert cli(["--epochs", "1", "--out", str(existing)]) == 0
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((existing / "config.json").read_text())
    (damaged / "checkpoint.pt").write_bytes(b"\x00garbage")
    capsys.readouterr()
    cases = {
        ("--dataset", "nosuch"): "unknown dataset",
        ("--sigma", "-1"): "--sigma",
        ("--epochs", "0"): "--epochs",
        ("--batch-size", "0"): "--batch-size",
        ("--batch-size", "5000"): "larger than the training set",
        ("--dataset", str(tmp_path / "missing.npz")): "no such file",
        ("--dataset", "omniglot", "--data-dir", str(tmp_path / "empty")): "--dataset digits",
        ("--prior", "mixture", "--latent-dim", "5"): "2-D",
        ("--labels", "100"): "--prior mixture or swissroll",
        ("--resume", "--out", str(tmp_path / "nothing")): "no checkpoint",
        ("--resume", "--out", str(damaged)): "not a valid checkpoint",
        ("--out", str(existing)): "--resume",
    }
    for argv, message in cases.items():
        assert cli(["--epochs", "1", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (argv, err)


def test_the_real_command_prints_one_line_not_a_traceback():
    result = subprocess.run([sys.executable, "aae.py", "--dataset", "nosuch"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr


def test_pictures_work_with_a_tiny_test_split(tmp_path):
    path = tiny_npz(tmp_path / "tiny.npz")
    assert cli(["--dataset", str(path), "--epochs", "1", "--batch-size", "16", "--sigma", "0.3",
                "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run/reconstructions.png").is_file()


def test_reconstructions_are_groups_of_rows_of_up_to_ten_however_small_the_test_split(monkeypatch):
    drawn = {}
    monkeypatch.setattr(aae.common, "save_grid", lambda images, path, nrow, row_labels: drawn.update(
        images=images, nrow=nrow, row_labels=row_labels))
    x = torch.rand(23, 1, 8, 8)
    aae.save_reconstructions([x, 1 - x], ["test images", "reconstructions"], "unused.png")
    assert drawn["nrow"] == 10 and drawn["images"].shape == (40, 1, 8, 8)  # 2 groups of 2 rows; 3 images left out
    assert torch.equal(drawn["images"][10:20], 1 - x[:10]) and torch.equal(drawn["images"][20:30], x[10:20])
    aae.save_reconstructions([x[:7], x[:7]], ["a", "b"], "unused.png")
    assert drawn["nrow"] == 7 and drawn["images"].shape == (14, 1, 8, 8)
