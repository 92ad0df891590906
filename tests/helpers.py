"""What several test files share: a script's command line run in-process, the check that a few
hundred training steps on tiny data made progress, and the same check on a run folder's log.csv."""

import csv
from pathlib import Path

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
