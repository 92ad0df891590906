"""Plumbing that a reader of the models may skip: the command line, errors as one line, devices and
memory checks, atomic files, checkpoints, the run folder's settings and lock, Ctrl-C, and the safe
reading of dataset files and of trained runs.

Nothing here is in a paper. common.py and the model files call it so that a run fails in one line
that says what to do, loses nothing when it stops, and resumes exactly where it stopped.

Run folder (the same for every script), `--out`, default `runs/<model>-<dataset>`:
    config.json     every setting of the run
    checkpoint.pt   networks, optimisers, epoch, RNG states; written atomically (--save-every)
    log.csv         mean losses and seconds per epoch; losses.png, their curves
    samples.png     the latest samples; samples/epoch_NNN.png one per saved epoch
    .lock           the process id of the run in the folder, which is locked while it runs (one run at a time)
"""

import argparse
import csv
import importlib
import json
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.io
import torch
from tqdm import tqdm

try:
    import fcntl  # the run folder's lock (POSIX)
except ImportError:  # Windows
    fcntl = None

# ---------------------------------------------------------------------------------------------
# Command line: the flags every script shares, and errors as one line
# ---------------------------------------------------------------------------------------------


class CLIError(Exception):
    """A mistake the user can fix. Scripts print it as one line and exit with status 2."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the run was saved and can be resumed."""


class NothingToDo(Exception):
    """--resume on a run that already has its --epochs: said in one line, exit status 0."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) that points to --help."""

    def error(self, message):
        raise CLIError(f"{message} (see --help)")


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def at_least_two(text):
    """A number of classes, clusters or categories: one holds no information."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (one category holds no information), got {text}")
    return value


def fraction(text):
    """A probability or Adam's beta1: from 0 up to, not including, 1."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


MAX_SIGMA = 10.0  # pixels are in [0, 1]: noise ten times their range leaves nothing to denoise


def corruption_sigma(text):
    """--sigma: zero or positive, and not so large that the corrupted images are noise alone."""
    value = non_negative_float(text)
    if value > MAX_SIGMA:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIGMA:g} (pixels are in [0, 1]; the papers use "
                                         f"0.25-0.5), got {text}")
    return value


def seed_value(text):
    """--seed: torch takes seeds of 64 bits, so a larger one is refused here rather than mid-start."""
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2^63 - 1, got {text}")
    return value


DEVICES = ("auto", "cpu", "cuda", "mps")


PRECISIONS = ("fp32", "bf16")


def model_parser(model, description):
    """The flags every model script has. Defaults are None: SHARED_DEFAULTS and the dataset's row
    of the model's table of paper settings fill them in (see start_run), so a flag given
    overrides them, and a resumed run can tell the flags given from the ones left out.
    describe_defaults lists that table at the end of --help."""
    parser = ArgumentParser(
        prog=f"{model}.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset",
                        help="digits (offline, default), mnist, omniglot, cifar10, svhn, celeba, sprites, the toy "
                             "datasets of points in the plane toy25 and ring8 (offline), or a .npz file with x_train, y_train, x_test, y_test [, x_val, y_val]")
    parser.add_argument("--data-dir", help="where datasets are found or downloaded (default: data)")
    parser.add_argument("--image-size", type=positive_int, help="resize images to this square size")
    parser.add_argument("--epochs", type=positive_int, help="total number of epochs (also when resuming)")
    parser.add_argument("--batch-size", type=positive_int, help="images per mini-batch")
    parser.add_argument("--lr", type=positive_float,
                        help="learning rate of the optimisers (of all of them, unless a script's own flag such as "
                             "daae.py's --adversarial-lr sets some)")
    parser.add_argument("--latent-dim", type=positive_int, help="size of the code z")
    parser.add_argument("--seed", type=seed_value, help="seed of every random number generator (default: 0)")
    parser.add_argument("--out", help="run folder (default: runs/<model>-<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32 (default), or bf16: the step's matmuls in bfloat16 under torch.autocast, weights, "
                             "optimiser state and losses in float32; only where the hardware has bfloat16 (CPUs "
                             "with AVX512-BF16 or AMX, recent GPUs), elsewhere the run says so and stays fp32")
    parser.add_argument("--save-every", type=positive_int,
                        help="write the checkpoint and the pictures every this many epochs (default 1); the last "
                             "epoch's are always written, and so is a checkpoint on Ctrl-C or SIGTERM")
    add_device_flags(parser)
    return parser


def add_device_flags(parser):
    parser.add_argument("--device", choices=DEVICES,
                        help="where to compute (default auto: CUDA when there is one, else the CPU; mps, "
                             "Apple's GPUs, only when asked for)")
    parser.add_argument("--gpu", dest="device", action="store_const", const="cuda",
                        help="the same as --device cuda")


def describe_defaults(parser, defaults):
    """Add to --help each dataset's defaults for the flags the parser has (the papers' settings)."""
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    lines = ["defaults per dataset (a flag given overrides its default; a .npz file takes mnist's row):"]
    for name, row in defaults.items():
        settings = [_flag_setting(actions[key], value) for key, value in row.items() if key in actions]
        lines.append(f"  {name:<9} " + ", ".join(setting for setting in settings if setting))
    parser.epilog = "\n".join(lines)
    return parser


def _flag_setting(action, value):
    """How a default reads as a flag: --lr 0.001; --batch-norm or --no-batch-norm; None for no value,
    or a bool of a flag that is not a --x/--no-x pair."""
    if isinstance(value, bool):
        pair = isinstance(action, argparse.BooleanOptionalAction)
        return action.option_strings[0 if value else 1] if pair else None
    if value is None:
        return None
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" \
        if isinstance(value, float) else str(value)
    return f"{action.option_strings[0]} {shown}"


def cli(main):
    """Run main() as a command: user errors are one line on stderr, never a traceback."""
    try:
        main()
    except CLIError as error:
        discard_unstarted_runs()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        discard_unstarted_runs()
        # What the up-front checks (check_memory) could not foresee: activations, a busy machine.
        print(f"error: out of memory ({first_line(error, 100)}): lower --batch-size, or the sizes you raised "
              "(--latent-dim, --image-size, --M, --channels)", file=sys.stderr)
        sys.exit(2)
    except NothingToDo as reason:
        print(reason)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _is_out_of_memory(error):
    text = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text \
        or "out of memory" in text or "not enough memory" in text


