"""The statistics of eval.py's results: `python eval.py compare` (two groups of evaluated runs,
e.g. the DAAE's seeds against the AAE's, tested paired: McNemar, the bootstrap, t-tests) and
`python eval.py table` (the README's results table, rendered from the runs stored in results/).
Both read only the runs' config.json and eval.json (results.py): no model is loaded, nothing is
evaluated again."""

import json
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

import machinery
from machinery import CLIError
from results import (CLASSIFICATION, CLUSTER_CORRECT, CLUSTER_MAJORITY_CORRECT, CORRECT, EACH, LIKELIHOOD, LOO20,
                     LOO20_BASELINES, MODES, QUALITY, RECONSTRUCTION, SQUARED_ERRORS, SVM_BASELINES, SVM_RBF,
                     EvaluatedRun, check_writable, markdown, read_evaluated, split_name, stored, unpack_bits,
                     unpack_numbers, write_table)

# ---------------------------------------------------------------------------------------------
# compare: two groups of evaluated runs (e.g. the DAAE's seeds against the AAE's), paired tests
# on what eval.json holds; nothing is evaluated again
# ---------------------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the same intervals each time compare reads the same eval.json files
BOOTSTRAP_COUNTS = 2**22  # resample counts held at once (32 MB)


def mcnemar(a_correct, b_correct):
    """McNemar's exact test on paired right (1) / wrong (0) outcomes, arrays of any shape (every
    item of every pair pooled): of the discordant items, where one classifier is right and the
    other wrong, is A the right one as often as B? The two-sided binomial test of the count where
    only A is right among the discordant items, with probability 1/2 (scipy.stats.binomtest).
    Returns (only A right, only B right, p); p = 1 when no item is discordant."""
    a, b = np.asarray(a_correct, dtype=bool).ravel(), np.asarray(b_correct, dtype=bool).ravel()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def resample_counts(rng, n, resamples):
    """How often each of n items is drawn in each of `resamples` draws of n with replacement: a
    (resamples, n) array of counts."""
    drawn = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n)


def bootstrap_interval(differences, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """The 95 % percentile interval of the mean of `differences`, a (pairs, items) array, under a
    paired bootstrap: each resample draws the items with replacement, the same items for every
    pair (the pairs score the same test images or drawers), and the pairs with replacement, and
    takes the mean of the drawn differences."""
    d = np.atleast_2d(np.asarray(differences, dtype=float))
    pairs, items = d.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_COUNTS // items)
    means = []
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        item_counts, pair_counts = resample_counts(rng, items, n), resample_counts(rng, pairs, n)
        # The mean of the drawn differences from counts, not copies: each pair's sum over the
        # drawn items, weighted by how often the pair was drawn.
        means.append(((item_counts @ d.T) * pair_counts).sum(1) / (pairs * items))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high)


def paired_t(a, b):
    """The paired t-test of a against b (scipy.stats.ttest_rel): (p, (low, high)), the 95 % t
    interval of the mean of a - b; None with fewer than two pairs. Differences that are all equal
    have no spread to test: p is 1 if they are 0, else 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2:
        return None
    d = a - b
    if np.all(d == d[0]):
        return (1.0 if d[0] == 0 else 0.0), (float(d[0]), float(d[0]))
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(0.95)
    return float(test.pvalue), (float(interval.low), float(interval.high))


@dataclass
class Difference:
    """A - B on one measure: the two groups' means, the mean difference, its 95 % interval and p
    (None where there is no test), the test that gave p, and what was paired."""

    a: float
    b: float
    difference: float
    interval: tuple | None
    p: float | None
    test: str
    extent: str
    detail: str = ""


def p_text(p):
    """p to two significant digits; below 0.001 as "< 0.001", where smaller ones only say how sure."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def count(n, word):
    return f"{n:,} {word}" + ("s" if n != 1 else "")


