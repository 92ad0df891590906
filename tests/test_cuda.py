"""The model scripts on a CUDA device: every script trains in fp32 and in bf16 and its loss falls,
--resume continues a CUDA run as if it had never stopped, eval.py scores a CUDA-trained run on
CUDA and on the CPU, and the training steps never make the host wait for the device.

Every test here is marked `cuda` (`python -m pytest -m cuda` runs only these) and skips without
CUDA. `CUDA_TESTS_ON_CPU=1 python -m pytest -m cuda` runs the same tests on the CPU, all but the
host-sync check, which needs CUDA: a test is then known to run before a GPU is spent on it."""

import importlib
import json
import math
import os
import shutil
import warnings

import pytest
import torch

import daae
import machinery
from helpers import assert_loss_falls, run_eval
from helpers import run_script as cli

ON_CPU = os.environ.get("CUDA_TESTS_ON_CPU") == "1"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ON_CPU and not torch.cuda.is_available(),
                                 reason="no CUDA device (CUDA_TESTS_ON_CPU=1 runs these tests on the CPU)")]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.set_sync_debug_mode needs CUDA")

SCRIPTS = ("aae", "daae", "idaae", "semi_supervised_aae", "ali", "learned_prior_aae")


@pytest.fixture(params=["cpu" if ON_CPU else "cuda"])
def device(request):
    """--device of every run here: cuda, or cpu with CUDA_TESTS_ON_CPU=1."""
    return request.param


@pytest.fixture(params=["fp32", "bf16"])
def precision(request, device, monkeypatch):
    """--precision. bf16 needs bfloat16 in hardware (else the scripts train in fp32): a GPU without it
    skips, and a CPU is taken to have it, so that the bf16 path runs there (emulated, only slower)."""
    if request.param == "bf16":
        if device == "cpu":
            monkeypatch.setattr(machinery, "native_bf16", lambda device: True)
        elif not machinery.native_bf16(torch.device(device)):
            pytest.skip("this GPU has no bfloat16 (compute capability below 8.0)")
    return request.param


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model_state"]


# ---------------------------------------------------------------------------------------------
# Training: every script, fp32 and bf16
# ---------------------------------------------------------------------------------------------

