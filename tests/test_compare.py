"""eval.py compare and what it reads: the paired statistics on hand-made results whose answer is
known, the pairing of runs by seed, the per-image results a tiny classify and reconstruct run
writes, the command line end to end on hand-made run folders (compare reads only config.json and
eval.json), its one-line refusals, and eval.json kept whole by processes merging at once."""

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import aae
import compare
import eval as evaluation
import machinery
import results
from helpers import run_eval as run_cli

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# The statistics, on hand-made per-item values
# ---------------------------------------------------------------------------------------------


def test_identical_predictions_differ_by_nothing():
    correct = RNG.random((3, 200)) < 0.7
    assert compare.mcnemar(correct, correct) == (0, 0, 1.0)
    same = compare.compare_correct(correct, correct)
    assert same.difference == 0 and same.interval == (0, 0) and same.p == 1.0
    assert same.a == same.b == pytest.approx(100 * correct.mean())


def test_right_where_the_other_is_wrong_on_k_images():
    """A right on k images per pair where B is wrong, and the same elsewhere: A - B = k / n, and
    McNemar's p is that of k discordant images per pair, all A's."""
    pairs, n, k = 3, 200, 12
    b = RNG.random((pairs, n)) < 0.6
    b[:, :k] = False
    a = b.copy()
    a[:, :k] = True
    assert compare.mcnemar(a[0], b[0]) == (k, 0, pytest.approx(2 * 0.5**k))
    result = compare.compare_correct(a, b)
    assert result.difference == pytest.approx(100 * k / n)
    assert result.p == pytest.approx(2 * 0.5 ** (pairs * k)) and result.p < 1e-9
    low, high = result.interval
    assert 0 < low <= 100 * k / n <= high
    assert result.extent == "3 pairs x 200 images" and result.detail.count(",") == pairs - 1


def test_mcnemar_is_two_sided_on_the_discordant_images_only():
    a = np.array([1] * 7 + [0] * 3 + [1] * 50 + [0] * 40, bool)  # 7 only A, 3 only B, 90 concordant
    b = np.array([0] * 7 + [1] * 3 + [1] * 50 + [0] * 40, bool)
    assert compare.mcnemar(a, b) == (7, 3, pytest.approx(stats.binomtest(7, 10).pvalue))
    assert compare.mcnemar(a, b)[2] == pytest.approx(0.34375) == compare.mcnemar(b, a)[2]


def test_bootstrap_draws_the_same_images_for_every_pair_and_draws_the_pairs():
    """bootstrap_interval (counts, in chunks) against the plain resampling it stands for: the same
    draws of images for every pair, pairs drawn too."""
    d = RNG.normal(size=(3, 40))
    low, high = compare.bootstrap_interval(d, resamples=300, seed=5)
    rng = np.random.default_rng(5)
    items, pairs = rng.integers(0, 40, (300, 40)), rng.integers(0, 3, (300, 3))
    means = [d[np.ix_(p, i)].mean() for p, i in zip(pairs, items)]
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert compare.bootstrap_interval(d, resamples=300, seed=5) == (low, high)  # a fixed seed
    # Pairs that disagree as a whole: only drawing the pairs can widen the interval.
    assert compare.bootstrap_interval(np.array([[1.0] * 50, [-1.0] * 50])) == pytest.approx((-1, 1))


def test_reconstruction_errors_with_a_known_shift():
    b = RNG.gamma(2, 0.01, (2, 500))
    a = b - 0.004 + RNG.normal(0, 0.001, b.shape)
    result = compare.compare_items(a, b, "image")
    assert result.difference == pytest.approx(-0.004, abs=2e-4)
    low, high = result.interval
    assert low < -0.004 < high < 0 and result.p < 1e-10
    same = compare.compare_items(b, b, "image")
    assert same.difference == 0 and same.interval == (0, 0) and same.p == 1.0


def test_per_run_measures_need_two_pairs():
    result = compare.compare_runs([10.0, 12.0, 11.0], [8.0, 9.5, 9.0])
    test = stats.ttest_rel([10.0, 12.0, 11.0], [8.0, 9.5, 9.0])
    assert result.difference == pytest.approx(2.1666667) and result.p == pytest.approx(test.pvalue)
    assert result.interval == pytest.approx(tuple(test.confidence_interval()))
    one = compare.compare_runs([10.0], [8.0])
    assert one.difference == 2 and one.p is None and one.interval is None
    assert compare.paired_t([1.0, 2.0], [1.0, 2.0]) == (1.0, (0.0, 0.0))