def compare_correct(a, b, pair_word="pair"):
    """Two classifiers on the same test images: a and b are (pairs, images) arrays of right (1) and
    wrong (0). Accuracies and their difference in points; the interval by bootstrap_interval over
    the images and the pairs; p by McNemar's exact test on the discordant images of all pairs
    pooled (the detail gives each pair's own)."""
    a, b = np.atleast_2d(a).astype(float), np.atleast_2d(b).astype(float)
    accuracy_a, accuracy_b = 100 * float(a.mean()), 100 * float(b.mean())
    low, high = bootstrap_interval(a - b)
    each = ", ".join(p_text(mcnemar(a_i, b_i)[2]) for a_i, b_i in zip(a, b))
    return Difference(accuracy_a, accuracy_b, accuracy_a - accuracy_b, (100 * low, 100 * high), mcnemar(a, b)[2],
                      "McNemar", f"{count(len(a), pair_word)} x {count(a.shape[1], 'image')}",
                      f"McNemar p of each {pair_word}: {each}" if len(a) > 1 else "")


def compare_items(a, b, item_word, pair_word="pair"):
    """Per-item values of both groups on the same items (test images, drawers): a and b are
    (pairs, items) arrays. The mean difference; its interval by bootstrap_interval over the items
    and the pairs; p by the paired t-test over the items of their means over the pairs."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    tested = paired_t(a.mean(0), b.mean(0))
    return Difference(float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), bootstrap_interval(a - b),
                      tested[0] if tested else None, f"paired t over the {item_word}s",
                      f"{count(len(a), pair_word)} x {count(a.shape[1], item_word)}")


def compare_runs(a, b, pair_word="pair"):
    """One value per run (Parzen log-likelihood, FID, IS): a and b hold the pairs' values. The mean
    difference, with p and the interval of the paired t-test over the pairs; no test with one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    tested = paired_t(a, b)
    p, interval = tested if tested else (None, None)
    return Difference(float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), interval, p,
                      "paired t over the pairs", count(len(a), pair_word))


def check_same_data(runs):
    """compare pairs runs image by image: all of them trained and evaluated on one dataset at one
    image size (common.py fixes the splits), or one CLIError line. A .npz file counts by its name,
    so that runs made where it lay in another folder (results/, another machine) pair with yours."""
    def data(run):
        size = run.config.get("image_size")
        return machinery.dataset_tag(str(run.config.get("dataset"))) + (f" at {size} x {size}" if size else "")

    other = next((run for run in runs if data(run) != data(runs[0])), None)
    if other is not None:
        raise CLIError(f"compare needs runs of one dataset: {runs[0].path} is {data(runs[0])}, {other.path} "
                              f"is {data(other)}")


def pair_runs(a_runs, b_runs):
    """[(a, b)]: the two groups' runs paired by their training seed (config["seed"]) when both groups
    have the same seeds, each once; else in the order given. And a line that says which."""
    if len(a_runs) != len(b_runs):
        raise CLIError(f"compare pairs the two groups' runs, but there are {len(a_runs)} before --against "
                              f"and {len(b_runs)} after it; give as many in each")
    seeds_a, seeds_b = ([run.config.get("seed") for run in runs] for runs in (a_runs, b_runs))
    if None not in seeds_a + seeds_b and len(set(seeds_a)) == len(seeds_a) and sorted(seeds_a) == sorted(seeds_b):
        by_seed = {run.config["seed"]: run for run in b_runs}
        return [(a, by_seed[a.config["seed"]]) for a in a_runs], f"paired by seed: {', '.join(map(str, seeds_a))}"
    return list(zip(a_runs, b_runs)), (f"note: the groups' seeds differ ({', '.join(map(str, seeds_a))} and "
                                       f"{', '.join(map(str, seeds_b))}): runs paired in the order given")


