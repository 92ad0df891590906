"""Unpack Omniglot's 5-alphabet subset, images_background_small1.zip (the Omniglot repository's
python/ folder), into the layout `--dataset omniglot --data-dir DIR` reads, split by alphabet as
in docs/daae.md ("The 5-alphabet subset"): Balinese, Greek, Korean and Latin in
DIR/images_background/ (the training set and drawer 20's test images), Early Aramaic in
DIR/images_evaluation/ (unseen characters).

    python benchmarks/make_omniglot_small.py --zip images_background_small1.zip   # into gpu-data/omniglot-small
    python benchmarks/make_omniglot_small.py --zip ZIP --out data/omniglot-small
"""

import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import machinery  # noqa: E402

TOP = "images_background_small1"  # the archive's one top folder
SETS = {"images_background": ("Balinese", "Greek", "Korean", "Latin"), "images_evaluation": ("Early_Aramaic",)}


def unpack(zip_path, out):
    """DIR/images_background/<alphabet>/... and DIR/images_evaluation/<alphabet>/... from the archive.
    Unpacked into a temporary folder beside `out` and moved in at the end, so an interrupted run
    leaves no half-filled set (common.load_dataset would read it as a whole one)."""
    out = Path(out)
    if all((out / name).is_dir() for name in SETS):
        print(f"{out} already holds {' and '.join(SETS)}; nothing to do")
        return
    if any((out / name).exists() for name in SETS):
        raise machinery.CLIError(f"{out} holds only part of the subset: remove {out} and run this again")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise machinery.CLIError(f"cannot read {zip_path} ({machinery.first_line(error, 80)}): download "
                                 "images_background_small1.zip from the Omniglot repository's python/ folder") from None
    with archive:
        alphabets = {Path(name).parts[1] for name in archive.namelist() if len(Path(name).parts) > 2}
        missing = [a for names in SETS.values() for a in names if a not in alphabets]
        if missing:
            raise machinery.CLIError(f"{zip_path} has no {TOP}/{missing[0]}/: it is not images_background_small1.zip")
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(".partial-*"):  # of a run that was killed (kill -9) mid-unpacking
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp:
            try:
                archive.extractall(tmp, [name for name in archive.namelist() if name.startswith(f"{TOP}/")])
            except (zipfile.BadZipFile, EOFError, zlib.error) as error:  # a member cut off or damaged
                raise machinery.CLIError(f"{zip_path} is damaged ({machinery.first_line(error, 80)}): download "
                                         "images_background_small1.zip again") from None
            except OSError as error:  # a full disk, a folder that cannot be written
                raise machinery.CLIError(f"cannot unpack into {out} ({error.strerror or error}): free some space "
                                         "or choose another --out") from None
            for name, chosen in SETS.items():
                (Path(tmp) / name).mkdir()
                for alphabet in chosen:
                    shutil.move(Path(tmp) / TOP / alphabet, Path(tmp) / name / alphabet)
            for name in SETS:
                shutil.move(Path(tmp) / name, out / name)
    counts = {name: sum(1 for _ in (out / name).rglob("*.png")) for name in SETS}
    print(f"wrote {out}: " + ", ".join(f"{name}/ {n:,} images" for name, n in counts.items()))


def main(argv=None):
    parser = machinery.ArgumentParser(prog="make_omniglot_small.py", description=__doc__,
                                      formatter_class=machinery.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", default="images_background_small1.zip",
                        help="the archive (default: images_background_small1.zip in the current folder)")
    parser.add_argument("--out", default="gpu-data/omniglot-small",
                        help="the data folder to fill (default: gpu-data/omniglot-small, which git ignores)")
    args = parser.parse_args(argv)
    unpack(args.zip, args.out)


if __name__ == "__main__":
    machinery.cli(main)