# Per script, on digits (8x8, offline): its flags, the loss in log.csv that must fall, and to what
# fraction of the first epoch's in the last. learned_prior_aae's own loss is perceptual, measured in
# D_I's features, which move as D_I learns, so it may rise: --pixel-loss falls. ALI has no
# reconstruction loss: its discriminator starts at chance (2 ln 2) and falls as it learns to tell
# the encoder's pairs from the decoder's; at digits' lr 1e-4 it hardly moves in 10 epochs, at 2e-3
# it ended at 0.88-0.92 of its first epoch's in each of four seeds on the CPU.
TRAINING = {
    "aae": (["--epochs", "5"], "reconstruction", 0.8),
    "daae": (["--epochs", "5"], "reconstruction", 0.8),
    "idaae": (["--epochs", "5"], "reconstruction", 0.8),
    "semi_supervised_aae": (["--epochs", "5"], "reconstruction", 0.8),
    "ali": (["--epochs", "10", "--lr", "2e-3", "--latent-dim", "8"], "discriminator", 0.95),
    "learned_prior_aae": (["--epochs", "5", "--pixel-loss"], "pixel_reconstruction", 0.8),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_trains_and_its_loss_falls(script, device, precision, tmp_path):
    flags, loss, factor = TRAINING[script]
    module = importlib.import_module(script)
    out = tmp_path / "run"
    # --save-every 100: the pictures and checkpoint of the last epoch only (the last is always written)
    argv = [*flags, "--device", device, "--precision", precision, "--save-every", "100", "--out", str(out)]
    assert cli(module.main, argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["device"], config["precision"]) == (device, precision)  # it trained as asked, not fp32
    assert all(w.dtype == torch.float32 for w in weights(out / "checkpoint.pt").values() if w.is_floating_point())
    assert_loss_falls(out, loss, factor)


# ---------------------------------------------------------------------------------------------
# --resume
# ---------------------------------------------------------------------------------------------


def test_resume_continues_a_run_as_if_it_had_never_stopped(device, precision, tmp_path):
    argv = ["--sample-steps", "2", "--device", device, "--precision", precision]
    assert cli(daae.main, [*argv, "--epochs", "4", "--out", str(tmp_path / "straight")]) == 0
    assert cli(daae.main, [*argv, "--epochs", "2", "--out", str(tmp_path / "resumed")]) == 0
    assert cli(daae.main, ["--epochs", "4", "--device", device, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    if device == "cpu":
        assert all(torch.equal(straight[k], resumed[k]) for k in straight)
        return
    # On one GPU the resumed run repeats the straight one's kernels on the same shapes from the same
    # state (the CUDA generator's too, which the checkpoint keeps), so the bits should be the same:
    # cuBLAS's results are reproducible on one GPU and stream, and these fully connected networks
    # have no convolutions for cuDNN to pick a nondeterministic algorithm for. The tolerance, 1e-5,
    # is rounding's, in case a sum is taken in another order; a resume that lost a state is far
    # outside it (one that lost the random state ended 0.06 away on the CPU). Rounding alone is
    # reported as a warning, for the log to show.
    difference = max(float((straight[k] - resumed[k]).abs().max()) for k in straight)
    assert difference <= 1e-5, f"the resumed run's weights are {difference:.1e} from the straight run's"
    if difference > 0:
        warnings.warn(f"resume on CUDA: equal to {difference:.1e}, not bit for bit", stacklevel=1)


# ---------------------------------------------------------------------------------------------
# eval.py on a CUDA-trained run
# ---------------------------------------------------------------------------------------------


def test_eval_scores_a_cuda_trained_run_on_cuda_and_on_the_cpu(device, tmp_path, capsys):
    trained = tmp_path / "run"
    argv = ["--epochs", "2", "--latent-dim", "4", "--sample-steps", "3", "--device", device, "--out", str(trained)]
    assert cli(daae.main, argv) == 0
    on_cpu = tmp_path / "run-evaluated-on-the-cpu"
    shutil.copytree(trained, on_cpu)
    results = []
    for run_dir, where in ((trained, device), (on_cpu, "cpu")):  # the checkpoint loads onto either device
        status, _, err = run_eval(["all", str(run_dir), "--samples", "300", "--device", where], capsys)
        assert status == 0, err
        results.append(json.loads((run_dir / "eval.json").read_text()))
    for result in results:
        assert {"reconstruction", "classification", "likelihood", "quality"} <= set(result)
        assert all(math.isfinite(x) for x in (result["reconstruction"]["mse"], result["likelihood"]["test"]["mean"],
                                              result["quality"]["fid"]))
    a, b = (result["reconstruction"] for result in results)
    # Each device draws its own corruption noise, so the two errors differ by their sampling error at most
    assert abs(a["mse"] - b["mse"]) <= 4 * math.hypot(a["se"], b["se"])
    # The SVM sees the clean codes, which differ by rounding only (TF32 matmuls on CUDA): a few of the
    # 271 test digits may change sides
    assert abs(results[0]["classification"]["svm_rbf"] - results[1]["classification"]["svm_rbf"]) <= 0.03


# ---------------------------------------------------------------------------------------------
# No host-device synchronisation inside the training steps
# ---------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_training_steps_never_wait_for_the_device(script, precision, monkeypatch, tmp_path):
    """A script's train_step, as its loop calls it, runs under torch.cuda.set_sync_debug_mode("error"):
    a .item(), a blocking copy or any other wait for the GPU inside a step raises. The first step is
    left unchecked: it creates the optimisers' state and cuBLAS's handles, once a run."""
    module = importlib.import_module(script)
    owner = daae if script == "idaae" else module  # idaae.py trains with daae.train, which calls daae.train_step
    step, calls = owner.train_step, []

    def checked_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return step(*args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(owner, "train_step", checked_step)
    argv = ["--epochs", "1", "--device", "cuda", "--precision", precision, "--out", str(tmp_path / "run")]
    assert cli(module.main, argv) == 0
    assert len(calls) > 5  # digits: 12 to 19 steps an epoch