def group_names(a_runs, b_runs):
    """The groups' labels: their model (config["model"]), with the corruption sigma when both are
    one model; "A" and "B" when that does not tell them apart."""
    def label(runs, with_sigma):
        models = {run.config.get("model") for run in runs}
        sigmas = {run.config.get("sigma") for run in runs}
        if len(models) > 1 or None in models or (with_sigma and (len(sigmas) > 1 or None in sigmas)):
            return None
        return models.pop() + (f" σ {sigmas.pop():g}" if with_sigma else "")

    names = [label(runs, False) for runs in (a_runs, b_runs)]
    if names[0] == names[1]:
        names = [label(runs, True) for runs in (a_runs, b_runs)]
    return names if None not in names and names[0] != names[1] else ["A", "B"]


def per_item_values(runs, study, key, unpack):
    """The (runs, items) array of every run's per-item results study -> key, unpacked; one CLIError
    line when a run lacks them (its eval.json is older than they are) or when the runs scored
    different numbers of items (not the same test split)."""
    values = []
    for run in runs:
        if stored(run, study, key) is None:
            raise CLIError(f"{run.path / 'eval.json'} has no {study} results per test image or drawer ({key}), "
                           f"which compare pairs: re-run `python eval.py {study} {run.path}` (or `all`)")
        values.append(unpack(stored(run, study, key)))
    counts = {len(v) for v in values}
    if len(counts) > 1:
        raise CLIError(f"the runs' {study} scored {' and '.join(map(str, sorted(counts)))} items: not the "
                              "same test split; evaluate them all with the same data and options")
    return np.stack(values)


def drawer_values(each):
    """loo20_linear_each ({drawer: accuracy}) as accuracies in the order of the drawers."""
    return np.array([each[k] for k in sorted(each, key=int)])


@dataclass
class Compared:
    """One row of compare's tables: its name, the measure (the name too, but for a baseline), the
    difference, and how to show it."""

    name: str
    measure: str
    difference: Difference
    digits: int = 2
    higher_is_better: bool = True
    percent: bool = False  # an accuracy, in points


