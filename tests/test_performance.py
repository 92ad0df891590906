"""What the speed settings must not change: --precision bf16 (tested through a forced detection,
since CI's CPUs may emulate bfloat16), datasets kept as uint8, --save-every and SIGTERM."""

import importlib
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import common
import machinery
import daae
from helpers import assert_training_progresses
from helpers import run_script as cli

SCRIPTS = ("aae", "daae", "idaae", "learned_prior_aae", "ali", "semi_supervised_aae")


@pytest.fixture
def native_bf16(monkeypatch):
    """Take the CPU to have bfloat16 in hardware, whatever it has: the bf16 path runs either way
    (emulated where it is not native), only slower."""
    monkeypatch.setattr(machinery, "native_bf16", lambda device: True)


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def test_bf16_losses_fall_and_stay_float32_like_the_weights(native_bf16):
    x = common.load_dataset("digits").x_train[:256]
    torch.manual_seed(0)
    model = daae.DAAE((1, 8, 8), 4, 0.5, encoder_hidden=[64], decoder_hidden=[64], discriminator_hidden=[64])
    optimizers = daae.make_optimizers(model, {"lr": 1e-3, "optimizer": "adam", "adversarial_lr": None})
    run = SimpleNamespace(device=torch.device("cpu"), config={"precision": "bf16"})
    history = []
    for _ in range(30):
        for i in range(0, 256, 32):
            with common.autocast(run):
                history.append(daae.train_step(model, optimizers, x[i:i + 32], 0.25))
    assert all(loss.dtype == torch.float32 for losses in history for loss in losses.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s.dtype == torch.float32 for o in optimizers.values() for state in o.state.values()
               for s in state.values() if s.is_floating_point())
    assert_training_progresses(history)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_trains_in_bf16_with_float32_losses(script, native_bf16, monkeypatch, tmp_path):
    module = importlib.import_module(script)
    record, dtypes = common.Run.record, set()

    def recording(run, losses):
        assert run.config["precision"] == "bf16"
        dtypes.update(loss.dtype for loss in losses.values())
        return record(run, losses)

    monkeypatch.setattr(common.Run, "record", recording)
    assert cli(module.main, ["--epochs", "1", "--precision", "bf16", "--out", str(tmp_path)]) == 0
    assert dtypes == {torch.float32}
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "bf16"
    assert all(w.dtype == torch.float32 for w in weights(tmp_path / "checkpoint.pt").values() if w.is_floating_point())


def test_bf16_resume_equals_an_uninterrupted_run(native_bf16, tmp_path):
    argv = ["--sample-steps", "2", "--precision", "bf16"]
    assert cli(daae.main, [*argv, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert cli(daae.main, [*argv, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert cli(daae.main, ["--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    fp32 = tmp_path / "fp32"
    assert cli(daae.main, ["--sample-steps", "2", "--epochs", "3", "--out", str(fp32)]) == 0
    assert any(not torch.equal(straight[k], v) for k, v in weights(fp32 / "checkpoint.pt").items())  # bf16 did run


def test_bf16_without_native_support_says_so_in_one_line_and_trains_in_fp32(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(machinery, "native_bf16", lambda device: False)
    assert cli(daae.main, ["--epochs", "1", "--sample-steps", "2", "--precision", "bf16",
                           "--out", str(tmp_path / "asked")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "bf16" in line]
    assert len(notes) == 1 and "no native bfloat16" in notes[0] and "stays fp32" in notes[0]
    assert json.loads((tmp_path / "asked/config.json").read_text())["precision"] == "fp32"  # as it trained
    assert cli(daae.main, ["--epochs", "1", "--sample-steps", "2", "--out", str(tmp_path / "fp32")]) == 0
    asked, fp32 = weights(tmp_path / "asked/checkpoint.pt"), weights(tmp_path / "fp32/checkpoint.pt")
    assert all(torch.equal(asked[k], fp32[k]) for k in fp32)


def test_a_run_from_before_precision_and_save_every_resumes_in_fp32(tmp_path):
    argv = ["--sample-steps", "2", "--out", str(tmp_path / "straight")]
    assert cli(daae.main, [*argv, "--epochs", "2"]) == 0
    old = tmp_path / "old"
    assert cli(daae.main, ["--sample-steps", "2", "--epochs", "1", "--out", str(old)]) == 0
    config = json.loads((old / "config.json").read_text())
    del config["precision"], config["save_every"]
    (old / "config.json").write_text(json.dumps(config))
    assert cli(daae.main, ["--epochs", "2", "--out", str(old), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(old / "checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_uint8_storage_gives_the_float_batches_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bytes.npz"
    np.savez(path, x_train=rng.integers(0, 256, (100, 6, 6), dtype=np.uint8), y_train=rng.integers(0, 10, 100),
             x_test=rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), y_test=rng.integers(0, 10, 10))
    data = common.load_dataset(str(path))
    assert data.x_train.dtype == torch.uint8 and data.x_train.nbytes == 90 * 36  # stored at one byte a pixel
    as_float = common.float_images(data.x_train)  # what the splits were before: float32 in [0, 1]
    assert as_float.dtype == torch.float32 and 0 <= as_float.min() and as_float.max() <= 1

    def batches(x, out):
        seen = []
        run = common.Run("daae", {"batch_size": 16, "epochs": 2, "save_every": 1}, out, torch.device("cpu"), None)
        torch.manual_seed(0)
        for _ in run.epochs():
            for xb, yb in run.batches(x, data.y_train):
                seen.append((xb, yb))
                run.record({"mean": xb.mean()})
        return seen

    from_bytes, from_floats = batches(data.x_train, tmp_path / "a"), batches(as_float, tmp_path / "b")
    assert len(from_bytes) == 2 * (90 // 16)
    for (xa, ya), (xb, yb) in zip(from_bytes, from_floats):
        assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_save_every_writes_pictures_and_checkpoints_less_often_and_always_the_last(tmp_path):
    assert cli(daae.main, ["--epochs", "5", "--save-every", "2", "--sample-steps", "2", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == \
        ["epoch_002.png", "epoch_004.png", "epoch_005.png"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 5
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 6  # the losses of every epoch


def test_sigterm_mid_epoch_saves_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    argv = ["--epochs", "2", "--save-every", "5", "--sample-steps", "2"]
    assert cli(daae.main, [*argv, "--out", str(tmp_path / "straight")]) == 0
    calls, step = [], daae.train_step

    def terminated_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 25:  # epoch 2 (19 steps an epoch on digits), step 6
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    monkeypatch.setattr(daae, "train_step", terminated_step)
    assert cli(daae.main, [*argv, "--out", str(tmp_path / "resumed")]) == 130
    assert "--resume" in capsys.readouterr().err
    saved = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 6)
    monkeypatch.setattr(daae, "train_step", step)
    assert cli(daae.main, ["--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # run.epochs() gave the handler back