# ---------------------------------------------------------------------------------------------
# Hand-made run folders: config.json and eval.json are all compare reads
# ---------------------------------------------------------------------------------------------


def make_run(folder, model, seed, correct, errors, parzen, fid, dataset="digits", sigma=0.5, drawers=None):
    """A run folder with a config.json and an eval.json holding every study compare reads; with
    `drawers` (the codes' accuracy on each drawer), test (b) too, the pixels 0.5 on every drawer."""
    folder.mkdir(parents=True)
    config = {"model": model, "seed": seed, "dataset": dataset, "image_size": None, "sigma": sigma}
    (folder / "config.json").write_text(json.dumps(config))
    correct, everywhere = np.asarray(correct, bool), "1" * len(correct)
    classification = {"svm_rbf": correct.mean(), "svm_rbf_correct": results.pack_bits(correct),
                      "test_images": len(correct), "train_images": 1000}
    for key in ("svm_rbf_pixels", "svm_rbf_pixels_auto", "svm_rbf_pca", "svm_rbf_pca_auto"):
        classification.update({key: 1.0, f"{key}_correct": everywhere})
    if drawers is not None:
        for key, values in (("loo20_linear", drawers), ("loo20_linear_pixels", [0.5] * len(drawers)),
                            ("loo20_linear_pca", [0.5] * len(drawers))):
            classification.update({key: np.mean(values), f"{key}_each": {str(d + 1): v for d, v in enumerate(values)}})
    stored = {"classification": classification,
               "reconstruction": {"mse": float(np.mean(errors)), "squared_errors": results.pack_numbers(errors)},
               "likelihood": {"samples": 100, "test": {"mean": parzen}},
               "quality": {"samples": 100, "feature_network": "digits classifier", "fid": fid, "inception_score": 5.0}}
    (folder / "eval.json").write_text(json.dumps(stored))
    return str(folder)


N_IMAGES = 100


@pytest.fixture
def groups(tmp_path):
    """Two daae and two aae runs on 100 images, the aae's given in another order of seeds: each
    aae right on 50 images, each daae on those and 10 more, and the aae's errors 0.01 above."""
    base = np.arange(N_IMAGES) % 2 == 0
    errors = RNG.gamma(2, 0.01, N_IMAGES)
    better = base | (np.arange(N_IMAGES) < 20)
    daae = [make_run(tmp_path / f"daae-{s}", "daae", s, better, errors, -100.0 + s, 20.0 + s) for s in (1, 2)]
    aae = [make_run(tmp_path / f"aae-{s}", "aae", s, base, errors + 0.01, -110.0 + 3 * s, 25.0 - s) for s in (2, 1)]
    return daae, aae


def test_compare_end_to_end_on_hand_made_runs(groups, tmp_path, capsys):
    daae, aae = groups
    table = tmp_path / "compare.md"
    status, out, err = run_cli(["compare", *daae, "--against", *aae, "--table", str(table)], capsys)
    assert status == 0, err
    assert out.startswith("paired by seed: 1, 2")
    assert table.read_text() in out
    lines = out.splitlines()
    assert "| measure | daae | aae | daae − aae | 95 % interval | p | verdict |" in lines
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows["test accuracy (%)"][3] == "+10.00" and rows["test accuracy (%)"][6] == "daae better |"
    assert rows["test accuracy (%)"][5] == "< 0.001"  # 20 discordant images, all the daae's: 2 x 0.5^20
    assert rows["reconstruction MSE"][3] == "-0.01000" and rows["reconstruction MSE"][6] == "daae better |"
    assert rows["Parzen LL, test"][1:4] == ["-98.5", "-105.5", "+7.0"]  # seed 1: +8, seed 2: +6
    assert rows["FID"][3] == "-2.00" and rows["FID"][5] == f"{stats.ttest_rel([21, 22], [24, 23]).pvalue:.2g}"
    assert rows["Inception Score"][3] == "+0.00"  # the same in every run: p 1, within noise
    assert rows["Inception Score"][5:] == ["1", "within noise |"]
    assert rows["pixels, gamma auto"][1:4] == ["60.00", "100.00", "-40.00"]
    said = " ".join(out.split())  # the sentences, unwrapped
    assert "daae − aae on test accuracy: +10.00 points, 95 % interval" in said
    assert "(2 pairs x 100 images, McNemar p < 0.001; McNemar p of each pair: 0.002, 0.002)" in said
    assert "larger than its uncertainty" in said and "gamma auto: 1 / dims" in said
    assert max(len(line) for line in lines) <= 100  # a 100-column terminal


