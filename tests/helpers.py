"""What several test files share: a script's command line run in-process, the check that a few
hundred training steps on tiny data made progress, and the same check on a run folder's log.csv."""

import csv
from pathlib import Path

import numpy as np

import machinery


def run_script(main, argv):
    """Run `python <script>.py ARGV` in-process (machinery.cli around main(argv)); return its exit status."""
    try:
        machinery.cli(lambda: main(argv))
    except SystemExit as exit:
        return exit.code
    return 0


def run_eval(argv, capsys):
    """`python eval.py ARGV` in-process: (exit status, stdout, stderr)."""
    import eval as evaluation

    status = run_script(evaluation.main, argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_training_progresses(history):
    """history: the loss dicts of consecutive train_step calls. The reconstruction loss of the last
    16 steps is below 0.8 of the first 16's, and the discriminator neither collapsed nor ran away."""
    first = sum(h["reconstruction"] for h in history[:16]) / 16
    last = sum(h["reconstruction"] for h in history[-16:]) / 16
    assert last < 0.8 * first
    d_last = sum(h["discriminator"] for h in history[-16:]) / 16
    assert 0.3 < d_last < 2.5


def read_log(run_dir):
    """A run folder's log.csv: one dict per epoch, every value a float."""
    with open(Path(run_dir) / "log.csv", newline="") as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def assert_loss_falls(run_dir, key, factor=0.8):
    """The epoch mean of the loss `key` in a run's last epoch is below `factor` x its first epoch's."""
    log = read_log(run_dir)
    assert len(log) >= 2, f"{run_dir}/log.csv has {len(log)} epochs"
    assert log[-1][key] < factor * log[0][key], f"{key}: epoch 1 {log[0][key]}, epoch {len(log)} {log[-1][key]}"


def tiny_npz(path, n_train=80, n_test=7):
    """A .npz of random 8x8 uint8 images with labels 0-9, and a test split smaller than a row of pictures."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8), y_train=rng.integers(0, 10, n_train),
             x_test=rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8), y_test=rng.integers(0, 10, n_test))
    return path