def first_line(error, limit=160):
    """The first line of an exception's message, cut at a word (not mid-word) when it is long."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def progress(iterable, desc, **kwargs):
    """A progress bar on a terminal (none in a log file), gone when done."""
    return tqdm(iterable, desc=desc, leave=False, disable=None, dynamic_ncols=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Device, precision, memory
# ---------------------------------------------------------------------------------------------


def choose_device(name="auto"):
    """--device: auto is CUDA when there is one, else the CPU; a device asked for by name must
    exist. CUDA matmuls may use TF32."""
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda (or --gpu): this PyTorch sees no CUDA device; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CLIError("--device mps: this PyTorch sees no Apple GPU (MPS); use --device cpu or auto")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def native_bf16(device):
    """Whether `device` computes in bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    whose flags in Linux's /proc/cpuinfo name AVX512-BF16 or AMX (x86) or BF16 (ARM). Other CPUs
    emulate bfloat16 with float32 arithmetic and conversions, slower than float32 alone."""
    if device.type == "cuda":  # bfloat16 tensor cores from compute capability 8.0 (Ampere) on; AMD's (ROCm) have it
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":  # mps: autocast to bfloat16 is not offered here
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: unknown, so taken as absent
        return False
    flags = set(" ".join(re.findall(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)).split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def choose_precision(precision, device):
    """--precision as the device allows: bf16 where the hardware has it, else fp32 and one line."""
    if precision == "bf16" and not native_bf16(device):
        what = "GPU" if device.type == "cuda" else "CPU (no avx512_bf16 or amx_bf16)" if device.type == "cpu" \
            else f"{device.type} device"
        print(f"note: --precision bf16: this {what} has no native bfloat16, which would be slower than fp32; "
              "the run stays fp32", file=sys.stderr)
        return "fp32"
    return precision


def one_thread_if_busy(device):
    """On busy cores torch's threads wait for each other, and one thread is faster (docs/performance.md)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # Windows has no load average
    if device.type == "cpu" and load > (os.cpu_count() or 1) and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
        print(f"note: the CPU is busy (load {load:.1f} on {os.cpu_count()} cores), so this run uses "
              "one thread; set OMP_NUM_THREADS to choose", file=sys.stderr)


def on_device(tensor, device):
    """Put a dataset on the device when it fits in half of the free memory, else pin it so
    batches copy asynchronously."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return tensor.to(device) if tensor.nbytes < free // 2 else tensor.pin_memory()
    return tensor


def memory_size(device):
    """Bytes of memory of `device`: the GPU's, else the machine's RAM (unknown: taken as 1 TiB)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 2**40


def check_memory(nbytes, what, flags, device):
    """Refuse, naming `flags`, when `nbytes` of tensors cannot fit in the device's memory at all,
    before any is allocated (a failed allocation in the middle of a run is a traceback, or the
    kernel's out-of-memory kill). Sizes that fit only when the machine is idle are left to cli()."""
    total = memory_size(device)
    if nbytes > total:
        raise CLIError(f"{what} would take {nbytes / 2**30:,.1f} GiB, more than the {total / 2**30:,.1f} GiB of "
                       f"memory of {device.type}: choose a smaller {' or '.join(flags)}")


def check_resized_fit(arrays, name, image_size):
    """Refuse an --image-size whose resized images cannot fit in memory, before allocating them."""
    every_image = [arrays[key] for key in ("x_train", "x_val", "x_test")]
    every_image += [x for key, x in arrays["extra"].items() if key.startswith("x_")]
    channels, bytes_per_pixel = arrays["x_train"].shape[1], arrays["x_train"].element_size()
    nbytes = sum(len(x) for x in every_image) * channels * image_size**2 * bytes_per_pixel
    check_memory(nbytes, f"{name} at {image_size}x{image_size}", ["--image-size"], torch.device("cpu"))


def check_batch_size(batch_size, n_train):
    """Refuse a --batch-size larger than the training set (`n_train` images)."""
    if batch_size > n_train:
        raise CLIError(f"--batch-size {batch_size} is larger than the training set ({n_train} images); "
                       "choose a smaller one")


def check_batch_norm_batch(batch_size, model):
    """Refuse a --batch-size below 2 for a model with batch normalisation, which needs two images a batch."""
    if batch_size < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise CLIError(f"--batch-size {batch_size}: these networks use batch normalisation, which needs at "
                       "least 2 images a batch; choose a larger --batch-size")


def check_finite(mean_losses, epoch, out, saved_epoch):
    """Stop a run whose epoch's mean loss is not finite, naming the last good checkpoint, which is kept."""
    bad = [k for k, v in mean_losses.items() if not math.isfinite(v)]
    if bad:
        raise CLIError(f"the {bad[0]} loss became {mean_losses[bad[0]]} in epoch {epoch}; "
                       f"{_kept(out, saved_epoch)}. Try a lower --lr")


def _kept(out, saved_epoch):
    return (f"{out / 'checkpoint.pt'} keeps epoch {saved_epoch}, before it went bad" if saved_epoch is not None
            else "no checkpoint had been saved yet")


def check_finite_run(run):
    """Before every checkpoint a run writes (each --save-every epoch, and a stop mid-epoch on Ctrl-C
    or SIGTERM, which comes before the epoch's own check): the epoch's mean losses so far, and
    every weight and optimiser state, finite. Else the run stops and the good checkpoint stays."""
    epoch = run.epoch + 1 if run.step else run.epoch  # mid-epoch, or an epoch just ended
    if run.step:
        check_finite({k: float(v) / run.step for k, v in run.sums.items()}, epoch, run.out, run.saved_epoch)
    # The losses of a step are computed before its update: the last update can break the weights alone.
    bad = not_finite(run.model.state_dict()) + sum(not_finite(state) for optimizer in run.optimizers.values()
                                                   for state in optimizer.state_dict()["state"].values())
    if bad:
        raise CLIError(f"{bad} of the weight and optimiser tensors became NaN or infinite in epoch {epoch}; "
                       f"{_kept(run.out, run.saved_epoch)}. Try a lower --lr")