def test_omniglot_test_b_is_paired_drawer_by_drawer(tmp_path, capsys):
    """Each daae drawer 0.1 above its aae, give or take 0.02: test (b) differs by 10 points, tested by
    a paired t-test over the 20 drawers; the codes against the pixels (0.5 on every drawer) too."""
    aae_drawers = RNG.uniform(0.6, 0.8, (2, 20))
    daae_drawers = aae_drawers + 0.1 + RNG.uniform(-0.02, 0.02, (2, 20))
    correct, errors = np.ones(30, bool), np.full(30, 0.03)
    daae = [make_run(tmp_path / f"daae-{s}", "daae", s, correct, errors, 0.0, 0.0, "omniglot", drawers=list(d))
            for s, d in enumerate(daae_drawers)]
    aae = [make_run(tmp_path / f"aae-{s}", "aae", s, correct, errors, 0.0, 0.0, "omniglot", drawers=list(d))
           for s, d in enumerate(aae_drawers)]
    status, out, err = run_cli(["compare", *daae, "--against", *aae], capsys)
    assert status == 0, err
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    expected = stats.ttest_rel(100 * daae_drawers.mean(0), 100 * aae_drawers.mean(0)).pvalue
    assert float(rows["test (b) accuracy (%)"][3]) == pytest.approx(10, abs=0.5)
    assert expected < 0.001 and rows["test (b) accuracy (%)"][5:] == ["< 0.001", "daae better |"]
    assert "test (a) accuracy (%)" in rows and "Parzen LL, drawer 20" in rows  # Omniglot's names for its splits
    assert rows["pixels, test (b)"][3] == f"{100 * daae_drawers.mean() - 50:+.2f}"
    assert "(2 pairs x 20 drawers, paired t over the drawers p < 0.001)" in " ".join(out.split())


def test_clustering_runs_are_paired_image_by_image_by_both_rules(tmp_path, capsys):
    """Section 6's clustering scored per test image: one setting right by the paper's rule on 15
    images more than the other in each of three seeds, equal by majority vote."""
    def run(name, seed, paper, majority):
        folder = tmp_path / f"{name}-{seed}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model": "semi_supervised_aae", "seed": seed,
                                                        "dataset": "mnist10k.npz", "image_size": None}))
        classification = {"cluster_error": 1 - paper.mean(), "cluster_correct": results.pack_bits(paper),
                          "cluster_error_majority": 1 - majority.mean(),
                          "cluster_majority_correct": results.pack_bits(majority)}
        (folder / "eval.json").write_text(json.dumps({"classification": classification}))
        return str(folder)

    base = RNG.random((3, N_IMAGES)) < 0.5
    base[:, :15] = False
    better = base.copy()
    better[:, :15] = True
    a = [run("a", s, better[s], base[s]) for s in range(3)]
    b = [run("b", s, base[s], base[s]) for s in range(3)]
    status, out, err = run_cli(["compare", *a, "--against", *b], capsys)
    assert status == 0, err
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    paper, majority = rows["cluster accuracy, the paper's rule (%)"], rows["cluster accuracy, majority vote (%)"]
    assert paper[3] == "+15.00" and paper[5] == "< 0.001" and paper[6] == "A better |"
    assert majority[3] == "+0.00" and majority[6] == "within noise |"


