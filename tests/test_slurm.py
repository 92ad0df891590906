"""sweep.py --slurm on a real Slurm cluster (tools/start_slurm.sh starts a one-node one; .ci/run
does): a grid as one submitit job array, and a run whose task gets Slurm's time-limit warning
mid-training, which saves, is requeued, resumes, and ends with the weights of a run never cut.
Skipped where no cluster answers."""

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aae
from helpers import run_script

REPO = Path(__file__).resolve().parent.parent


def cluster_answers():
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not cluster_answers(), reason="no Slurm cluster answers (sinfo)")]


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def test_a_grid_goes_out_as_one_job_array():
    import sweep

    argv = ["--command", "python aae.py --dataset digits --epochs 2 --latent-dim 2", "--seeds", "0", "1",
            "--studies", "none", "--out", "grid", "--slurm", "--time", "5"]
    assert run_script(sweep.main, argv) == 0
    assert all(torch.load(f"grid/s{seed}/checkpoint.pt", weights_only=True)["epoch"] == 2 for seed in (0, 1))
    tasks = [p.name for p in Path("grid/slurm").iterdir() if not p.name.startswith(".")]  # not submitit's .submission_*
    array = tasks[0].split("_")[0]
    assert {p.name for p in Path("grid/slurm").iterdir()} >= {f"{array}_0", f"{array}_1"}  # one array, two tasks


def test_a_task_warned_of_its_time_limit_saves_is_requeued_and_ends_as_a_run_never_cut():
    """Slurm warns a task SIGUSR2 (--signal-delay seconds) before its time limit; here the same
    signal comes sooner, by scancel, as submitit's own tests send it, so that the test is short."""
    flags = ["--dataset", "digits", "--epochs", "30", "--latent-dim", "2"]
    assert run_script(aae.main, [*flags, "--out", "straight"]) == 0
    sweeping = subprocess.Popen(
        [sys.executable, str(REPO / "sweep.py"), "--command", "python aae.py " + " ".join(flags), "--studies", "none",
         "--out", "cut", "--slurm", "--time", "10", "--signal-delay", "60"], stdout=subprocess.PIPE, text=True)
    array = sweeping.stdout.readline().split()[3]  # "submitted job array N ..."
    log = Path("cut/s0/log.csv")
    while not log.exists() or len(log.read_text().splitlines()) < 4:
        assert sweeping.poll() is None, "the sweep ended before its task was signalled"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", array], check=True)
    deadline = time.time() + 300
    while sweeping.poll() is None and time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", array, "-o", "%T %r"], capture_output=True, text=True).stdout
        if "PENDING BeginTime" in state:  # a requeued job waits 2 minutes: start it now
            subprocess.run(["scontrol", "update", f"JobId={array}", "StartTime=now"], capture_output=True)
        time.sleep(1)
    out = sweeping.communicate(timeout=5)[0] if sweeping.poll() is not None else sweeping.kill()
    assert sweeping.returncode == 0, out
    run_log = Path("cut/s0/sweep.log").read_text()
    # the signal lands mid-epoch ("stopped at epoch 4, step 5") or between two ("stopped after epoch 4")
    assert re.search(r"stopped (at|after) epoch \d+", run_log) and "--out cut/s0 --resume" in run_log
    task_logs = "".join(p.read_text() for p in Path("cut/slurm").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in task_logs and "DUE TO JOB REQUEUE" in task_logs
    straight, cut = weights("straight/checkpoint.pt"), weights("cut/s0/checkpoint.pt")
    assert all(torch.equal(straight[k], cut[k]) for k in straight)
