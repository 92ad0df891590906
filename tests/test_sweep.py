"""sweep.py: commands rebuilt from the stored runs' config.json, a grid on the local pool, the
same sweep again (nothing to do), a stored folder re-run and checked against itself, a kill -9 of
the sweep resumed exactly, the error paths; the scripts' SIGUSR1/SIGUSR2 and --tensorboard."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aae
import compare
import machinery
import sweep
from helpers import run_script

REPO = Path(__file__).resolve().parent.parent
TINY = "python aae.py --dataset digits --epochs 2 --latent-dim 2"


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def same_weights(a, b):
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("folder", sorted(p.name for p in (REPO / "results").iterdir() if p.is_dir()))
def test_a_stored_runs_command_gives_back_its_settings(folder):
    """A rebuilt command passes the script's own checks, and every setting it gives is the stored one."""
    for job in sweep.jobs_from_results(REPO / "results" / folder, "runs/x", []):
        config = machinery.read_config(REPO / "results" / folder / job.name)
        command = job.command(resume=False)
        assert command[:2] == ["python", f"{config['model']}.py"] and command[-2:] == ["--out", str(job.out)]
        parsed = vars(importlib.import_module(job.script).parse_args(command[2:-2]))  # with the script's checks
        assert all(config[key] == value or (key == "dataset" and value.endswith(".npz"))
                   for key, value in parsed.items() if value is not None and key not in ("out", "resume", "tensorboard"))


def test_a_stored_study_keeps_its_options():
    jobs = {job.name: job for job in sweep.jobs_from_results(REPO / "results/mnist10k-clustering", "runs/x", [])}
    assert jobs["hidden1000-s0"].studies == {"classification": ["--max-train", "1000"]}
    daae = {job.name: job for job in sweep.jobs_from_results(REPO / "results/toy25", "runs/x", [])}["daae-s0"]
    assert daae.studies == {"modes": ["--samples", "10000", "--steps", "10"]}