def test_runs_are_paired_by_seed_else_in_order(tmp_path):
    def runs(model, seeds):
        return [results.EvaluatedRun(tmp_path / f"{model}-{s}", {"model": model, "seed": s}, {}) for s in seeds]

    pairs, note = compare.pair_runs(runs("daae", [3, 1, 2]), runs("aae", [1, 2, 3]))
    assert [(a.config["seed"], b.config["seed"]) for a, b in pairs] == [(3, 3), (1, 1), (2, 2)]
    assert note == "paired by seed: 3, 1, 2"
    pairs, note = compare.pair_runs(runs("daae", [0, 1]), runs("aae", [5, 6]))
    assert [(a.config["seed"], b.config["seed"]) for a, b in pairs] == [(0, 5), (1, 6)]
    assert "paired in the order given" in note
    assert compare.group_names(runs("daae", [0]), runs("aae", [0])) == ["daae", "aae"]


def test_one_seed_is_no_test_for_per_run_measures(groups, capsys):
    daae, aae = groups
    status, out, err = run_cli(["compare", daae[0], "--against", aae[1], "--names", "DAAE", "AAE"], capsys)
    assert status == 0, err
    fid = next(line for line in out.splitlines() if line.startswith("| FID |"))
    assert fid.endswith("| – | – | one seed: no test |")
    assert "DAAE − AAE on FID: -3.00 (1 pair): one seed: no test." in out
    assert "DAAE − AAE on test accuracy: +10.00 points" in out  # per image: tested with one pair too


def test_a_npz_file_pairs_by_its_name_wherever_it_lay(tmp_path, capsys):
    correct = np.arange(N_IMAGES) % 2 == 0
    here = [make_run(tmp_path / f"a-{s}", "daae", s, correct, np.ones(N_IMAGES), 0.0, 0.0, "/here/mnist10k.npz")
            for s in (1, 2)]
    stored = [make_run(tmp_path / f"b-{s}", "daae", s, correct, np.ones(N_IMAGES), 0.0, 0.0,
                       "/elsewhere/mnist10k.npz") for s in (1, 2)]
    status, out, err = run_cli(["compare", *here, "--against", *stored], capsys)
    assert status == 0, err
    other = [make_run(tmp_path / f"c-{s}", "daae", s, correct, np.ones(N_IMAGES), 0.0, 0.0, "/here/other.npz")
             for s in (1, 2)]
    status, out, err = run_cli(["compare", *here, "--against", *other], capsys)
    assert status == 2 and "compare needs runs of one dataset" in err and "npz-other" in err