def group_differences(pairs, config):
    """A - B on every measure every run of both groups has: ([Compared], notes on what was left
    out or differs)."""
    a_runs, b_runs = [a for a, _ in pairs], [b for _, b in pairs]
    runs, n = a_runs + b_runs, len(pairs)
    rows, notes = [], []

    def everyone_has(study, *keys):
        having = [run for run in runs if stored(run, study, *keys) is not None]
        if having and len(having) < len(runs):
            notes.append(f"note: {'/'.join((study, *keys))} is not in every eval.json (not in "
                         f"{', '.join(str(r.path) for r in runs if r not in having)}): left out")
        return len(having) == len(runs)

    def split(values):
        return values[:n], values[n:]

    drawers = everyone_has(CLASSIFICATION, LOO20)
    if everyone_has(CLASSIFICATION, SVM_RBF):
        a, b = split(per_item_values(runs, CLASSIFICATION, SVM_RBF + CORRECT, unpack_bits))
        measure = "test (a) accuracy" if drawers else "test accuracy"
        rows.append(Compared(f"{measure} (%)", measure, compare_correct(a, b), percent=True))
    if everyone_has(CLASSIFICATION, CLUSTER_CORRECT):  # Section 6: the paper's rule, then majority voting
        for key, measure in ((CLUSTER_CORRECT, "cluster accuracy, the paper's rule"),
                             (CLUSTER_MAJORITY_CORRECT, "cluster accuracy, majority vote")):
            a, b = split(per_item_values(runs, CLASSIFICATION, key, unpack_bits))
            rows.append(Compared(f"{measure} (%)", measure, compare_correct(a, b), percent=True))
    if drawers:
        a, b = split(100 * per_item_values(runs, CLASSIFICATION, LOO20 + EACH, drawer_values))
        rows.append(Compared("test (b) accuracy (%)", "test (b) accuracy", compare_items(a, b, "drawer"), percent=True))
    if everyone_has(RECONSTRUCTION, "mse"):
        a, b = split(per_item_values(runs, RECONSTRUCTION, SQUARED_ERRORS, unpack_numbers))
        rows.append(Compared("reconstruction MSE", "reconstruction MSE", compare_items(a, b, "image"), digits=5,
                             higher_is_better=False))
    if everyone_has(MODES, "modes_covered"):  # the toy datasets
        a, b = split([stored(run, MODES, "modes_covered") for run in runs])
        rows.append(Compared("modes covered", "modes covered", compare_runs(a, b), digits=1))
        a, b = split([stored(run, MODES, "modes_with_high_quality") for run in runs])
        rows.append(Compared("modes with a high-quality sample", "modes with a high-quality sample",
                             compare_runs(a, b), digits=1))
        a, b = split([100 * stored(run, MODES, "high_quality") for run in runs])
        rows.append(Compared("high-quality samples (%)", "high-quality samples", compare_runs(a, b), digits=1,
                             percent=True))
        a, b = split(per_item_values(runs, MODES, SQUARED_ERRORS, unpack_numbers))
        rows.append(Compared("reconstruction, squared distance", "reconstruction", compare_items(a, b, "point"),
                             digits=4, higher_is_better=False))
    for name in ("test", "evaluation"):
        if everyone_has(LIKELIHOOD, name, "mean"):
            a, b = split([stored(run, LIKELIHOOD, name, "mean") for run in runs])
            measure = f"Parzen LL, {split_name(config, name)}"
            rows.append(Compared(measure, measure, compare_runs(a, b), digits=1))
    if everyone_has(QUALITY, "fid"):
        if len({stored(run, QUALITY, "feature_network") for run in runs}) > 1:
            notes.append("note: FID and IS were measured by different feature networks: left out")
        else:
            for key, name, higher_is_better in (("fid", "FID", False), ("inception_score", "Inception Score", True)):
                a, b = split([stored(run, QUALITY, key) for run in runs])
                rows.append(Compared(name, name, compare_runs(a, b), higher_is_better=higher_is_better))
    if len({stored(run, RECONSTRUCTION, "sigma") for run in runs} - {None}) > 1:
        notes.append("note: each run's reconstruction study corrupts with its own training sigma, and these differ: "
                     "the MSEs measure different tasks")
    for study, key, flag in ((CLASSIFICATION, "train_images", "--max-train"), (LIKELIHOOD, "samples", "--samples"),
                             (QUALITY, "samples", "--samples")):
        if len({stored(run, study, key) for run in runs} - {None}) > 1:
            notes.append(f"note: the runs' {study} studies differ in {key} ({flag}): their difference includes that")
    return rows, notes


def baseline_differences(a_runs):
    """A's codes against the baselines on the same images, run by run: RBF SVCs on the raw pixels
    and on PCA of them, with today's gamma and the authors' (gamma auto), and test (b)'s linear
    SVMs on pixels and PCA. [Compared]."""
    rows = []
    drawers = all(stored(run, CLASSIFICATION, LOO20) is not None for run in a_runs)
    if all(stored(run, CLASSIFICATION, SVM_RBF) is not None for run in a_runs):
        measure = "test (a) accuracy" if drawers else "test accuracy"
        codes = per_item_values(a_runs, CLASSIFICATION, SVM_RBF + CORRECT, unpack_bits)
        for key, name in zip(SVM_BASELINES, ("pixels, gamma scale", "pixels, gamma auto", "PCA, gamma scale",
                                             "PCA, gamma auto")):
            baseline = per_item_values(a_runs, CLASSIFICATION, key + CORRECT, unpack_bits)
            rows.append(Compared(name, measure, compare_correct(codes, baseline, "run"), percent=True))
    if drawers:
        codes = 100 * per_item_values(a_runs, CLASSIFICATION, LOO20 + EACH, drawer_values)
        for key, name in zip(LOO20_BASELINES, ("pixels, test (b)", "PCA, test (b)")):
            baseline = 100 * per_item_values(a_runs, CLASSIFICATION, key + EACH, drawer_values)
            difference = compare_items(codes, baseline, "drawer", "run")
            rows.append(Compared(name, "test (b) accuracy", difference, percent=True))
    return rows


