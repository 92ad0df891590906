"""What a careless or hostile user can type, one row per case: every row ends with exit status 2
and one line `error: ...` on stderr that says what to do, no traceback, and nothing already
saved in the run folder changed. Then the run folder's lock (two runs on one --out), and the
other things a newcomer meets: a damaged dataset cache, a NaN in the first epoch, a full disk,
the Ctrl-C hint, and settings that must not drift."""

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aae
import ali
import common
import daae
import machinery
import eval as evaluation
import idaae
import learned_prior_aae
from helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"aae": aae.main, "ali": ali.main, "idaae": idaae.main, "learned_prior_aae": learned_prior_aae.main,
           "eval": evaluation.main}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch AAE run on digits, copied by the rows that need a saved run."""
    out = tmp_path_factory.mktemp("runs") / "aae-digits"
    assert run_script(aae.main, ["--epochs", "2", "--latent-dim", "4", "--out", str(out)]) == 0
    machinery.release_run_folder(out)
    return out


def fingerprint(folder):
    """Every file's bytes (hashed) under `folder`, the lock file aside: what a failed command must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != machinery.LOCK_FILE}


def save_npz(path, **changes):
    """A small valid .npz dataset (8x8 uint8 images, labels 0-9), with `changes` to some arrays."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (80, 8, 8), dtype=np.uint8), "y_train": rng.integers(0, 10, 80),
              "x_test": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), "y_test": rng.integers(0, 10, 20)}
    np.savez(path, **{**arrays, **changes})
    return path


def omniglot_folder(root, bad_name=None, bad_bytes=None):
    """A tiny Omniglot background set (one character, 20 drawers) with one bad file added."""
    character = root / "images_background" / "Alpha" / "character01"
    character.mkdir(parents=True)
    for drawer in range(1, 21):
        Image.new("L", (8, 8), 255).save(character / f"0101_{drawer:02d}.png")
    if bad_name:
        Image.new("L", (8, 8), 255).save(character / bad_name)
    if bad_bytes:
        (character / "0101_05.png").write_bytes(bad_bytes)
    return root


def setup_case(case, tmp, trained):
    """Make the files a row needs in `tmp`; returns (script, argv, the run folder that must stay intact or None)."""
    out = tmp / "run"
    npz = tmp / "data.npz"
    if case == "--out is a file":
        out.write_text("a file")
        return "aae", ["--out", str(out)], None
    if case == "--out under a file":
        (tmp / "file").write_text("a file")
        return "aae", ["--out", str(tmp / "file" / "run")], None
    if case == "--out read-only":
        out.mkdir()
        out.chmod(0o500)
        return "aae", ["--out", str(out)], None
    if case == "truncated .npz":
        npz.write_bytes(save_npz(tmp / "whole.npz").read_bytes()[:300])
        return "aae", ["--dataset", str(npz)], None
    if case == "corrupt .npz":
        data = bytearray(save_npz(tmp / "whole.npz").read_bytes())
        data[200:600] = bytes(400)  # zeros over the first member's data and the next header
        npz.write_bytes(bytes(data))
        return "aae", ["--dataset", str(npz)], None
    if case == ".npy renamed .npz":
        np.save(tmp / "array.npy", np.zeros((4, 8, 8)))
        (tmp / "array.npy").rename(npz)
        return "aae", ["--dataset", str(npz)], None
    if case == "text named .npz":
        npz.write_text("x_train,y_train\n1,2\n")
        return "aae", ["--dataset", str(npz)], None
    if case == ".npz of Python objects":
        np.savez(npz, x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.zeros(4, int),
                 x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.zeros(2, int))
        return "aae", ["--dataset", str(npz)], None
    if case == "folder named .npz":
        npz.mkdir()
        return "aae", ["--dataset", str(npz)], None
    if case == "folder as --dataset":
        (tmp / "images").mkdir()
        return "aae", ["--dataset", str(tmp / "images")], None
    if case == "NaN pixels":
        return "aae", ["--dataset", str(save_npz(npz, x_test=np.full((20, 8, 8), np.nan)))], None
    if case == "empty test split":
        return "aae", ["--dataset", str(save_npz(npz, x_test=np.zeros((0, 8, 8), np.uint8),
                                                 y_test=np.zeros(0, int)))], None
    if case == "label below -1":
        return "aae", ["--dataset", str(save_npz(npz, y_test=np.full(20, -5)))], None
    if case == "absurd label":
        return "aae", ["--dataset", str(save_npz(npz, y_test=np.full(20, 10**12)))], None
    if case == "huge --seed":
        return "aae", ["--seed", str(2**70)], None
    if case == "--sigma 1e30":
        return "aae", ["--sigma", "1e30"], None
    if case == "--latent-dim 1e9":
        return "aae", ["--latent-dim", "1000000000", "--out", str(out)], None
    if case == "--image-size 100000":
        return "aae", ["--image-size", "100000", "--out", str(out)], None
    if case == "--labels above the training set":
        return "aae", ["--prior", "mixture", "--labels", "100000", "--out", str(out)], None
    if case == "--M 100000000":
        return "idaae", ["--M", "100000000", "--out", str(out)], None
    if case == "--batch-size 1, ali":
        return "ali", ["--batch-size", "1", "--out", str(out)], None
    if case == "--batch-size 1, learned_prior_aae":
        return "learned_prior_aae", ["--batch-size", "1", "--out", str(out)], None
    if case == "corrupt Omniglot PNG":
        root = omniglot_folder(tmp / "omni", bad_bytes=b"\x89PNG\r\n\x1a\n broken")
        return "aae", ["--dataset", "omniglot", "--data-dir", str(root)], None
    if case == "Omniglot PNG badly named":
        root = omniglot_folder(tmp / "omni", bad_name="scan.png")
        return "aae", ["--dataset", "omniglot", "--data-dir", str(root)], None
    if case == "--device cuda without CUDA":
        return "aae", ["--device", "cuda"], None
    if case == "--data-dir that is a file":
        (tmp / "file").write_text("a file")
        return "aae", ["--dataset", "omniglot", "--data-dir", str(tmp / "file")], None
    # Rows on a copy of a saved run: it must come out byte for byte as it went in.
    shutil.copytree(trained, out)
    if case == "resume with fewer --epochs":
        return "aae", ["--resume", "--epochs", "1", "--out", str(out)], out
    if case == "a second run on a run folder":
        return "aae", ["--out", str(out)], out
    if case == "checkpoint that would run code":
        with open(out / "checkpoint.pt", "wb") as f:
            pickle.dump({"format": machinery.CHECKPOINT_FORMAT, "x": RunsCode(str(tmp / "pwned"))}, f, protocol=2)
        return "aae", ["--resume", "--out", str(out)], out
    if case == "eval --table that cannot be written":
        (tmp / "file").write_text("a file")
        return "eval", ["reconstruction", str(out), "--table", str(tmp / "file" / "table.md")], out
    if case == "eval --samples 10^12":
        return "eval", ["likelihood", str(out), "--samples", str(10**12)], out
    if case == "eval --max-train 1":
        return "eval", ["classification", str(out), "--max-train", "1"], None
    if case == "eval without a checkpoint":
        (out / "checkpoint.pt").unlink()
        return "eval", ["reconstruction", str(out)], out
    if case == "resume after config.json was edited":
        config = json.loads((out / "config.json").read_text())
        # As a resumed run in this folder would save it, but for the code size changed by hand.
        machinery.write_json(out / "config.json",
                          {**config, "latent_dim": 7, "out": str(out), "resume": True, "epochs": 3})
        return "aae", ["--resume", "--epochs", "3", "--out", str(out)], out
    if case == "config.json that is not a dict":
        (out / "config.json").write_text("[1, 2]")
        return "eval", ["reconstruction", str(out)], out
    if case == "eval, the dataset is gone":
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, "dataset": "omniglot", "data_dir": str(tmp / "none")}))
        return "eval", ["reconstruction", str(out)], out
    raise ValueError(case)


class RunsCode:
    """A pickle that would create a file when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