def not_finite(tensors):
    """How many of the floating-point tensors among a dict's values hold a NaN or an infinity."""
    return sum(bool(torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all())
               for t in tensors.values())


def check_networks_fit(build, config, device, flags=("--latent-dim", "--image-size")):
    """Refuse networks whose training cannot fit in memory, before any is allocated: build(config)
    is made on the "meta" device (shapes only), and training needs about four copies of the
    weights (weights, gradients, Adam's two moments)."""
    with torch.device("meta"):
        size = sum(p.numel() for p in build(config).parameters())
    check_memory(16 * size, f"the networks' {size:,} parameters", flags, device)


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, JSON, checkpoints, the log
# ---------------------------------------------------------------------------------------------


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only once the write finished."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of a plain open(), not mkstemp's private 0600
        yield tmp
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a read-only folder: one line, and the old file is intact
        raise CLIError(f"cannot write {path} ({error.strerror or first_line(error, 80)}); its previous version, "
                       "if any, is kept: free some space or choose a folder you can write to") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def exclusive_lock(path):
    """Hold an exclusive lock (fcntl.flock) on the file `path`, made if need be, for the
    body of the `with`; a second process that asks for it waits until the first lets go. Without
    flock (Windows, some network file systems) the body runs unlocked."""
    try:
        handle = open(path, "a")
    except OSError as error:
        raise CLIError(f"cannot write {path} ({error.strerror or error}); evaluate a run folder you can "
                       "write to") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:  # a file system without locks
                pass
        yield  # closing the file lets go of the lock


def check_folder_writable(folder, what):
    """Refuse at once, in one line, a folder a command will write `what` into but cannot (read-only,
    on a read-only file system): before the work, not after it (eval.py's studies take minutes)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CLIError(f"cannot write {what} in {folder} ({error.strerror or error}); nothing was evaluated: make "
                       "the folder writable, or evaluate a copy of the run") from None


def checkpoint_progress(run_dir):
    """(epoch, step) of RUN_DIR/checkpoint.pt, read without loading its tensors (mmap); None
    where there is none that can be read (a run stored in results/ keeps no checkpoint)."""
    try:
        checkpoint = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)
        return checkpoint["epoch"], checkpoint.get("step", 0)
    except Exception:  # none, or damaged: the commands that need the weights say so themselves
        return None


def write_json(path, obj):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


CHECKPOINT_FORMAT = "adversarial-autoencoders/1"


class _KeepWriteError:
    """The file torch.save writes through, keeping the OSError of a failed write (no space left on
    the device): torch reports it only as "[enforce fail at inline_container.cc] unexpected pos"."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self):
        self.file.flush()