def test_dry_run_prints_a_grid_of_values_and_seeds(capsys):
    argv = ["--command", TINY, "--seeds", "0", "1", "--set", "sigma=0,0.5", "lr=2e-3", "--out", "runs/g", "--dry-run"]
    assert run_script(sweep.main, argv) == 0
    out = capsys.readouterr().out
    assert [line[:-1] for line in out.splitlines() if line.startswith("runs/")] == \
        ["runs/g/sigma0-s0", "runs/g/sigma0-s1", "runs/g/sigma0.5-s0", "runs/g/sigma0.5-s1"]
    assert "python aae.py --dataset digits --epochs 2 --lr 0.002 --latent-dim 2 --seed 1 --sigma 0.5 " \
           "--out runs/g/sigma0.5-s1" in out
    assert "python eval.py all runs/g/sigma0-s0" in out
    assert not Path("runs").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "give a stored results folder"),
    (["--command", "python nosuch.py", "--out", "o"], "give a model script's command line"),
    (["--command", TINY + " --out x", "--out", "o"], "without --out and --resume"),
    (["--command", TINY, "--set", "epochs", "--out", "o"], "write KEY=VALUE"),
    (["--command", TINY, "--set", "nosuch=1", "--out", "o"], "aae.py has no --nosuch"),
    (["--command", TINY + " --lr -1", "--out", "o"], "argument --lr"),
    ([str(REPO / "results/toy25"), "--set", "epochs=1,2", "--out", "o"], "one value per setting"),
    ([str(REPO / "results/toy25"), "--seeds", "1", "--out", "o"], "--seeds and --studies are for --command"),
    ([str(REPO / "results/toy25"), "--out", str(REPO / "results/toy25")], "the stored folder itself"),
    (["--command", TINY, "--slurm", "--time", "1", "--out", "o"], "--time 1: give at least 3 minutes"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert run_script(sweep.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_grid_then_again_then_checked_as_a_stored_folder(capsys):
    """A tiny run and its study; the same command again does nothing; the folder, given a
    table.json, is re-run as a stored folder: its row reproduced, identical on this machine."""
    argv = ["--command", TINY, "--studies", "reconstruction", "--out", "stored"]
    assert run_script(sweep.main, argv) == 0
    assert "1 jobs: 1 done, 0 failed" in capsys.readouterr().out
    assert json.loads(Path("stored/s0/eval.json").read_text())["reconstruction"]["epoch"] == 2
    assert "$ python aae.py" in Path("stored/s0/sweep.log").read_text()
    assert run_script(sweep.main, argv) == 0
    assert "nothing to do: all 1 jobs in stored are done" in capsys.readouterr().out

    Path("stored/table.json").write_text(json.dumps([
        {"result": "AAE, digits: MSE", "paper": "–", "runs": ["s0"], "study": "reconstruction", "key": ["mse"],
         "digits": 4, "budget": "digits, 2 epochs", "command": "(x)"},
        {"result": "an earlier figure", "paper": "–", "docs": "docs/x.md", "budget": "-", "command": "-"}]))
    assert run_script(sweep.main, ["stored", "--out", "again"]) == 0
    out = capsys.readouterr().out
    assert "| AAE, digits: MSE |" in out and "| identical |" in out and "reproduced 1 of 1 rows" in out
    assert same_weights("stored/s0/checkpoint.pt", "again/s0/checkpoint.pt")
    assert Path("again/table.json").read_text() == Path("stored/table.json").read_text()


def test_the_verdicts():
    assert compare.same_spread([1.0, 2.0], [1.0, 2.0]) == "identical"
    assert compare.same_spread([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == "same"  # 0.5 apart, margin 2 x 0.82
    assert compare.same_spread([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == "differs"
    assert compare.same_spread([25.0, 25.0], [24.0, 24.0]) == "differs"  # no spread: any difference counts
    assert compare.same_interval("+0.6 points, 95 % -0.6 to +1.8", "+1.0 points, 95 % -0.1 to +2.0") == "same"
    assert compare.same_interval("-6.01, 95 % -11.36 to -2.38", "-1.00, 95 % -1.50 to -0.50") == "differs"
    assert compare.same_interval("+15, 95 % +6 to +24", "+15, 95 % +6 to +24") == "identical"


def test_a_failed_job_does_not_stop_the_others_and_the_exit_code_says_so(capsys):
    argv = ["--command", TINY, "--set", "batch-size=100,5000", "--studies", "none", "--workers", "2", "--out", "o"]
    assert run_script(sweep.main, argv) == 1
    out = capsys.readouterr().out
    assert "2 jobs: 1 done, 1 failed" in out and "batch_size5000-s0: exit 2: error: --batch-size 5000" in out
    assert Path("o/batch_size100-s0/checkpoint.pt").exists()


def test_a_folder_another_process_holds_is_left_alone(capsys):
    Path("o/s0").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open('o/s0/.lock', 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print(1, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        assert run_script(sweep.main, ["--command", TINY, "--studies", "none", "--out", "o"]) == 1
    finally:
        holder.kill()
    out = capsys.readouterr().out
    assert "s0: in use by process 4242; left alone" in out and not Path("o/s0/config.json").exists()


def test_kill_9_of_the_sweep_then_the_same_command_ends_as_one_uninterrupted_sweep():
    """The sweep dies mid-training; its run is told (SIGTERM), saves mid-epoch and stops; the same
    command resumes it, with the weights of a run that was never stopped."""
    assert run_script(aae.main, ["--dataset", "digits", "--epochs", "6", "--latent-dim", "2", "--out", "straight"]) == 0
    command = [sys.executable, str(REPO / "sweep.py"), "--command", TINY.replace("--epochs 2", "--epochs 6"),
               "--studies", "none", "--out", "cut"]
    sweeping = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    while not Path("cut/s0/log.csv").exists() or len(Path("cut/s0/log.csv").read_text().splitlines()) < 3:
        assert sweeping.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    sweeping.send_signal(signal.SIGKILL)
    sweeping.wait()
    for _ in range(600):  # the orphaned run saves and lets go of its folder
        if machinery.lock_holder("cut/s0") is None:
            break
        time.sleep(0.1)
    assert torch.load("cut/s0/checkpoint.pt", weights_only=True)["epoch"] < 6
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "--resume" in again.stdout
    assert same_weights("straight/checkpoint.pt", "cut/s0/checkpoint.pt")


def test_sigusr2_and_then_sigterm_save_once_and_resume_exactly(tmp_path, monkeypatch, capsys):
    """A scheduler's warning (SIGUSR2), then the same request from another sender (SIGTERM): the
    run saves mid-epoch and stops, as on one SIGTERM, and resumes exactly."""
    argv = ["--dataset", "digits", "--epochs", "2", "--latent-dim", "2"]
    assert run_script(aae.main, [*argv, "--out", "straight"]) == 0
    calls, step = [], aae.train_step

    def signalled_step(*args):
        calls.append(1)
        if len(calls) == 25:  # epoch 2, step 6
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args)

    monkeypatch.setattr(aae, "train_step", signalled_step)
    assert run_script(aae.main, [*argv, "--out", "cut"]) == 130
    saved = torch.load("cut/checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 6)
    monkeypatch.setattr(aae, "train_step", step)
    assert run_script(aae.main, ["--epochs", "2", "--out", "cut", "--resume"]) == 0
    assert same_weights("straight/checkpoint.pt", "cut/checkpoint.pt")
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_tensorboard_writes_the_losses_under_cleanrls_names_and_the_pictures(capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run_script(aae.main, ["--dataset", "digits", "--epochs", "2", "--out", "tb", "--tensorboard"]) == 0
    events = EventAccumulator("tb")
    events.Reload()
    tags = events.Tags()
    assert {"losses/reconstruction", "losses/discriminator", "charts/seconds"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("losses/reconstruction")] == [1, 2]
    assert "pictures/samples" in tags["images"] and "settings/text_summary" in tags["tensors"]
    log = Path("tb/log.csv").read_text().splitlines()
    assert float(log[2].split(",")[1]) == pytest.approx(events.Scalars("losses/reconstruction")[1].value, abs=1e-5)


def test_tensorboard_without_the_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert run_script(aae.main, ["--dataset", "digits", "--epochs", "1", "--out", "tb", "--tensorboard"]) == 2
    assert "error: --tensorboard needs the tensorboard package: pip install tensorboard" in capsys.readouterr().err
    assert not Path("tb").exists()
