"""eval.json, the store of eval.py's results, defined once: its sections and per-item keys, how it
is read, how a study merges its entry under a lock, and how per-image results are packed. eval.py
writes it; compare.py reads it (and needs no model to). Also the markdown and the split names that
both print."""

import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import machinery
from machinery import CLIError

# eval.json's sections, one per study (a study's name on the command line, its entry in eval.json)
RECONSTRUCTION, CLASSIFICATION, LIKELIHOOD, QUALITY, MODES = (
    "reconstruction", "classification", "likelihood", "quality", "modes")

# Per-item results (one value per test image, test point or drawer), kept so that compare.py can pair
# two runs item by item without evaluating either again:
SQUARED_ERRORS = "squared_errors"  # reconstruction, modes: each test image's (point's) error, pack_numbers
SVM_RBF = "svm_rbf"  # classification: the RBF SVC on the codes; with suffixes the baselines:
SVM_BASELINES = ("svm_rbf_pixels", "svm_rbf_pixels_auto", "svm_rbf_pca", "svm_rbf_pca_auto")
CORRECT = "_correct"  # appended: right or wrong on each test image, pack_bits (svm_rbf_correct, ...)
LOO20 = "loo20_linear"  # classification, Omniglot's test (b): the linear SVMs on the codes; baselines:
LOO20_BASELINES = ("loo20_linear_pixels", "loo20_linear_pca")
EACH = "_each"  # appended: {drawer: accuracy} (loo20_linear_each, ...)
CLUSTER_CORRECT = "cluster_correct"  # classification, Section 6: the paper's rule, pack_bits
CLUSTER_MAJORITY_CORRECT = "cluster_majority_correct"  # and majority voting, pack_bits


def read_eval_json(run_dir):
    path = Path(run_dir) / "eval.json"
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except ValueError:
        results = None
    if not isinstance(results, dict):
        raise CLIError(f"{path} is not valid JSON of eval.py's results; delete it and evaluate again")
    return results


EVAL_LOCK = ".eval.lock"  # beside eval.json; not the training's .lock, so a run can be evaluated while it trains


def merge_results(run_dir, study_key, result):
    """RUN_DIR/eval.json with this study's entry replaced and the other studies' entries kept.
    Several eval.py processes may evaluate one run at once: the read, change and write are done
    under RUN_DIR/.eval.lock, so that no process writes over a study another one merged after
    its read; the write itself is atomic, so a reader never sees half a file."""
    with machinery.exclusive_lock(Path(run_dir) / EVAL_LOCK):
        machinery.remove_leftovers(run_dir, ("eval.json",))  # of a writer killed mid-write: none writes now
        results = read_eval_json(run_dir)
        results[study_key] = result
        machinery.write_json(Path(run_dir) / "eval.json", results)


# Each per-item list is one string: eval.json is written indented, one line per list element, and
# 10,000 elements would bury the results.


def pack_bits(correct):
    """[True, False, ...] -> "10...": one '0' or '1' character per test image, in the test split's order."""
    return "".join("1" if c else "0" for c in correct)


def unpack_bits(text):
    return np.array([c == "1" for c in text], dtype=bool)


def pack_numbers(values):
    """Numbers -> one string of them, to 6 significant digits, separated by spaces."""
    return " ".join(f"{float(v):.6g}" for v in values)


def unpack_numbers(text):
    return np.array(text.split(), dtype=float)


def stored(run, study, *keys):
    """run's eval.json entry study -> keys..., or None when it was not measured."""
    value = run.results.get(study)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


@dataclass
class EvaluatedRun:
    path: Path
    config: dict
    results: dict  # its eval.json
    stale: list = field(default_factory=list)  # a line for the studies measured before its checkpoint


def read_evaluated(run_dir):
    """A run folder's config.json and eval.json (compare reads nothing else), or one CLIError line.
    Studies older than the run's checkpoint are said on stderr (and kept in .stale)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CLIError(f"{run_dir} is not a folder: give run folders that eval.py has evaluated")
    config = machinery.read_config(path)
    results = read_eval_json(path)
    if not results:
        raise CLIError(f"{path} has no eval.json: evaluate it first (python eval.py all {path})")
    run = EvaluatedRun(path, config, results, stale_studies(path, results))
    for line in run.stale:
        print(f"warning: {line}", file=sys.stderr)
    return run


def stale_studies(path, results):
    """A line for each epoch at which eval.json's studies were measured, where the run's checkpoint
    has gone further since (resumed, or evaluated while it trained): those scores are of an earlier
    model. None for a run without a checkpoint (results/ stores none)."""
    now = machinery.checkpoint_progress(path)
    if now is None:
        return []
    measured = {}
    for study, result in results.items():
        if isinstance(result, dict) and isinstance(result.get("epoch"), int):
            step = re.search(r"step (\d+)", str(result.get("unfinished", "")))  # a mid-epoch checkpoint's
            at = (result["epoch"], int(step.group(1)) if step else 0)
            if at < now:
                measured.setdefault(at, []).append(study)

    def progress(epoch, step):
        return f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"

    return [f"{path}/eval.json: {', '.join(studies)} {'was' if len(studies) == 1 else 'were'} measured at "
            f"{progress(*at)}, but its checkpoint is now at {progress(*now)}: its scores are of the earlier "
            f"model; re-measure it: python eval.py all {path}" for at, studies in sorted(measured.items())]


def markdown(header, rows):
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


OMNIGLOT_SPLITS = {"test": "drawer 20", "evaluation": "evaluation set", "validation": "5 % of drawers 1-19"}


def split_name(config, split):
    """A split named by its images: Omniglot's test split is drawer 20 of the training characters
    (the paper's "testing" set), its evaluation set 20 alphabets never trained on."""
    return OMNIGLOT_SPLITS.get(split, split) if config["dataset"] == "omniglot" else split


def check_writable(path):
    """--table: a file that can be written (its folder exists or can be made), or one CLIError line."""
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"--table {path} is a folder; give a file name, e.g. {path / 'table.md'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise CLIError(f"--table {path} cannot be written ({error.strerror or error}); choose another file") from None


def write_table(path, text):
    with machinery.atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")