def save_atomically(obj, path):
    """torch.save(obj) to `path` through atomic_path: a failed write is one line naming the
    operating system's reason, and the previous file is kept."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        file = _KeepWriteError(f)
        try:
            torch.save(obj, file)
        except RuntimeError:
            if file.error is None:
                raise
            raise file.error from None  # atomic_path says it in one line


def save_checkpoint(path, state):
    """Written atomically: a failed write (a full disk) keeps the previous checkpoint, and says so."""
    try:
        save_atomically({"format": CHECKPOINT_FORMAT, **state}, path)
    except RuntimeError as error:  # torch.save reports a failed write as a RuntimeError, not an OSError
        raise CLIError(f"cannot write {path} ({first_line(error, 80)}); the previous checkpoint, if any, is "
                       "kept: free some space, then resume") from None


def load_checkpoint(path, model=None, remedy="train the run first"):
    """A checkpoint written by save_checkpoint, loaded with weights_only=True (a file that
    would run code when unpickled is refused). Every failure is one CLIError line, ending with
    `remedy` (what the calling command can do about it)."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"no checkpoint at {path}; {remedy}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "weights only load failed" in str(error).lower():
            reason = "it holds Python objects besides tensors, which loading could run as code; it was not loaded"
        else:
            reason = first_line(error, 80)
        raise CLIError(f"{path} is not a valid checkpoint ({reason}); delete it, or {remedy}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CLIError(f"{path} is not a checkpoint written by these scripts; delete it, or {remedy}")
    if model is not None and checkpoint.get("model") != model:
        raise CLIError(f"{path} is a {checkpoint.get('model')} checkpoint, not {model}; use {checkpoint.get('model')}.py")
    return checkpoint


def plt_figure(*args, **kwargs):
    """A matplotlib figure drawn off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(*args, **kwargs)


def save_figure(figure, path):
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


# The values of the code game's losses when D outputs 1/2 everywhere, drawn in losses.png for the
# models whose D and encoder losses are the single cross-entropies of aae.py: 2 ln 2 and ln 2.
EQUILIBRIA = {model: {"discriminator": 2 * math.log(2), "encoder_adversarial": math.log(2)}
              for model in ("aae", "daae", "idaae")}


def write_log(out, history, plot=True, model=None):
    """log.csv, and losses.png when `plot` (drawing takes a third of a second), with the game's
    equilibrium values dashed (EQUILIBRIA)."""
    keys = list(dict.fromkeys(key for row in history for key in row))  # a renamed loss of an older run: both
    with atomic_path(out / "log.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, restval="")
            writer.writeheader()
            writer.writerows(history)
    if not plot:
        return
    losses = [k for k in keys if k not in ("epoch", "seconds")]
    figure = plt_figure(figsize=(4 * len(losses), 3))
    epochs = [row["epoch"] for row in history]
    for i, key in enumerate(losses):
        axes = figure.add_subplot(1, len(losses), i + 1)
        axes.plot(epochs, [row.get(key, math.nan) for row in history], marker="." if len(epochs) < 30 else None)
        if key in EQUILIBRIA.get(model, {}):
            level = EQUILIBRIA[model][key]
            axes.axhline(level, color="grey", linestyle="--", linewidth=1, label=f"equilibrium {level:.3f}")
            axes.legend(fontsize=8)
        axes.set_title(key)
        axes.set_xlabel("epoch")
    save_figure(figure, out / "losses.png")


# ---------------------------------------------------------------------------------------------
# The run folder: settings, resume, lock
# ---------------------------------------------------------------------------------------------

SHARED_DEFAULTS = {"dataset": "digits", "data_dir": "data", "seed": 0, "precision": "fp32", "save_every": 1}
RESUMABLE = {"epochs", "device", "resume", "out", "save_every"}  # the flags a resumed run may change
PLUMBING = {"out", "resume", "save_every", "device", "data_dir", "model", "dataset", "image_shape", "num_classes"}
LOCK_FILE = ".lock"
_held_locks = {}  # run folder -> (this process's open descriptor of it, locked, the outermost folder it made)


# ---------------------------------------------------------------------------------------------
# Old-run compatibility, in this one place: a run folder written by an earlier version of the
# scripts (before a flag existed, or before an optimiser or a loss was renamed) is upgraded as it is
# read, so that it resumes, and is evaluated, with the settings and names it was trained with; the
# model files then read every setting as config[key] and every name as today's.
# ---------------------------------------------------------------------------------------------

# What runs from before a flag existed were trained with.
OLD_RUN_SETTINGS = {
    "all": {"precision": "fp32", "save_every": 1, "device": None},
    "aae": {"supervised": False, "encoder_hidden": [], "decoder_hidden": [], "encoder": "deterministic"},
    "daae": {"encoder_hidden": [], "decoder_hidden": [], "init": "glorot", "clip": False,
             "update_order": "reconstruction-first", "adversarial_lr": None},
    "semi_supervised_aae": {"discriminator_noise": 0.0, "batch_norm": False, "init": "glorot", "beta1": 0.9,
                            "grad_clip": 0.0},
    "learned_prior_aae": {"channels": 64, "hidden": [256, 256]},
    "ali": {"encoder_hidden": [], "decoder_hidden": [], "discriminator_hidden": []},
}
OLD_RUN_SETTINGS["idaae"] = OLD_RUN_SETTINGS["daae"]


def upgrade_config(config):
    """config.json of any age, with the settings its run was trained with (OLD_RUN_SETTINGS)."""
    for key, value in {**OLD_RUN_SETTINGS["all"], **OLD_RUN_SETTINGS.get(config.get("model"), {})}.items():
        config.setdefault(key, value)
    return config


# Names of optimisers and of losses that have changed: a checkpoint of an older run is read with today's.
OLD_OPTIMIZER_NAMES = {"aae": {"encoder": "encoder_adversarial"}, "daae": {"encoder": "encoder_adversarial"},
                       "idaae": {"encoder": "encoder_adversarial"},
                       "semi_supervised_aae": {"generator": "encoder_adversarial"},
                       "learned_prior_aae": {"encoder": "encoder_adversarial", "prior": "code_generator"}}


def old_loss_names(config):
    """{old loss name: today's} for the run config.json describes (its sums and history)."""
    if config["model"] == "learned_prior_aae":  # the reconstruction loss is named for what --pixel-loss makes it
        return {"reconstruction": f"{config['reconstruction']}_reconstruction",
                "generator_adversarial": "code_generator_adversarial"}
    return {"generator": "encoder_adversarial"} if config["model"] == "semi_supervised_aae" else {}


def upgrade_checkpoint(checkpoint, config):
    optimizers, losses = OLD_OPTIMIZER_NAMES.get(config["model"], {}), old_loss_names(config)
    checkpoint["optimizers"] = {optimizers.get(k, k): v for k, v in checkpoint["optimizers"].items()}
    checkpoint["sums"] = {losses.get(k, k): v for k, v in checkpoint["sums"].items()}
    checkpoint["history"] = [{losses.get(k, k): v for k, v in row.items()} for row in checkpoint["history"]]
    return checkpoint


# ---------------------------------------------------------------------------------------------
# The run folder, continued: its name, the run's place
# ---------------------------------------------------------------------------------------------


def dataset_tag(dataset):
    """The dataset's part of a run folder's name: mnist, or npz-<file> for a .npz file, so that a
    file called mnist.npz does not share runs/daae-mnist with --dataset mnist."""
    return f"npz-{Path(dataset).stem}" if dataset.endswith(".npz") else dataset


@contextmanager
def run_folder(model, args, defaults, variant=None):
    """Settle a run's settings and hold its folder: yields (config, out, checkpoint).

    The settings are the flags given over the dataset's row of `defaults` (the paper's; a .npz
    file uses the "mnist" row unless the table has a "npz" one) over SHARED_DEFAULTS, or, with
    --resume, the saved config.json with --epochs (and --device, --save-every) from the flags.
    The folder is --out, else runs/<model>-<dataset>[-<variant>], so that the README's commands
    one after another do not meet each other's folders. It is locked for this process before
    anything in it is read or written; a run refused inside the block leaves no folder behind."""
    config = vars(args).copy()
    given = config.copy()
    for key, value in SHARED_DEFAULTS.items():
        if config[key] is None:
            config[key] = value
    if config["dataset"].endswith(".npz"):  # absolute, so that eval.py finds it from any folder
        config["dataset"] = given["dataset"] = os.path.abspath(config["dataset"])
    run_name = f"{model}-{dataset_tag(config['dataset'])}" + (f"-{variant}" if variant else "")
    out = Path(config["out"] or f"runs/{run_name}")
    made = lock_run_folder(out)
    try:
        checkpoint = None
        if config["resume"]:
            # A damaged checkpoint ends the advice here: without --resume the folder still "holds a run"
            remedy = "start a new run in another --out, without --resume" if (out / "checkpoint.pt").exists() \
                else "drop --resume to start a new run"
            checkpoint = load_checkpoint(out / "checkpoint.pt", model, remedy)
            config = _resumed_config(out, given)
            done = checkpoint.get("epoch", 0)
            if config["epochs"] < done:  # refused before config.json is rewritten
                raise CLIError(f"the run in {out} has {done} epochs already; --epochs {config['epochs']} is fewer: "
                               "give more to train further, or drop --epochs")
            if config["epochs"] == done and not checkpoint.get("step"):
                config["out"] = str(out)
                write_json(out / "config.json", config)
                raise NothingToDo(f"nothing to do: the run already has {done} epochs in {out}; pass a larger "
                                  "--epochs to train further")
        else:
            if (out / "checkpoint.pt").exists():
                raise CLIError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
            _fill_in_defaults(model, config, defaults)
        config["model"], config["out"] = model, str(out)
        yield config, out, checkpoint
    except BaseException:
        release_run_folder(out, made)
        raise


def _fill_in_defaults(model, config, defaults):
    name = config["dataset"]
    if name.endswith(".npz"):
        tag = "npz" if "npz" in defaults else "mnist"
    elif name in defaults:
        tag = name
    elif name in DATASETS:
        raise CLIError(f"{model}.py has no settings for {name}; use one of {', '.join(defaults)} or a .npz file")
    else:
        raise unknown_dataset(name)
    for key, value in defaults[tag].items():
        if config.get(key) is None:
            config[key] = value


DATASETS = ("digits", "mnist", "omniglot", "cifar10", "svhn", "celeba", "sprites", "toy25", "ring8")


def unknown_dataset(name):
    if os.path.isdir(name):
        return CLIError(f"--dataset {name} is a folder: give a dataset's name, or a .npz file of its images "
                        "(see --help)")
    return CLIError(f"unknown dataset '{name}': use {', '.join(DATASETS[:-1])} or {DATASETS[-1]}, "
                    "or a path to a .npz file")


def save_settings(model, config, out, data, device, shown_dataset):
    """Print the settings that decide the result (resolved; the run folder's plumbing left out)
    and write config.json."""
    print(f"{model} on {shown_dataset or config['dataset']} ({len(data.x_train)} train / {len(data.x_val)} val / "
          f"{len(data.x_test)} test, {'points' if len(data.image_shape) == 1 else 'images'} "
          f"{'x'.join(map(str, data.image_shape))}), device {device}, "
          f"run folder {out}")
    for key in sorted(k for k in config if k not in PLUMBING):
        print(f"  {key:<24} {config[key]}")
    write_json(out / "config.json", config)


def require_labels(data, flag):
    """`flag` needs a class label for every image (train and test); else one CLIError line."""
    if data.num_classes < 2 or (data.y_train < 0).any() or (data.y_test < 0).any():
        raise CLIError(f"{flag} needs a class label for every image, and {data.name} has none")


def _resumed_config(out, given):
    """The saved settings, with --epochs (and --device, --save-every) taken from this command line.
    A flag left out is None (model_parser's defaults, store_true flags included); 0 and False
    (--seed 0, --sigma 0, --no-clip) are flags given, and are said to be ignored like any other."""
    saved = read_config(out, upgrade=False)
    for key, value in given.items():
        if key in RESUMABLE or value is None or _same_setting(saved.get(key), value):
            continue
        flag = "--" + key.replace("_", "-")
        kept = f"keeps its saved {saved[key]}" if key in saved else f"was saved before {flag} existed"
        print(f"warning: ignoring {_flag_text(flag, value)}: the resumed run {kept}", file=sys.stderr)
    for key in RESUMABLE:
        if given.get(key) is not None:
            saved[key] = given[key]
    return upgrade_config(saved)


def _same_setting(saved, value):
    """Equal and of the same kind: 0 is not False, nor 1 True (JSON keeps the difference); 3 is 3.0."""
    return saved == value and isinstance(saved, bool) == isinstance(value, bool)


def _flag_text(flag, value):
    """A flag as typed: --no-clip for clip False, --hidden 256 256 for a list, --lr 0.5."""
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {' '.join(map(str, value))}" if isinstance(value, (list, tuple)) else f"{flag} {value}"


def read_config(run_dir, upgrade=True):
    """RUN_DIR/config.json (upgraded to today's settings, see OLD_RUN_SETTINGS); damage is one line."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CLIError(f"{path} not found; is {run_dir} a run folder written by one of the model scripts?")
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict):
        raise CLIError(f"{path} is not the JSON of a run's settings; the run folder is damaged")
    check_config_types(config, path)
    return upgrade_config(config) if upgrade else config


# The types of the settings every script reads; a hand-edited config.json with another type (say,
# "epochs": "ten") is refused in one line instead of failing somewhere in training or evaluation.
SETTING_TYPES = {"epochs": int, "batch_size": int, "latent_dim": int, "seed": int, "save_every": int,
                 "lr": (int, float), "sigma": (int, float), "sample_steps": int, "M": int, "labels": int,
                 "clusters": (int, type(None)), "style_dim": int, "image_size": (int, type(None)),
                 "image_shape": list, "num_classes": int, "dataset": str, "data_dir": str, "model": str,
                 "encoder_hidden": list, "decoder_hidden": list, "discriminator_hidden": list,
                 "conv": bool, "clip": bool, "supervised": bool, "precision": str}


def check_config_types(config, path):
    for key, types in SETTING_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, types) or (isinstance(value, bool) and bool not in
                                                                 (types if isinstance(types, tuple) else (types,)))):
            raise CLIError(f"{path} has {key} = {json.dumps(value)}, which is not a "
                           f"{' or '.join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))}: "
                           "restore config.json as the script wrote it")


def lock_run_folder(out):
    """Make `out` (if need be) and hold it for the rest of this process: a second run on the same
    folder is refused at once, naming the first one's process id (written in .lock). The lock is
    the operating system's (fcntl.flock) on the folder itself, held by a descriptor this process
    keeps open: it dies with its process, however that ends, and deleting .lock cannot lift it.
    Then the temporary files of writes a killed run left are removed. Returns the outermost
    folder made here (None if `out` existed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; choose another --out")
    made = next((folder for folder in reversed([out, *out.parents]) if not folder.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = os.open(out, os.O_RDONLY) if fcntl is not None else None  # Windows: no flock, not protected
    except OSError as error:  # under a file, read-only, no such drive
        raise CLIError(f"cannot write the run folder {out} ({error.strerror or error}); choose another --out") \
            from None
    key = os.path.realpath(out)
    if key in _held_locks:  # this process's earlier run on the folder (tests run several) is over
        release_run_folder(out)
    try:
        if folder is not None:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        os.close(folder)
        try:
            holder = (out / LOCK_FILE).read_text().strip() or "unknown"
        except OSError:  # .lock deleted by hand: the folder is still held
            holder = "unknown"
        raise CLIError(f"{out} is in use by another run (process {holder}); wait for it to end, or choose "
                       "another --out") from None
    except OSError:  # a file system without locks: the run goes on, unprotected, as on Windows
        print(f"note: {out} cannot be locked on this file system; do not start a second run in it", file=sys.stderr)
    _held_locks[key] = folder, made
    try:
        (out / LOCK_FILE).write_text(f"{os.getpid()}\n")
    except OSError as error:
        release_run_folder(out, made)
        raise CLIError(f"cannot write the run folder {out} ({error.strerror or error}); choose another --out") \
            from None
    remove_leftovers(out, ("checkpoint.pt", "config.json", "log.csv"))
    remove_leftovers(out / "samples", ("*.png",))
    remove_leftovers(out, ("*.png",), older_than=3600)  # eval.py may be writing its pictures beside them now
    return made


def remove_leftovers(folder, names, older_than=0.0):
    """Delete the temporary files (.<name>.*.tmp) that atomic_path leaves when its process is killed
    mid-write (kill -9, a power cut): a checkpoint's is as large as the checkpoint. Those untouched
    for `older_than` seconds only, where another process may be writing one now."""
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime >= older_than:
                    tmp.unlink()
            except OSError:  # gone already, or not ours to delete
                pass


def release_run_folder(out, made=None):
    """Let go of the folder's lock; then delete the folders lock_run_folder made, from `out` up to
    `made`, as long as nothing but the lock file was written in them."""
    folder, _ = _held_locks.pop(os.path.realpath(out), (None, None))
    if folder is not None:
        os.close(folder)
    if made is None:
        return
    out, lock = Path(out), Path(out) / LOCK_FILE
    if lock.exists() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
        lock.unlink()
    for folder in [out, *out.parents]:
        if any(folder.iterdir()):
            break
        folder.rmdir()
        if folder == made:
            break


def discard_unstarted_runs():
    """After a refusal that came once the run folder was prepared (a check of the model's own, a
    network too large for memory), the folders of this process's runs that hold no checkpoint lose
    their config.json, and the folders made for them go: a refused run leaves nothing behind."""
    for key, (_, made) in list(_held_locks.items()):
        if not (Path(key) / "checkpoint.pt").exists():
            (Path(key) / "config.json").unlink(missing_ok=True)
            release_run_folder(key, made)


def print_done(out):
    """The last line of a training run: its folder and every file in it that a reader looks at."""
    pictures = sorted(path.name for path in Path(out).glob("*.png"))
    print(f"done: {out}/ " + ", ".join([*pictures, "samples/", "log.csv", "config.json", "checkpoint.pt"]))


# ---------------------------------------------------------------------------------------------
# Ctrl-C and the random number generators
# ---------------------------------------------------------------------------------------------


class StopOnCtrlC:
    """The first Ctrl-C (or SIGTERM, a scheduler's or `kill`'s request) asks the loop to stop after
    the current step and save; a second one stops now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def rng_state():
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _refuse_not_finite(path, checkpoint):
    """A checkpoint whose weights went NaN or infinite (saved by a version without check_finite_run)
    scores and trains as nothing: one line."""
    if isinstance(checkpoint.get("model_state"), dict) and not_finite(checkpoint["model_state"]):
        raise CLIError(f"{path} holds NaN or infinite weights ({not_finite(checkpoint['model_state'])} tensors): its "
                       "run went bad before it was saved; train it again, with a lower --lr")


def restore_checkpoint(run, checkpoint):
    """common.Run.track on --resume: the tracked networks, optimisers and schedules, and the loop's
    place, from the checkpoint. A checkpoint that does not fit them is one line."""
    _refuse_not_finite(run.out / "checkpoint.pt", checkpoint)
    try:
        checkpoint = upgrade_checkpoint(checkpoint, run.config)
        run.model.load_state_dict(checkpoint["model_state"])
        for name, optimizer in run.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        for name, scheduler in run.schedulers.items():
            scheduler.load_state_dict(checkpoint["schedulers"][name])
        run.epoch, run.step = checkpoint["epoch"], checkpoint["step"]
        run.elapsed, run.history = checkpoint["elapsed"], checkpoint["history"]
        run.saved_epoch = run.epoch
        run.perm = checkpoint["perm"]  # run.batches() moves it to the training set's device
        run.sums = {k: v.to(run.device) for k, v in checkpoint["sums"].items()}
    except (KeyError, RuntimeError, ValueError, TypeError) as error:  # an edited config.json, another version
        raise CLIError(f"{run.out / 'checkpoint.pt'} does not fit the run {run.out / 'config.json'} describes "
                       f"({first_line(error, 80)}): restore config.json as it was written, or start a new run in "
                       "another --out") from None


def resume_command(model, out):
    return f"python {model}.py --out {shlex.quote(str(out))} --resume"


# ---------------------------------------------------------------------------------------------
# Trained runs, loaded back (eval.py, and the README's "Using a trained model")
# ---------------------------------------------------------------------------------------------


class TrainedRun:
    """A trained run: its folder, config.json, model (in eval mode), and how far training got."""

    def __init__(self, path, config, model, epoch, step):
        self.path, self.config, self.model, self.epoch, self.step = path, config, model, epoch, step
        self.name = str(path)

    @property
    def unfinished(self):
        """None for a finished run, else where it stopped: "epoch k of n, step s"."""
        epochs = self.config.get("epochs")
        if self.step:
            return f"epoch {self.epoch + 1} of {epochs}, step {self.step}"
        return None if epochs is None or self.epoch >= epochs else f"epoch {self.epoch} of {epochs}"


def load_run(run_dir, device="cpu"):
    """A run folder -> its trained model, in eval mode on `device`, rebuilt from config.json and
    checkpoint.pt by the model script that wrote them. Every failure is one CLIError line.

        run = common.load_run("runs/daae-mnist")
        with torch.no_grad():
            z = run.model.encode(x)              # x: N x C x H x W images in [0, 1]
            x_rec, x_new = run.model.decode(z), run.model.sample(16)
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise CLIError(f"{run_dir} is not a folder: give run folders written by the model scripts "
                       "(e.g. runs/aae-digits)")
    config = read_config(path)
    missing = [key for key in ("model", "dataset", "data_dir", "image_shape") if key not in config]
    if missing:
        raise CLIError(f"{path / 'config.json'} lacks {', '.join(missing)}; the run folder is damaged")
    module = _model_module(config.get("model"), path / "config.json")
    checkpoint = load_checkpoint(path / "checkpoint.pt", config["model"], f"train it with {config['model']}.py")
    _refuse_not_finite(path / "checkpoint.pt", checkpoint)
    try:
        model = module.build_model(config)
        model.load_state_dict(checkpoint["model_state"])
    except KeyError as error:
        raise CLIError(f"{path / 'config.json'} or its checkpoint lacks {error}; the run folder is damaged "
                       f"or was written by another version of {config['model']}.py") from None
    except RuntimeError as error:  # the weights do not fit the networks config.json describes
        raise CLIError(f"{path / 'checkpoint.pt'} does not match {path / 'config.json'} "
                       f"({first_line(error)})") from None
    return TrainedRun(path, config, model.to(device).eval(), checkpoint.get("epoch"), checkpoint.get("step", 0))


def _model_module(name, config_path):
    """The model script `name`.py beside this file (config.json names it); nothing else is imported."""
    if not isinstance(name, str) or not name.isidentifier() or name in ("eval", "common", "machinery") \
            or not (Path(__file__).resolve().parent / f"{name}.py").is_file():
        raise CLIError(f"{config_path} names an unknown model {name!r}: there is no such model script "
                       "beside common.py (aae, daae, idaae, ...)")
    module = importlib.import_module(name)
    if not hasattr(module, "build_model"):
        raise CLIError(f"{name}.py has no build_model(config), so its runs cannot be rebuilt")
    return module


# ---------------------------------------------------------------------------------------------
# Dataset files: the cache, and .npz files checked before use
# ---------------------------------------------------------------------------------------------

def load_cached(name: str, data_dir: str, build) -> dict:
    """build()'s uint8 splits, saved to data_dir/cache/<name>.pt on the first call and read from it after."""
    path = os.path.join(data_dir, "cache", f"{name}.pt")
    if os.path.isfile(path):
        print(f"{name}: loading the cache {path} (delete it to rebuild from the raw files)")
        try:
            arrays = torch.load(path, weights_only=True)
            if isinstance(arrays, dict) and set(arrays) >= {"x_train", "y_train", "x_test", "y_test"}:
                return arrays
            reason = "not the splits of a dataset"
        except Exception as error:  # a truncated or damaged file: torch names many kinds of failure
            reason = first_line(error, 80)
        # The cache is only a copy of the raw files: rebuild it from them (or say which are missing).
        print(f"{name}: the cache {path} is damaged ({reason}); rebuilding it from the raw files", file=sys.stderr)
    remove_leftovers(os.path.dirname(path), (f"{name}.pt",), older_than=3600)  # of a killed caching
    arrays = build()
    try:  # atomically: an interrupted run never leaves half a cache behind
        save_atomically(arrays, path)
    except CLIError as error:  # a full disk: the run goes on, and the next one decodes the raw files again
        print(f"warning: {name}: not cached ({error})", file=sys.stderr)
    return arrays


def _npz_images(arrays: dict, key: str, path: str) -> torch.Tensor:
    x = arrays[key]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise CLIError(f"{key} in {path} has shape {x.shape}: expected N x H x W or N x C x H x W")
    # 1 to 4 channels: grey, grey and alpha, RGB, RGBA. More would be read as images of that many
    # channels, and fail when the first pictures are drawn.
    if x.shape[1] > 4 and x.shape[3] <= 4:
        raise CLIError(f"{key} in {path} has shape {x.shape}, channels last: transpose it to N x C x H x W "
                       "(numpy.transpose(x, (0, 3, 1, 2)))")
    if x.shape[1] > 4:
        raise CLIError(f"{key} in {path} has shape {x.shape}: {x.shape[1]} channels; expected N x C x H x W "
                       "with 1 to 4 channels (grey, grey and alpha, RGB, RGBA) or N x H x W")
    if x.dtype == np.uint8:
        return torch.from_numpy(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise CLIError(f"{key} in {path} is {x.dtype}: save images as uint8 (0-255) or as floats in [0, 1]")
    if x.size and not np.isfinite(x).all():
        raise CLIError(f"{key} in {path} has NaN or infinite pixels: replace them with values in [0, 1]")
    if x.size and not (x.min() >= 0 and x.max() <= 1):
        raise CLIError(f"{key} in {path} has values in [{x.min():g}, {x.max():g}]: scale the images to [0, 1] "
                       "or save them as uint8")
    return torch.from_numpy(x.astype(np.float32))


def _npz_labels(arrays: dict, key: str, n: int, path: str) -> torch.Tensor:
    y = arrays[key]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise CLIError(f"{key} in {path} has shape {y.shape} and dtype {y.dtype}: expected integers of shape ({n},), "
                       "one class label per image (-1 for none)")
    if y.size and y.min() < -1:
        raise CLIError(f"{key} in {path} has the label {y.min()}: labels are class numbers 0, 1, 2, ... "
                       "or -1 for an image without one")
    return torch.from_numpy(y.astype(np.int64))


NPZ_MAGIC, NPY_MAGIC = (b"PK\x03\x04", b"PK\x05\x06"), b"\x93NUMPY"  # a zip archive; a single numpy array


def _read_npz(path: str) -> dict:
    """The arrays of a .npz file; anything else (a .npy, text, a damaged archive) is one CLIError
    line. Never pickles: numpy's advice to load such a file unsafely is not passed on."""
    if os.path.isdir(path):
        raise CLIError(f"--dataset {path} is a folder, not a .npz file: save the images with numpy.savez")
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path} (a .npz with x_train, y_train, x_test, y_test and optionally "
                       "x_val, y_val)")
    with open(path, "rb") as f:
        start = f.read(6)
    if start.startswith(NPY_MAGIC):
        raise CLIError(f"{path} is a single array (.npy), not a .npz archive of named arrays: save the splits "
                       "with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    if not start.startswith(NPZ_MAGIC):
        raise CLIError(f"{path} is not a .npz file (numpy.savez writes a zip archive of arrays): save the splits "
                       "with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except ValueError as error:
        if "pickle" in str(error):  # an array of Python objects, which only an unsafe load reads
            raise CLIError(f"{path} holds arrays of Python objects: save numbers (uint8 images, integer labels) "
                           "with numpy.savez") from None
        reason = first_line(error, 80)
    except Exception as error:  # zipfile, zlib and EOF errors of a truncated or damaged archive
        reason = first_line(error, 80)
    raise CLIError(f"{path} is damaged or truncated ({reason}): write it again with numpy.savez")


def npz_splits(path: str) -> dict:
    """{"train": (x, y), "test": (x, y)[, "val": (x, y)]} of a .npz file, every array checked:
    images N x C x H x W, uint8 or floats in [0, 1]; labels integers, -1 for none."""
    arrays = _read_npz(path)
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise CLIError(f"{path} lacks {', '.join(missing)}: save x_train, y_train, x_test, y_test (and optionally "
                       "x_val, y_val) with numpy.savez")
    splits = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            x = _npz_images(arrays, f"x_{split}", path)
            splits[split] = (x, _npz_labels(arrays, f"y_{split}", len(x), path))
    for split, (x, _) in splits.items():
        if x.shape[1:] != splits["train"][0].shape[1:]:
            raise CLIError(f"x_{split} in {path} has images of shape {tuple(x.shape[1:])} but x_train has "
                           f"{tuple(splits['train'][0].shape[1:])}: every split needs the same C x H x W")
    # Checked now, not after an epoch: the pictures and eval.py need test images, and a validation
    # split taken from the training images needs two of them.
    for split, least in (("train", 2), ("val", 1), ("test", 1)):
        if split in splits and len(splits[split][0]) < least:
            raise CLIError(f"x_{split} in {path} has {len(splits[split][0])} images: it needs at least {least}")
    labels = torch.cat([y for _, y in splits.values()])
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if num_classes > len(labels):  # the class count is the largest label + 1: a stray id would make millions
        raise CLIError(f"{path} has the label {num_classes - 1}, which makes {num_classes} classes for "
                       f"{len(labels)} images: number the classes 0, 1, 2, ...")
    return splits


# Finding Omniglot where a user has it (common._build_omniglot)

OMNIGLOT_SETS = ("images_background", "images_evaluation")  # the training set; the unseen characters
OMNIGLOT_SMALL = "images_background_small1.zip"  # the 5-alphabet subset, split by benchmarks/make_omniglot_small.py


def omniglot_root(data_dir: str) -> str:
    """The folder that holds Omniglot's images_background/ (and images_evaluation/): data_dir, or
    torchvision's data_dir/omniglot-py/. The archives images_background.zip and
    images_evaluation.zip found there are unpacked first. The 5-alphabet subset's archive is
    named with the command that splits it. data_dir when none is found (common downloads there)."""
    for root in (data_dir, os.path.join(data_dir, "omniglot-py")):
        for name in OMNIGLOT_SETS:
            if not os.path.isdir(os.path.join(root, name)) and os.path.isfile(os.path.join(root, f"{name}.zip")):
                _unpack_omniglot_set(os.path.join(root, f"{name}.zip"), root, name)
        if any(os.path.isdir(os.path.join(root, name)) for name in OMNIGLOT_SETS):
            return root
    small = os.path.join(data_dir, OMNIGLOT_SMALL)
    if os.path.isfile(small):
        raise CLIError(f"{small} is Omniglot's 5-alphabet subset: split it into {data_dir} once with "
                       f"python benchmarks/make_omniglot_small.py --zip {small} --out {data_dir}")
    return data_dir


def _unpack_omniglot_set(archive: str, root: str, name: str):
    """Omniglot's <name>.zip (one top folder, <name>/) unpacked to root/<name>, whole or not at all."""
    print(f"omniglot: unpacking {archive}")
    try:
        with zipfile.ZipFile(archive) as opened, tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
            opened.extractall(tmp)
            if not os.path.isdir(os.path.join(tmp, name)):
                raise CLIError(f"{archive} has no {name}/ folder: it is not Omniglot's {name}.zip; download that "
                               "from https://github.com/brendenlake/omniglot (python/)")
            os.replace(os.path.join(tmp, name), os.path.join(root, name))
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise CLIError(f"cannot unpack {archive} ({first_line(error, 80)}): download it again, or free some "
                       "space") from None


# Reading Sprites' MATLAB files (common._build_sprites)


def read_sprites_character(path: str):
    """All frames (N x 3 x 60 x 60 uint8) and the attributes of one character's sprites_<n>.mat."""
    # A MATLAB v7.3 (HDF5) file: "sprites" holds references to 21 animations (5 actions x 4
    # viewpoints, and a last one), each a 10800 x frames matrix of 60 x 60 x 3 images in MATLAB's
    # column-major order, which HDF5 stores as frames x 10800; "labels" holds the attributes.
    import h5py  # an optional dependency: only Sprites needs it

    with h5py.File(path, "r") as f:
        animations = [f[reference][()] for reference in f["sprites"][()].ravel()]
        attributes = torch.from_numpy(f["labels"][()].ravel().astype(np.int64))
    frames = np.concatenate(animations)
    if frames.ndim != 2 or frames.shape[1] != 3 * 60 * 60:
        raise CLIError(f"unexpected sprites layout in {path}: animations of shape {frames.shape[1:]}, expected 10800 "
                       "values per frame")
    if frames.dtype != np.uint8:
        frames = np.round(frames * 255).astype(np.uint8)
    frames = frames.reshape(-1, 3, 60, 60).transpose(0, 1, 3, 2)  # (frame, channel, column, row) -> N x C x H x W
    return torch.from_numpy(np.ascontiguousarray(frames)), attributes.expand(len(frames), -1)


def sprites_index(folder: str):
    """The character files, sorted by number, and the 1-based character indices of each split."""
    characters = sorted((name for name in os.listdir(folder) if re.fullmatch(r"sprites_\d+\.mat", name)),
                        key=lambda name: int(name[len("sprites_"):-len(".mat")]))
    return characters, scipy.io.loadmat(os.path.join(folder, "sprites_splits.mat"))
