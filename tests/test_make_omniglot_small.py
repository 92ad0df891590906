"""benchmarks/make_omniglot_small.py: the 5-alphabet subset split by alphabet, from an archive made
here in the official one's layout (no download)."""

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

import common
from helpers import run_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_omniglot_small.py"
ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")


def load_script():
    spec = importlib.util.spec_from_file_location("make_omniglot_small", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_archive(path, alphabets=ALPHABETS, characters=2):
    """images_background_small1/<alphabet>/characterNN/<id>_<drawer>.png, 20 drawers, 6x6 images."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for a, alphabet in enumerate(alphabets):
            for c in range(characters):
                for drawer in range(1, 21):
                    png = io.BytesIO()
                    Image.fromarray(np.where(rng.random((6, 6)) < 0.3, 0, 255).astype(np.uint8)).save(png, "PNG")
                    archive.writestr(f"images_background_small1/{alphabet}/character{c + 1:02d}/"
                                     f"{100 * a + c:04d}_{drawer:02d}.png", png.getvalue())


def test_the_alphabets_are_split_as_docs_daae_says_and_omniglot_loads(tmp_path, capsys):
    write_archive(tmp_path / "small.zip")
    main, out = load_script().main, tmp_path / "omniglot-small"
    assert run_script(main, ["--zip", str(tmp_path / "small.zip"), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "images_background").iterdir()) == ["Balinese", "Greek", "Korean", "Latin"]
    assert [p.name for p in (out / "images_evaluation").iterdir()] == ["Early_Aramaic"]
    assert sorted(p.name for p in out.iterdir()) == ["images_background", "images_evaluation"]  # nothing left over
    data = common.load_dataset("omniglot", str(out))
    assert data.num_classes == 8 and len(data.x_train) == 8 * 19 and len(data.x_test) == 8  # drawer 20 tests
    assert len(data.extra["x_eval"]) == 2 * 20
    assert run_script(main, ["--zip", str(tmp_path / "small.zip"), "--out", str(out)]) == 0  # a second time: as it is
    assert "nothing to do" in capsys.readouterr().out


def test_a_wrong_archive_is_one_line_and_writes_nothing(tmp_path, capsys):
    main = load_script().main
    write_archive(tmp_path / "four.zip", alphabets=ALPHABETS[:4])
    (tmp_path / "text.zip").write_text("not a zip")
    for archive, words in (("four.zip", "no images_background_small1/Latin/"), ("text.zip", "cannot read"),
                           ("missing.zip", "cannot read")):
        assert run_script(main, ["--zip", str(tmp_path / archive), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
        assert not (tmp_path / "out").exists()


def test_a_damaged_archive_member_is_one_line_and_a_killed_runs_leftover_goes(tmp_path, capsys):
    main, out = load_script().main, tmp_path / "out"
    write_archive(tmp_path / "small.zip")
    data = bytearray((tmp_path / "small.zip").read_bytes())
    at = data.index(b"IDAT") + 8  # inside the first image's compressed pixels: its CRC no longer matches
    data[at:at + 4] = bytes(255 - b for b in data[at:at + 4])
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    assert run_script(main, ["--zip", str(tmp_path / "damaged.zip"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "is damaged" in err[0], err
    assert list(out.iterdir()) == []  # no half-unpacked set
    (out / ".partial-k9").mkdir()  # what kill -9 mid-unpacking leaves
    (out / ".partial-k9" / "x.png").write_bytes(b"x")
    assert run_script(main, ["--zip", str(tmp_path / "small.zip"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["images_background", "images_evaluation"]