CASES = {  # case: words the error line must have
    "--out is a file": "is a file, not a folder",
    "--out under a file": "cannot write the run folder",
    "--out read-only": "cannot write the run folder",
    "truncated .npz": "damaged or truncated",
    "corrupt .npz": "damaged or truncated",
    ".npy renamed .npz": "single array (.npy)",
    "text named .npz": "is not a .npz file",
    ".npz of Python objects": "arrays of Python objects",
    "folder named .npz": "is a folder, not a .npz file",
    "folder as --dataset": "is a folder",
    "NaN pixels": "NaN or infinite pixels",
    "empty test split": "x_test in",
    "label below -1": "the label -5",
    "absurd label": "number the classes 0, 1, 2",
    "huge --seed": "--seed",
    "--sigma 1e30": "--sigma",
    "--latent-dim 1e9": "--latent-dim",
    "--image-size 100000": "--image-size",
    "--labels above the training set": "--labels 100000 is more than the",
    "--M 100000000": "--M",
    "--batch-size 1, ali": "batch normalisation",
    "--batch-size 1, learned_prior_aae": "batch normalisation",
    "corrupt Omniglot PNG": "cannot read",
    "Omniglot PNG badly named": "<id>_<drawer>.png",
    "--device cuda without CUDA": "no CUDA device",
    "resume with fewer --epochs": "--epochs 1 is fewer",
    "a second run on a run folder": "add --resume",
    "checkpoint that would run code": "could run as code; it was not loaded); delete it, or start a new run in another --out, without --resume",
    "eval --table that cannot be written": "--table",
    "eval --samples 10^12": "--samples",
    "eval --max-train 1": "give a larger --max-train",
    "eval without a checkpoint": "train it with aae.py",
    "--data-dir that is a file": "cannot load omniglot",
    "resume after config.json was edited": "does not fit the run",
    "config.json that is not a dict": "not the JSON of a run's settings",
    "eval, the dataset is gone": "or point eval.py's --data-dir at them",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_saved_changes(case, tmp_path, trained, capsys):
    if case == "--out read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    if case == "--device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    script, argv, saved = setup_case(case, tmp_path, trained)
    before = fingerprint(saved) if saved else None
    status = run_script(SCRIPTS[script], argv if script == "eval" else ["--epochs", "1", *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]  # the busy-CPU note may come first
    assert status == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (case, err)
    assert CASES[case] in lines[0], (case, lines[0])
    assert "allow_pickle" not in err and "weights_only" not in err  # numpy's and torch's unsafe advice
    if saved:
        assert fingerprint(saved) == before, case
    assert not (tmp_path / "pwned").exists()


def test_a_refused_run_leaves_no_empty_run_folder(tmp_path):
    (tmp_path / "data.npz").write_text("not numpy")
    assert run_script(aae.main, ["--dataset", "data.npz"]) == 2  # would have been runs/aae-npz-data
    assert not Path("runs").exists()
    (tmp_path / "runs").mkdir()
    assert run_script(aae.main, ["--dataset", "data.npz"]) == 2
    assert Path("runs").is_dir() and not any(Path("runs").iterdir())  # a folder that was there stays


@pytest.mark.parametrize("script, argv", [
    ("aae", ["--latent-dim", "1000000000"]),  # refused by the model's memory check, after the folder was prepared
    ("learned_prior_aae", ["--channels", "8"]),  # refused by the script's own flag check
])
def test_a_run_refused_after_its_folder_was_prepared_leaves_nothing(script, argv, tmp_path):
    assert run_script(SCRIPTS[script], argv) == 2
    assert not Path("runs").exists()


# ---------------------------------------------------------------------------------------------
# One process per run folder
# ---------------------------------------------------------------------------------------------


def start_a_run_that_holds(out):
    """`aae.py --epochs 3` into `out` in a process of its own, returned once its lock names it."""
    command = [sys.executable, str(ROOT / "aae.py"), "--epochs", "3", "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    try:
        while not (out / machinery.LOCK_FILE).is_file() or not (out / machinery.LOCK_FILE).read_text().strip():
            assert time.time() < deadline and first.poll() is None, "the first run did not start"
            time.sleep(0.05)
    except AssertionError:
        first.kill()
        raise
    return first


def test_a_second_run_on_a_busy_folder_is_refused_at_once_and_the_first_finishes(tmp_path):
    out = tmp_path / "run"
    first = start_a_run_that_holds(out)
    try:
        started = time.perf_counter()
        assert run_script(aae.main, ["--epochs", "1", "--out", str(out)]) == 2
        assert time.perf_counter() - started < 5  # refused at once, not after loading data
    finally:
        assert first.wait(timeout=120) == 0, first.stderr.read()
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_the_refusal_names_the_process_that_holds_the_folder(tmp_path, capsys):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    (out / machinery.LOCK_FILE).write_text("12345\n")
    holder = os.open(out, os.O_RDONLY)  # as another run holds it: the folder, locked
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert run_script(aae.main, ["--epochs", "1", "--out", str(out)]) == 2
    finally:
        os.close(holder)
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} is in use by another run (process 12345); wait for it to end, or choose another --out"
    assert run_script(aae.main, ["--epochs", "1", "--out", str(out)]) == 0  # the lock died with its holder


def test_without_locks_a_run_goes_on_unprotected(tmp_path, monkeypatch, capsys):
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)  # a file system that cannot lock
    assert run_script(aae.main, ["--epochs", "1", "--out", str(tmp_path / "nfs")]) == 0
    assert "cannot be locked on this file system" in capsys.readouterr().err
    monkeypatch.setattr(machinery, "fcntl", None)  # Windows
    assert run_script(aae.main, ["--epochs", "1", "--out", str(tmp_path / "windows")]) == 0


# ---------------------------------------------------------------------------------------------
# Nothing saved is lost; the messages say what is true
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(failure, trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "checkpoint.pt").read_bytes()

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    assert run_script(aae.main, ["--epochs", "3", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write {out / 'checkpoint.pt'}") and "kept" in err and "\n" not in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob(".checkpoint.pt.*"))  # no temporary file left behind


def test_a_nan_in_the_first_epoch_does_not_cite_a_checkpoint(tmp_path, monkeypatch, capsys):
    step = aae.train_step

    def nan_step(*args):
        return {**step(*args), "reconstruction": torch.tensor(float("nan"))}

    monkeypatch.setattr(aae, "train_step", nan_step)
    assert run_script(aae.main, ["--epochs", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "in epoch 1; no checkpoint had been saved yet" in err and not (tmp_path / "run/checkpoint.pt").exists()


@pytest.mark.parametrize("failure", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                                  "allocate memory: you tried to allocate 1099511627776 bytes.")])
def test_running_out_of_memory_mid_run_is_one_line_naming_the_flags(failure, tmp_path, monkeypatch, capsys):
    def step(*args):
        raise failure

    monkeypatch.setattr(aae, "train_step", step)
    assert run_script(aae.main, ["--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: out of memory (") and "--batch-size" in err and "\n" not in err


def test_a_damaged_dataset_cache_is_rebuilt_from_the_raw_files(tmp_path, capsys):
    root = omniglot_folder(tmp_path / "omni")
    (root / "cache").mkdir()
    (root / "cache" / "omniglot.pt").write_bytes(b"PK\x03\x04 half a file")
    data = common.load_dataset("omniglot", str(root))
    assert len(data.x_train) == 19 and "is damaged" in capsys.readouterr().err
    assert common.load_dataset("omniglot", str(root)).x_train.equal(data.x_train)  # the cache is whole again


def test_the_ctrl_c_hint_is_the_command_that_resumes(tmp_path, monkeypatch, capsys):
    step = aae.train_step

    def interrupted_step(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return step(*args)

    monkeypatch.setattr(aae, "train_step", interrupted_step)
    out = tmp_path / "my run"
    assert run_script(aae.main, ["--epochs", "2", "--out", str(out)]) == 130
    assert f"Resume with: python aae.py --out '{out}' --resume" in capsys.readouterr().err


def test_resume_with_as_many_epochs_as_done_trains_nothing_and_keeps_config_json(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = json.loads((out / "config.json").read_text())
    assert run_script(aae.main, ["--resume", "--epochs", "2", "--out", str(out)]) == 0
    assert "the run already has 2 epochs" in capsys.readouterr().out
    # config.json is the same but for the folder it now is in, and the resume flag
    assert json.loads((out / "config.json").read_text()) == {**before, "out": str(out), "resume": True}


def test_a_relative_npz_path_is_saved_absolute_and_eval_finds_it_from_elsewhere(tmp_path, monkeypatch, capsys):
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    save_npz(Path("data.npz"))
    assert run_script(aae.main, ["--dataset", "data.npz", "--epochs", "1", "--batch-size", "16"]) == 0
    assert "aae on data.npz (" in capsys.readouterr().out  # shown as given
    config = json.loads(Path("runs/aae-npz-data/config.json").read_text())
    assert config["dataset"] == str(tmp_path / "project" / "data.npz")
    monkeypatch.chdir(tmp_path)
    assert run_script(evaluation.main, ["reconstruction", "project/runs/aae-npz-data"]) == 0


def test_eval_says_when_a_run_is_unfinished(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "epochs": 5}))
    assert run_script(evaluation.main, ["reconstruction", str(out)]) == 0
    assert "unfinished: epoch 2 of 5" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["reconstruction"]["unfinished"] == "epoch 2 of 5"


def test_chain_steps_that_cannot_fit_are_refused_up_front():
    """A chain holds every step it takes: 10^12 steps of an 8x8 image are refused before sampling;
    a model without a chain ignores --steps, and the paper's settings pass."""
    daae_run = {"dataset": "digits", "image_shape": [1, 8, 8], "sample_steps": 10}
    with pytest.raises(machinery.CLIError, match="--steps"):
        evaluation.check_sample_memory(daae_run, None, [0, 10**12], torch.device("cpu"))
    evaluation.check_sample_memory({k: v for k, v in daae_run.items() if k != "sample_steps"}, None, [10**12],
                                    torch.device("cpu"))
    evaluation.check_sample_memory(daae_run, None, [0, 10], torch.device("cpu"))


def test_a_hand_edited_config_of_the_wrong_type_is_one_line_on_resume_and_in_eval(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "epochs": "ten"}))
    before = fingerprint(out)
    capsys.readouterr()
    assert run_script(aae.main, ["--resume", "--out", str(out)]) == 2
    assert run_script(evaluation.main, ["reconstruction", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all('epochs = "ten"' in line and "restore config.json" in line for line in err)
    assert fingerprint(out) == before


def test_resume_with_nothing_to_do_says_so_in_one_line_and_stops(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    capsys.readouterr()
    assert run_script(aae.main, ["--resume", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("nothing to do: the run already has")


def test_a_damaged_checkpoint_names_the_way_out_of_the_resume_loop(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run_script(aae.main, ["--resume", "--out", str(out)]) == 2
    assert "delete it, or start a new run in another --out, without --resume" in capsys.readouterr().err


def test_the_settings_printed_are_those_that_decide_the_result_with_the_device_resolved(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_script(aae.main, ["--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = printed[0]
    assert "device cpu" in header and f"run folder {out}" in header
    settings = {line.split()[0] for line in printed[1:] if line.startswith("  ")}
    assert {"lr", "epochs", "batch_size", "latent_dim", "seed", "precision"} <= settings
    assert not settings & {"out", "resume", "save_every", "device", "data_dir"}  # plumbing, not the paper's


def test_an_npz_file_named_mnist_gets_its_own_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_npz(Path("mnist.npz"))
    assert run_script(aae.main, ["--dataset", "mnist.npz", "--epochs", "1", "--batch-size", "16"]) == 0
    assert (tmp_path / "runs" / "aae-npz-mnist" / "checkpoint.pt").exists()
    assert not (tmp_path / "runs" / "aae-mnist").exists()  # the folder of --dataset mnist stays its own


@pytest.mark.parametrize("script, first, again, said", [
    (aae.main, ["--sigma", "0.3", "--seed", "3"], ["--sigma", "0", "--seed", "0"],
     ["ignoring --sigma 0.0: the resumed run keeps its saved 0.3", "ignoring --seed 0: the resumed run keeps its saved 3"]),
    (daae.main, ["--clip"], ["--no-clip"], ["ignoring --no-clip: the resumed run keeps its saved True"]),
    (aae.main, ["--supervised"], [], []),  # a store_true flag left out is not a flag given
])
def test_resume_says_it_ignores_a_flag_given_as_zero_or_false(script, first, again, said, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_script(script, ["--epochs", "1", "--latent-dim", "4", "--out", str(out), *first]) == 0
    saved = json.loads((out / "config.json").read_text())
    capsys.readouterr()
    assert run_script(script, ["--epochs", "2", "--out", str(out), "--resume", *again]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert sorted(warnings) == sorted(f"warning: {line}" for line in said)
    kept = json.loads((out / "config.json").read_text())
    assert {k: kept[k] for k in ("sigma", "seed", "clip", "supervised") if k in saved} == \
        {k: saved[k] for k in ("sigma", "seed", "clip", "supervised") if k in saved}


@pytest.mark.parametrize("broken", ["loss and weights", "weights alone"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_mid_epoch_after_a_nan_keeps_the_good_checkpoint(broken, stop, tmp_path, monkeypatch, capsys):
    steps, step = [], aae.train_step

    def going_bad(model, *args):
        steps.append(1)
        losses = step(model, *args)
        if len(steps) > 19 + 3:  # epoch 2 (19 steps an epoch), step 4 on: the loss and the update go bad
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
            if broken == "loss and weights":
                losses["reconstruction"] = torch.tensor(float("nan"))
        if len(steps) == 19 + 6:
            os.kill(os.getpid(), stop)  # stops after this step, before the epoch's own NaN check
        return losses

    monkeypatch.setattr(aae, "train_step", going_bad)
    out = tmp_path / "run"
    assert run_script(aae.main, ["--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "in epoch 2;" in err[0], err
    assert f"{out / 'checkpoint.pt'} keeps epoch 1" in err[0]
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in saved["model_state"].values() if t.is_floating_point())


def test_a_deleted_lock_file_does_not_let_a_second_run_into_a_busy_folder(tmp_path, capsys):
    out = tmp_path / "run"
    first = start_a_run_that_holds(out)
    try:
        (out / machinery.LOCK_FILE).unlink()  # "a stale lock", deleted by hand while the run trains
        assert run_script(aae.main, ["--epochs", "1", "--out", str(out)]) == 2
        assert run_script(aae.main, ["--epochs", "4", "--out", str(out), "--resume"]) == 2
        assert capsys.readouterr().err.count(f"error: {out} is in use by another run") == 2
    finally:
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 3
    assert json.loads((out / "config.json").read_text())["epochs"] == 3


def test_the_next_run_of_a_folder_removes_what_a_killed_write_left(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    left = [out / ".checkpoint.pt.k9x2_abc.tmp", out / ".config.json.q1.tmp", out / "samples" / ".epoch_002.png.z.tmp"]
    for path in left:
        path.write_bytes(b"\0" * 1000)  # what kill -9 during atomic_path's write leaves
    theirs = out / ".eval.json.e1.tmp"  # eval.py may be writing beside a training run: not the run's to delete
    theirs.write_text("{")
    assert run_script(aae.main, ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert not any(path.exists() for path in left) and theirs.exists()


def test_a_failed_checkpoint_write_names_the_systems_reason(tmp_path):
    """A real failed write (here the file-size limit, as a full disk without needing one): the
    reason the operating system gives, not torch's "[enforce fail at inline_container.cc] unexpected pos"."""
    script = f"""
import resource, signal, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import machinery
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    machinery.save_checkpoint({str(tmp_path / "checkpoint.pt")!r}, {{"weights": torch.zeros(1_000_000)}})
except machinery.CLIError as error:
    print(error)
"""
    said = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert said.returncode == 0, said.stderr
    assert "File too large" in said.stdout and "enforce fail" not in said.stdout, said.stdout
    assert "previous" in said.stdout and not list(tmp_path.glob(".checkpoint.pt.*"))


def test_a_dataset_cache_that_cannot_be_written_is_a_warning_and_a_killed_ones_leftover_goes(tmp_path, monkeypatch,
                                                                                            capsys):
    arrays = {"x_train": torch.zeros(4, 1, 2, 2), "y_train": torch.zeros(4), "x_test": torch.zeros(1, 1, 2, 2),
              "y_test": torch.zeros(1)}
    (tmp_path / "cache").mkdir()
    old, new = tmp_path / "cache" / ".mnist.pt.a1.tmp", tmp_path / "cache" / ".mnist.pt.b2.tmp"
    for path in (old, new):
        path.write_bytes(b"\0" * 1000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))  # killed two hours ago; `new` may be another's write

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    assert machinery.load_cached("mnist", str(tmp_path), lambda: arrays) is arrays
    err = capsys.readouterr().err
    assert "warning: mnist: not cached (cannot write" in err and "No space left on device" in err
    assert not old.exists() and new.exists() and not (tmp_path / "cache" / "mnist.pt").exists()


def test_a_checkpoint_saved_with_nan_weights_is_refused_by_eval_and_resume(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    next(iter(checkpoint["model_state"].values())).fill_(float("nan"))  # as a run saved before the guard could
    machinery.save_checkpoint(out / "checkpoint.pt", {k: v for k, v in checkpoint.items() if k != "format"})
    before = (out / "checkpoint.pt").read_bytes()
    assert run_script(evaluation.main, ["reconstruction", str(out)]) == 2
    assert run_script(aae.main, ["--epochs", "3", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("holds NaN or infinite weights (1 tensors)" in line for line in err), err
    assert (out / "checkpoint.pt").read_bytes() == before and not (out / "eval.json").exists()