def verdict(row, a_name, b_name):
    """The table's word on a difference: who is better when its 95 % interval excludes 0."""
    if row.difference.interval is None:
        return "one seed: no test"
    low, high = row.difference.interval
    if low <= 0 <= high:
        return "within noise"
    return f"{a_name if (low > 0) == row.higher_is_better else b_name} better"


def difference_table(rows, columns, winners):
    """rows ([Compared]) as markdown under `columns` (what was measured, A, B, A − B: A's and B's
    means and their difference), then the 95 % interval, p and the verdict, which names `winners`
    (A's and B's)."""
    body = []
    for row in rows:
        d, digits = row.difference, row.digits
        interval = "–" if d.interval is None else f"{d.interval[0]:+.{digits}f} to {d.interval[1]:+.{digits}f}"
        body.append([row.name, f"{d.a:.{digits}f}", f"{d.b:.{digits}f}",
                     f"{d.difference:+.{digits}f}", interval, "–" if d.p is None else p_text(d.p),
                     verdict(row, *winners)])
    return markdown([*columns, "95 % interval", "p", "verdict"], body)


def sentence(row, subject):
    """A difference in words, as a markdown list item wrapped at 100 columns: its size, interval
    and test, and whether it is larger than its uncertainty (its 95 % interval excludes 0)."""
    d, digits = row.difference, row.digits
    said = f"{subject} on {row.measure}: {d.difference:+.{digits}f}{' points' if row.percent else ''}"
    if d.interval is None:
        said += f" ({d.extent}): one seed: no test."
    else:
        low, high = d.interval
        size = "within its uncertainty" if low <= 0 <= high else "larger than its uncertainty"
        tested = ""
        if d.p is not None:
            tested = f", {d.test} p " + (p_text(d.p) if d.p < 0.001 else f"= {p_text(d.p)}")
        if d.detail:
            tested += f"; {d.detail}"
        said += f", 95 % interval {low:+.{digits}f} to {high:+.{digits}f} ({d.extent}{tested}): {size}."
    return textwrap.fill(said, 100, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)