@pytest.mark.parametrize("change, words", [
    ("dataset", "compare needs runs of one dataset"),
    ("old eval.json", "has no classification results per test image or drawer (svm_rbf_correct)"),
    ("other test split", "not the same test split"),
    ("three against two", "there are 3 before --against and 2 after it"),
    ("no eval.json", "has no eval.json"),
])
def test_bad_comparisons_are_one_line(groups, tmp_path, capsys, change, words):
    daae, aae = groups
    if change == "dataset":
        aae[0] = make_run(tmp_path / "mnist", "aae", 2, np.ones(N_IMAGES), np.ones(N_IMAGES), 0.0, 0.0, "mnist")
    elif change == "old eval.json":  # written by eval.py before it kept per-image results
        path = tmp_path / "aae-2" / "eval.json"
        stored = json.loads(path.read_text())
        del stored["classification"]["svm_rbf_correct"]
        path.write_text(json.dumps(stored))
    elif change == "other test split":
        aae[0] = make_run(tmp_path / "fewer", "aae", 2, np.ones(50), np.ones(50), 0.0, 0.0)
    elif change == "three against two":
        daae.append(daae[0])
    else:
        (tmp_path / "aae-1" / "eval.json").unlink()
    status, out, err = run_cli(["compare", *daae, "--against", *aae], capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    if change == "old eval.json":
        assert "re-run `python eval.py classification" in err


@pytest.mark.parametrize("argv, words", [
    (["compare", "{run}"], "compare needs a second group"),
    (["classification", "{run}", "--against", "{run}"], "--against and --names are for eval.py compare"),
    (["compare", "{run}", "--against", "{run}", "--names", "X", "X"], "different names"),
])
def test_bad_compare_command_lines_are_one_line(groups, capsys, argv, words):
    run = groups[0][0]
    status, out, err = run_cli([a.format(run=run) for a in argv], capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err


# ---------------------------------------------------------------------------------------------
# A tiny trained run: classify and reconstruct keep per-image results, compare reads them
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "aae-digits"
    aae.main(["--epochs", "1", "--sigma", "0.5", "--latent-dim", "4", "--out", str(out)])
    for study in ("classification", "reconstruction"):
        assert evaluation.main([study, str(out), "--max-train", "400"]) is None
    return out


def test_classify_and_reconstruct_keep_per_image_results(evaluated_run):
    stored = json.loads((evaluated_run / "eval.json").read_text())
    classification, reconstruction = stored["classification"], stored["reconstruction"]
    for key in ("svm_rbf", "svm_rbf_pixels", "svm_rbf_pixels_auto", "svm_rbf_pca", "svm_rbf_pca_auto"):
        right = results.unpack_bits(classification[f"{key}_correct"])
        assert len(right) == classification["test_images"] == 271
        assert right.mean() == pytest.approx(classification[key])
    # gamma auto is 1 / 64 on 8x8 digits, smaller than "scale"'s: another classifier, not a copy.
    assert classification["svm_rbf_pixels_auto_correct"] != classification["svm_rbf_pixels_correct"]
    errors = results.unpack_numbers(reconstruction["squared_errors"])
    assert len(errors) == reconstruction["images"] == 271
    assert errors.mean() == pytest.approx(reconstruction["mse"], rel=1e-5)


def test_a_run_compared_with_its_copy_differs_by_nothing(evaluated_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(evaluated_run, copy)
    status, out, err = run_cli(["compare", str(evaluated_run), "--against", str(copy), "--names", "one", "copy"],
                               capsys)
    assert status == 0, err
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| test accuracy")
            or line.startswith("| reconstruction")]
    assert len(rows) == 2 and all(row[3] in ("+0.00", "+0.00000") and row[5:] == ["1", "within noise |"]
                                  for row in rows)
    pixels = next(line for line in out.splitlines() if line.startswith("| pixels, gamma scale |"))
    assert pixels.endswith("| baseline better |")  # 4-D codes after one epoch are far behind 64 pixels


# ---------------------------------------------------------------------------------------------
# eval.json under a lock
# ---------------------------------------------------------------------------------------------

MERGES = 40


def merge_many(run_dir, name, start):
    start.wait()
    for i in range(MERGES):
        results.merge_results(run_dir, f"{name}{i}", i)


@pytest.mark.skipif(machinery.fcntl is None, reason="no fcntl.flock (Windows)")
def test_processes_merging_at_once_keep_every_study(tmp_path, monkeypatch):
    """Two processes merge 40 keys each into one eval.json at the same time. The read is slowed
    down, as a long eval.json is slow to read: without the lock, a process would write back what it
    read, losing the keys the other merged meanwhile."""
    real_read = results.read_eval_json

    def slow_read(run_dir):
        stored = real_read(run_dir)
        time.sleep(0.003)
        return stored

    monkeypatch.setattr(results, "read_eval_json", slow_read)
    context = multiprocessing.get_context("fork")  # the children inherit the slowed read
    start = context.Event()
    workers = [context.Process(target=merge_many, args=(tmp_path, name, start)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0, 0]
    stored = json.loads((tmp_path / "eval.json").read_text())
    assert set(stored) == {f"{name}{i}" for name in "ab" for i in range(MERGES)}


# ---------------------------------------------------------------------------------------------
# The README's results table, from stored runs
# ---------------------------------------------------------------------------------------------


def test_the_results_table_is_computed_from_the_stored_runs(groups, tmp_path, capsys):
    daae, aae = ([Path(run).name for run in group] for group in groups)
    rows = [{"result": "DAAE: SVM on codes", "paper": "95.28 %", "runs": daae, "study": "classification",
             "key": ["svm_rbf"], "scale": 100, "digits": 1, "unit": " %", "budget": "b", "command": "c"},
            {"result": "DAAE − AAE", "paper": "+1 point", "runs": daae, "against": aae,
             "measure": "test accuracy (%)", "digits": 1, "budget": "b", "command": "c"},
            {"result": "DAAE − pixels", "paper": "–", "runs": daae, "baseline": "pixels, gamma auto",
             "measure": "test accuracy (%)", "digits": 1, "budget": "b", "command": "c"}]
    (tmp_path / "table.json").write_text(json.dumps(rows))
    assert run_cli(["table", str(tmp_path)], capsys)[0] == 0
    table = compare.results_table(tmp_path).splitlines()
    assert table[2] == "| DAAE: SVM on codes | 95.28 % | 60.0 ± 0.0 % | b | c |"  # 60 of 100 images, both seeds
    assert table[3].startswith("| DAAE − AAE | +1 point | +10.0 points, 95 % ")  # 10 more images right per pair
    assert table[4].startswith("| DAAE − pixels | – | -40.0 points, 95 % ")
    rows[0]["key"] = ["no_such_key"]
    (tmp_path / "table.json").write_text(json.dumps(rows))
    status, _, err = run_cli(["table", str(tmp_path)], capsys)
    assert status == 2 and "has no classification/no_such_key" in err and len(err.strip().splitlines()) == 1


def test_a_table_row_pairs_a_chain_after_t_steps_with_its_step_0(tmp_path, capsys):
    daae = [f"daae-s{seed}" for seed in range(3)]
    for name in daae:
        shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "mnist10k" / name, tmp_path / name)
    row = {"result": "chain", "paper": "–", "runs": daae, "against": daae, "steps": [10, 0], "measure": "FID",
           "digits": 1, "budget": "b", "command": "c"}
    (tmp_path / "table.json").write_text(json.dumps([row]))
    fids = [[results.stored(results.read_evaluated(tmp_path / name), "quality", "steps", step, "fid")
             for name in daae] for step in ("10", "0")]
    differences = np.subtract(*fids)
    low, high = stats.ttest_rel(*fids).confidence_interval(0.95)
    cell = f"{differences.mean():+.1f}, 95 % {low:+.1f} to {high:+.1f}"
    assert compare.results_table(tmp_path).splitlines()[2] == f"| chain | – | {cell} | b | c |"
    eval_json = tmp_path / "daae-s1" / "eval.json"
    stored = json.loads(eval_json.read_text())
    del stored["quality"]["steps"], stored["likelihood"]["steps"]
    eval_json.write_text(json.dumps(stored))
    status, _, err = run_cli(["table", str(tmp_path)], capsys)
    assert status == 2 and "no scores after 10 chain steps" in err and len(err.strip().splitlines()) == 1


def test_the_readme_results_table_is_what_eval_table_prints():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    start, end = "<!-- results table: python eval.py table results -->\n", "\n<!-- end of the results table -->"
    assert start in readme and end in readme
    assert readme[readme.index(start) + len(start):readme.index(end)] == compare.results_table(root / "results")


def test_reconstruction_errors_of_different_corruptions_are_said_to_measure_different_tasks(groups, capsys):
    daae, aae = groups
    for runs, sigma in ((daae, 0.5), (aae, 0.0)):
        for run in runs:
            path = Path(run) / "eval.json"
            stored = json.loads(path.read_text())
            stored["reconstruction"]["sigma"] = sigma
            path.write_text(json.dumps(stored))
    status, out, _ = run_cli(["compare", *daae, "--against", *aae], capsys)
    assert status == 0 and "the MSEs measure different tasks" in out


@pytest.mark.parametrize("page, folder", [("toy.md", "toy25"), ("toy.md", "toy25-200k"), ("daae.md", "omniglot-cpu"),
                                          ("aae.md", "mnist10k-clustering"), ("aae.md", "mnist10k-clustering-100"),
                                          ("learned_prior.md", "mnist10k-lp-ablation"), ("ali.md", "mnist10k-ali"),
                                          ("aae.md", "mnist10k-semi"), ("aae.md", "mnist10k-clustering30"),
                                          ("vae.md", "mnist10k-figure2"), ("vae.md", "mnist10k-vae"),
                                          ("aae.md", "digits-encoders"),
                                          ("learned_prior.md", "mnist10k-text-to-image"),
                                          ("evaluation.md", "mnist10k")])
def test_a_docs_pages_table_is_what_eval_table_prints(page, folder):
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / page).read_text()
    start = f"<!-- results table: python eval.py table results/{folder} -->\n"
    assert start in text
    table = text[text.index(start) + len(start):]
    assert table[:table.index("\n<!-- end of the results table -->")] == compare.results_table(root / "results" / folder)
