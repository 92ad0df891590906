"""figures.py: every figure drawn from tiny runs (one epoch each) as a PNG of a sensible size, the
training of missing runs only, and every picture a docs page or the README names exists."""
import importlib
import re
from pathlib import Path

import pytest
from PIL import Image

import figures
from helpers import tiny_npz
from test_datasets import write_omniglot_set

ROOT = Path(__file__).resolve().parent.parent


TOY = ["toy-aae", "toy-ali", "toy200k-aae", "toy200k-ali"]  # of the toy's: each takes seconds more than a digits run


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Every digits, MNIST and Omniglot run of figures.RUNS (MNIST: a .npz of 120 random 8x8 images;
    Omniglot: 5 characters of one-pixel strokes) and four of the toy's, trained for one epoch (the toy's of 100 updates); RUNS asks for one epoch while the tests run, so
    that nothing is trained again."""
    runs = tmp_path_factory.mktemp("runs")
    mnist = tiny_npz(runs / "mnist10k.npz", n_train=120)
    write_omniglot_set(runs / "omniglot" / "images_background", {"Alpha": 3, "Beta": 2})
    write_omniglot_set(runs / "omniglot" / "images_evaluation", {"Gamma": 2})
    with pytest.MonkeyPatch.context() as patch:
        for name, (script, flags) in figures.RUNS.items():
            small = re.sub(r"--epochs \d+", "", flags) + " --epochs 1"
            small += " --batch-size 1000" if "toy25" in flags else ""
            small = small.replace("--labels 2000", "--labels 20") if "{mnist}" in flags else small
            patch.setitem(figures.RUNS, name, (script, small))
            if "toy25" not in flags or name in TOY:
                importlib.import_module(script).main(figures.run_argv(name, runs, {"mnist": str(mnist), "omniglot": str(runs / "omniglot")}))
        yield runs


@pytest.mark.parametrize("figure", sorted(figures.FIGURES))
def test_each_figure_is_drawn_from_its_runs(figure, tiny_runs, tmp_path):
    draw, names, pngs = figures.FIGURES[figure]
    assert figures.train_missing([name for name in names if not name.startswith(("toy-", "toy200k-")) or name in TOY],
                                 tiny_runs) == {}
    draw(tiny_runs, tmp_path)
    for png in pngs:
        with Image.open(tmp_path / png) as picture:
            assert picture.format == "PNG"
            assert 150 <= min(picture.size) and max(picture.size) <= 3000, picture.size
        assert (tmp_path / png).stat().st_size < 600_000


def test_the_chain_has_a_column_per_step_and_is_wider_than_tall(tiny_runs, tmp_path):
    figures.daae_figures(tiny_runs, tmp_path)
    with Image.open(tmp_path / "daae-chain.png") as chain:
        assert chain.width > chain.height  # x_0 and 10 steps across, 10 chains down


def test_main_draws_only_the_figures_asked_for(tiny_runs, tmp_path, capsys):
    figures.main(["--runs", str(tiny_runs), "--out", str(tmp_path), "--only", "aae-figure7"])
    assert [path.name for path in tmp_path.iterdir()] == ["aae-figure7.png"]
    assert "figures written to" in capsys.readouterr().out


def test_missing_runs_train_two_at_a_time_each_logged_in_its_folder_and_not_again(tmp_path, monkeypatch):
    monkeypatch.setitem(figures.RUNS, "a", ("aae", "--epochs 1 --batch-size 500"))
    monkeypatch.setitem(figures.RUNS, "b", ("vae", "--epochs 1 --batch-size 500"))
    trained = figures.train_missing(["a", "b", "a"], tmp_path, workers=2)
    assert sorted(trained) == ["a", "b"] and all(seconds > 0 for seconds in trained.values())
    for name in ("a", "b"):
        assert (tmp_path / name / "checkpoint.pt").exists()
        assert "epoch 1/1" in (tmp_path / name / "figures.log").read_text()
    assert figures.train_missing(["a", "b"], tmp_path, workers=2) == {}


def test_the_mnist_figures_need_their_data_and_say_how_to_make_it(tiny_runs, tmp_path, capsys):
    missing = str(tmp_path / "nowhere.npz")
    with pytest.raises(figures.machinery.CLIError, match="make_mnist10k.py"):
        figures.main(["--runs", str(tiny_runs), "--out", str(tmp_path), "--mnist", missing, "--only", "mnist-daae"])
    with pytest.MonkeyPatch.context() as patch:  # without --only: the others are drawn, the MNIST ones skipped
        patch.setattr(figures, "FIGURES", {name: figures.FIGURES[name] for name in ("aae-figure7", "mnist-daae")})
        figures.main(["--runs", str(tiny_runs), "--out", str(tmp_path), "--mnist", missing])
    assert [path.name for path in tmp_path.iterdir()] == ["aae-figure7.png"]
    assert "the mnist-daae figures are skipped" in capsys.readouterr().out


def test_every_picture_the_readme_and_docs_name_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = [(page, target) for page in pages
             for target in re.findall(r"(?:\]\(|src=\")([^)\"#]+\.png)", page.read_text())]
    assert any("figures/" in target for _, target in named)
    missing = [f"{page.name}: {target}" for page, target in named if not (page.parent / target).is_file()]
    assert not missing, missing