def compare(a_dirs, b_dirs, names=None):
    """compare's report, markdown: how the runs were paired, notes, the table of A - B on every
    measure both groups have with a sentence for each, and the table of A's codes against the
    pixel and PCA baselines on the same images."""
    a_runs, b_runs = [read_evaluated(d) for d in a_dirs], [read_evaluated(d) for d in b_dirs]
    check_same_data(a_runs + b_runs)
    pairs, pairing = pair_runs(a_runs, b_runs)
    a_name, b_name = names or group_names(a_runs, b_runs)
    rows, notes = group_differences(pairs, a_runs[0].config)
    baselines = baseline_differences(a_runs)
    if not rows and not baselines:
        raise CLIError("the two groups' eval.json files have no measure in common: evaluate both with the "
                              "same studies (python eval.py all RUN_DIR ...)")
    lines = [pairing, *notes, *(f"note: {line}" for run in a_runs + b_runs for line in run.stale)]
    if rows:
        columns = ["measure", a_name, b_name, f"{a_name} − {b_name}"]
        lines += ["", f"## {a_name} vs {b_name}", "", difference_table(rows, columns, (a_name, b_name)), "",
                  *(sentence(row, f"{a_name} − {b_name}") for row in rows)]
    if baselines:
        lines += ["", f"## {a_name}'s codes vs the baselines on the same images", "",
                  difference_table(baselines, ["baseline (accuracy, %)", f"{a_name} codes", "baseline",
                                               "codes − baseline"], ("codes", "baseline")), "",
                  textwrap.fill("gamma scale: 1 / (dims x the features' variance), today's SVC() default; gamma "
                                "auto: 1 / dims, the default of the authors' scikit-learn 0.18.", 100), "",
                  *(sentence(row, f"{a_name} codes − baseline ({row.name})") for row in baselines)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The results tables: the README's, rendered from the runs stored in results/, and eval.py's of runs side by side
# ---------------------------------------------------------------------------------------------

RESULTS_COLUMNS = ["result", "paper", "this project", "data, budget, seeds", "command"]


def stored_cell(runs, spec):
    """mean ± sd over the runs of one stored figure (eval.json's spec["study"] / spec["key"] path)."""
    values = [stored(run, spec["study"], *spec["key"]) for run in runs]
    if None in values:
        missing = runs[values.index(None)].path
        raise CLIError(f"{missing}/eval.json has no {'/'.join([spec['study'], *spec['key']])}: evaluate it "
                              f"(python eval.py all {missing})")
    values = np.array(values, dtype=float) * spec.get("scale", 1)
    digits = spec.get("digits", 2)
    spread = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{values.mean():.{digits}f}{spread}{spec.get('unit', '')}"


def at_chain_step(run, step):
    """run as if its samples were the chain's after `step` steps: its eval.json's Parzen LL (test
    split), FID and IS at that step in place of the plain samples', and no other study."""
    quality, likelihood = stored(run, QUALITY, "steps", str(step)), stored(run, LIKELIHOOD, "steps", str(step))
    if quality is None and likelihood is None:
        raise CLIError(f"{run.path}/eval.json has no scores after {step} chain steps: evaluate it with them "
                       f"(python eval.py all {run.path} --steps {step})")
    results = {}
    if quality is not None:
        results[QUALITY] = {"feature_network": stored(run, QUALITY, "feature_network"), **quality}
    if likelihood is not None:
        results[LIKELIHOOD] = {"test": likelihood}
    return EvaluatedRun(run.path, run.config, results, run.stale)


def difference_cell(runs, spec, folder):
    """A paired difference, as `compare` computes it: the runs against spec["against"] (or, with
    spec["baseline"], against a baseline on the same images), on spec["measure"]; with spec["steps"]
    ([t, u]), the runs' chain samples after t steps against the against-runs' after u."""
    if "against" in spec:
        against = [read_evaluated(folder / name) for name in spec["against"]]
        if "steps" in spec:  # a DAAE's chain against itself: its samples after t steps against after u
            t, u = spec["steps"]
            runs, against = [at_chain_step(run, t) for run in runs], [at_chain_step(run, u) for run in against]
        pairs, _ = pair_runs(runs, against)
        rows, _ = group_differences(pairs, runs[0].config)
    else:
        rows = baseline_differences(runs)
    name = spec.get("baseline", spec["measure"])
    row = next((row for row in rows if row.name == name), None)
    if row is None:
        raise CLIError(f"{folder}/table.json asks for {name!r}, which compare does not measure for "
                              f"{', '.join(spec['runs'])}")
    d, digits = row.difference, spec.get("digits", row.digits)
    unit = " points" if row.percent else ""
    if d.interval is None:
        return f"{d.difference:+.{digits}f}{unit} (one seed)"
    return f"{d.difference:+.{digits}f}{unit}, 95 % {d.interval[0]:+.{digits}f} to {d.interval[1]:+.{digits}f}"


def results_table(folder):
    """The markdown table of FOLDER/table.json's rows, each figure computed from the eval.json of
    the runs stored under FOLDER: a stored figure as mean ± sd over its runs, a difference paired
    by seed and by image as `compare` reports it; a row without runs gives its "measured" text (the
    benchmark's) or says it is not re-measured."""
    folder = Path(folder)
    try:
        specs = json.loads((folder / "table.json").read_text())
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read {folder / 'table.json'} ({machinery.first_line(error, 80)}): give the "
                              "results folder (results)") from None
    body = []
    for spec in specs:
        if "runs" not in spec:  # a script's measurement (the benchmark's), or an earlier version's figure
            figure = spec.get("measured") or f"not re-measured ([earlier figure]({spec['docs']}))"
            body.append([spec["result"], spec["paper"], figure, spec["budget"], spec["command"]])
            continue
        runs = [read_evaluated(folder / name) for name in spec["runs"]]
        cell = stored_cell(runs, spec) if "key" in spec else difference_cell(runs, spec, folder)
        body.append([spec["result"], spec["paper"], cell, spec["budget"], spec["command"]])
    return markdown(RESULTS_COLUMNS, body)


def comparison_table(runs, results, sigmas):
    """eval.py's table of several runs side by side (runs: with .name and .config; results: their
    studies' results by name; sigmas: each one's corruption sigma), one row per measurement of the
    studies run (the paper's tables, transposed)."""
    def plus_minus(entry, key, digits):
        return f"{entry[key]:.{digits}f} ± {entry['se']:.{digits}f}"

    config = runs[0].config if len({r.config["dataset"] for r in runs}) == 1 else {"dataset": None}
    columns = {"run": lambda r: r.name, "model": lambda r: r.config["model"],
               "sigma": lambda r: f"{sigmas[r.name]:g}"}
    studies = set().union(*(results[r.name] for r in runs))
    if "modes" in studies:
        def coverage(entry, total):
            return (f"{entry['modes_covered']} of {total}, {entry['high_quality']:.1%} high-quality in "
                    f"{entry['modes_with_high_quality']}")

        columns["samples: modes covered"] = lambda r: coverage(results[r.name]["modes"], results[r.name]["modes"]["modes"])
        steps = sorted({int(t) for r in runs for t in results[r.name].get("modes", {}).get("steps", {})})
        for t in steps:
            columns[f"after {t} chain steps"] = lambda r, t=t: coverage(results[r.name]["modes"]["steps"][str(t)],
                                                                         results[r.name]["modes"]["modes"])
        columns["reconstruction (squared distance)"] = lambda r: (
            f"{results[r.name]['modes']['reconstruction']:.4f} ± {results[r.name]['modes']['reconstruction_se']:.4f}")
    if "reconstruction" in studies:
        columns["reconstruction MSE"] = lambda r: plus_minus(results[r.name]["reconstruction"], "mse", 4)
    if "classification" in studies:
        for key, title in (("svm_rbf", "SVC codes"), ("svm_rbf_pixels", "SVC pixels"),
                           ("svm_rbf_pixels_auto", "SVC pixels (gamma auto)"), ("svm_rbf_pca", "SVC PCA"),
                           ("svm_rbf_pca_auto", "SVC PCA (gamma auto)"),
                           ("loo20_linear", "LOO-20 codes (mean)"), ("loo20_linear_max", "LOO-20 codes (max)"),
                           ("loo20_linear_pixels", "LOO-20 pixels"), ("loo20_linear_pca", "LOO-20 PCA"),
                           ("attributes_linear", "attributes (mean)"), ("semi_supervised_error", "q(y|x) error"),
                           ("nn_baseline_error", "NN baseline error"), ("svm_pixels_error", "SVC pixels error"),
                           ("cluster_error", "cluster error")):
            if any(key in results[r.name].get("classification", {}) for r in runs):
                columns[title] = lambda r, key=key: f"{results[r.name]['classification'][key]:.2%}"
    if "likelihood" in studies:
        for split in ("test", "evaluation"):
            if any(split in results[r.name].get("likelihood", {}) for r in runs):
                columns[f"Parzen LL {split_name(config, split)}"] = lambda r, split=split: plus_minus(
                    results[r.name]["likelihood"][split], "mean", 1)
        steps = sorted({int(t) for r in runs for t in results[r.name].get("likelihood", {}).get("steps", {})})
        for t in steps:
            columns[f"LL after {t} chain steps"] = lambda r, t=t: plus_minus(
                results[r.name]["likelihood"]["steps"][str(t)], "mean", 1)
    if "quality" in studies:
        networks = {results[r.name]["quality"]["feature_network"] for r in runs if "quality" in results[r.name]}
        if len(networks) > 1:  # FIDs and ISs of two feature networks cannot be compared
            columns["feature network"] = lambda r: results[r.name]["quality"]["feature_network"]

        def fid_and_is(scores):
            return f"{scores['fid']:.2f}", f"{scores['inception_score']:.2f} ± {scores['inception_score_std']:.2f}"

        columns["FID"] = lambda r: fid_and_is(results[r.name]["quality"])[0]
        columns["IS ± sd"] = lambda r: fid_and_is(results[r.name]["quality"])[1]
        steps = sorted({int(t) for r in runs for t in results[r.name].get("quality", {}).get("steps", {})})
        for t in steps:
            for i, title in enumerate(("FID", "IS")):
                columns[f"{title} after {t} chain steps"] = lambda r, t=t, i=i: fid_and_is(
                    results[r.name]["quality"]["steps"][str(t)])[i]

    def cell(column, run):
        try:
            return column(run)
        except KeyError:
            return "–"

    # A row per measure and a column per run: a terminal holds a few runs side by side, not 16 measures
    return markdown(["measure", *(run.name for run in runs)],
                    [[title, *(cell(column, run) for run in runs)] for title, column in columns.items() if title != "run"])


def compare_command(args):
    """eval.py compare A1 A2 ... --against B1 B2 ...: compare's report, printed and written to --table."""
    if not args.against:
        raise CLIError("compare needs a second group of run folders: eval.py compare A1 A2 ... --against "
                              "B1 B2 ...")
    if args.names and args.names[0] == args.names[1]:
        raise CLIError(f"--names {args.names[0]} {args.names[1]}: give the two groups different names")
    if args.table:
        check_writable(args.table)
    report = compare(args.runs, args.against, args.names)
    print(report)
    if args.table:
        write_table(args.table, report)
        print(f"\ncomparison written to {args.table}")

def table_command(args):
    """eval.py table FOLDER: the results table of FOLDER/table.json, printed and written to --table."""
    table = results_table(args.runs[0])
    print(table)
    if args.table:
        write_table(args.table, table)


# ---------------------------------------------------------------------------------------------
# A re-run against the stored runs (sweep.py's check)
# ---------------------------------------------------------------------------------------------


def same_spread(old, new):
    """A figure over seeds, stored (old) and re-run (new): identical; the same when the means
    differ by at most twice the standard error of their difference, sqrt(sd_old^2 / n_old +
    sd_new^2 / n_new), about a 95 % test; else differs. A figure without spread must be equal."""
    if list(old) == list(new):
        return "identical"
    (m_old, s_old), (m_new, s_new) = ((np.mean(v), np.std(v, ddof=1) if len(v) > 1 else 0.0) for v in (old, new))
    margin = 2 * math.sqrt(s_old ** 2 / len(old) + s_new ** 2 / len(new))
    return "same" if abs(m_new - m_old) <= margin and margin > 0 else "differs"


def same_interval(old_cell, new_cell):
    """A paired difference as the table shows it ("+0.6 points, 95 % -0.6 to +1.8"), stored and
    re-run: identical; the same when each 95 % interval holds the other's difference; else differs."""
    if old_cell == new_cell:
        return "identical"
    old, new = ([float(n) for n in re.findall(r"[-+]?\d+(?:\.\d+)?", cell.replace("−", "-").replace("95 %", ""))]
                for cell in (old_cell, new_cell))
    if "95 %" not in old_cell + new_cell or len(old) < 3 or len(new) < 3:
        return "differs"
    return "same" if old[-2] <= new[0] <= old[-1] and new[-2] <= old[0] <= new[-1] else "differs"
