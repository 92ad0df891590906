"""The papers' figures, rebuilt by one command: each is drawn from a trained run in its paper's layout.

    python figures.py                               # trains what runs/figures lacks, then draws docs/figures
    python figures.py --runs runs/figures --out docs/figures --only daae-chain toy-models
    python figures.py --mnist path/to/mnist10k.npz  # the MNIST figures' data (default ./mnist10k.npz)
    python figures.py --omniglot data/omniglot-small  # the Omniglot chain's (default data/omniglot-small)
    python figures.py --workers 2                   # two runs trained at once (two cores)

RUNS holds every figure's run: the model script and its flags (the budget is the epochs there); a run
folder that already has its checkpoint is not trained again, so a second call only draws. The quick runs
are on scikit-learn's 8x8 digits (offline, a minute each on a CPU); the figures the papers show on MNIST
are drawn again from runs on mnist10k.npz (make_mnist10k.py makes it), the DAAE's chain on the Omniglot
subset too (benchmarks/make_omniglot_small.py); a figure whose data is missing is skipped, with a line
saying so. The 2-D toy of 25 Gaussians (toy.py) is drawn at 5,000 updates and at the ALI
paper's 200,000. docs/<paper>.md sets each figure beside the paper's and says what differs. Where a
model script draws the picture already (code spaces, manifolds, code histogram, toy pictures), this
file calls that function; here are only the layouts the run pictures lack (labelled rows and columns).
"""
import argparse
import concurrent.futures
import os
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

import aae
import common
import daae
import machinery

# The figures' runs: name -> (model script, flags). Budgets, on digits (20 updates an epoch, ALI's 13): the
# 2-D codes aae.py's 150 epochs, the other AAEs and the DAAE 50, the learned prior 30 (its conditional grids
# 100, its digits default), ALI 100; about a minute each on a CPU. On MNIST ({mnist}: the 8,000 training
# digits of mnist10k.npz, 125 updates an epoch at batch 64) the DAAE paper's MNIST networks: the 2-D codes
# (the AAE's and the VAE's of Figure 2) and the supervised AAE 20 epochs, its style 2-D as on digits (a 15-D
# style, the paper's, keeps the class at this budget: docs/aae.md), the clustering and the DAAE 50. On
# Omniglot ({omniglot}: the 4-alphabet subset at 28x28) the DAAE of docs/daae.md's "Omniglot on a CPU". These
# take 4-13 minutes each. The toy: toy.py's 5 epochs of 1,000 updates, as results/toy25, a minute each, and
# the ALI paper's 200,000 updates (200 epochs), as results/toy25-200k, 20-60 minutes each.
DATA_PATHS = {"mnist": "mnist10k.npz", "omniglot": "data/omniglot-small"}  # --mnist's and --omniglot's defaults
TOY = (("aae", "aae", ""), ("daae", "daae", ""), ("idaae", "idaae", ""), ("learned_prior_aae", "learned_prior_aae", ""),
       ("clustering", "semi_supervised_aae", " --labels 0"), ("ali", "ali", ""), ("vae", "vae", ""))
RUNS = {
    "aae-gaussian": ("aae", "--latent-dim 2 --epochs 150"),
    "aae-mixture": ("aae", "--prior mixture --latent-dim 2 --epochs 150"),
    "aae-mixture-labels": ("aae", "--prior mixture --latent-dim 2 --labels 500 --epochs 150"),
    "aae-swissroll-labels": ("aae", "--prior swissroll --latent-dim 2 --labels 500 --epochs 150"),
    "aae-supervised": ("aae", "--supervised --epochs 50"),
    "clustering": ("semi_supervised_aae", "--labels 0 --epochs 50"),
    "reduction": ("semi_supervised_aae", "--labels 0 --reduce-dim 2 --clusters 20 --epochs 50"),
    "daae": ("daae", "--epochs 50"),
    "lp-aae": ("learned_prior_aae", "--no-learned-prior --pixel-loss --no-decoder-in-prior-phase --epochs 30"),
    "lp": ("learned_prior_aae", "--epochs 30"),
    "lp-supervised": ("learned_prior_aae", "--setting supervised --epochs 100"),
    "lp-categorical": ("learned_prior_aae", "--setting categorical --epochs 100"),
    "ali": ("ali", "--epochs 100"),
    "mnist-aae-gaussian": ("aae", "--dataset {mnist} --latent-dim 2 --epochs 20"),
    "mnist-aae-mixture": ("aae", "--dataset {mnist} --prior mixture --latent-dim 2 --epochs 20"),
    "mnist-vae-gaussian": ("vae", "--dataset {mnist} --latent-dim 2 --epochs 20"),
    "mnist-vae-mixture": ("vae", "--dataset {mnist} --prior mixture --latent-dim 2 --epochs 20"),
    "mnist-aae-mixture-labels": ("aae", "--dataset {mnist} --prior mixture --latent-dim 2 --labels 2000 --epochs 20"),
    "mnist-aae-swissroll-labels": ("aae", "--dataset {mnist} --prior swissroll --latent-dim 2 --labels 2000 --epochs 20"),
    "mnist-aae-supervised": ("aae", "--dataset {mnist} --supervised --latent-dim 2 --epochs 20"),
    "mnist-clustering": ("semi_supervised_aae", "--dataset {mnist} --labels 0 --epochs 50"),
    "mnist-daae": ("daae", "--dataset {mnist} --epochs 50"),
    "omniglot-daae": ("daae", "--dataset omniglot --data-dir {omniglot} --image-size 28 --lr 1e-4 --adversarial-lr 4e-5 "
                              "--init he --sigma 0.25 --epochs 100"),
    **{f"toy-{name}": (script, "--dataset toy25" + extra) for name, script, extra in TOY},
    **{f"toy200k-{name}": (script, "--dataset toy25 --epochs 200 --save-every 20" + extra) for name, script, extra in TOY},
}


def run_argv(name, runs, data=None):
    """The flags that train the run `name` into runs/name (the model script's own command line); `data`
    names the MNIST file and the Omniglot folder (default: DATA_PATHS)."""
    return shlex.split(RUNS[name][1].format(**{**DATA_PATHS, **(data or {})})) + ["--out", str(Path(runs) / name)]


def train_missing(names, runs, data=None, workers=1):
    """Train the runs among `names` that have no checkpoint yet, `workers` at a time (one thread each;
    with several, each run's output goes to its folder's figures.log); a run stopped half way, or shorter
    than RUNS asks, is resumed. Returns the seconds each training took."""
    def missing(name):
        folder, flags = Path(runs) / name, shlex.split(RUNS[name][1])
        if not (folder / "checkpoint.pt").exists():
            return True
        run = machinery.load_run(folder)
        return run.unfinished or ("--epochs" in flags and run.epoch < int(flags[flags.index("--epochs") + 1]))

    def train(name):
        folder = Path(runs) / name
        resume = ["--resume"] if (folder / "checkpoint.pt").exists() else []
        command = [sys.executable, f"{Path(__file__).resolve().parent / RUNS[name][0]}.py"] + run_argv(name, runs, data) + resume
        print("training:", " ".join(command[1:]), flush=True)
        start = time.perf_counter()
        if workers == 1:
            failed = subprocess.run(command).returncode
        else:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "figures.log", "a") as log:
                failed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        if failed:
            raise machinery.CLIError(f"training {name} failed ({'above' if workers == 1 else folder / 'figures.log'}); "
                                     "fix it and run figures.py again")
        return name, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # threads that wait on the runs' processes
        return dict(pool.map(train, [name for name in dict.fromkeys(names) if missing(name)]))


def load(runs, name):
    """The trained run `name` and its test split (the run's own dataset)."""
    run = machinery.load_run(Path(runs) / name)
    return run, common.load_dataset(run.config["dataset"], run.config["data_dir"], run.config.get("image_size"))


def on(data, name):
    """A figure's run or PNG on `data`: the digits' name as it is, another's with "<data>-" before it."""
    return name if data == "digits" else f"{data}-{name}"


def code_spaces(runs, folders):
    """Each run's test codes over its prior, into its folder's code_space.png; returns the runs by folder."""
    trained = {}
    for folder in folders:
        trained[folder], dataset = load(runs, folder.name)
        common.save_code_space(trained[folder].model, dataset.x_test, dataset.y_test, folder / "code_space.png")
    return trained


# The captions' names of the data
DATA = {"digits": "8x8 digits, not MNIST", "mnist": "MNIST: 8,000 training digits of mnist10k.npz",
        "omniglot": "Omniglot: 4 alphabets at 28x28"}


# ---------------------------------------------------------------------------------------------
# Layouts: grids of images with labelled rows and columns, and pictures set side by side
# ---------------------------------------------------------------------------------------------


def draw_grid(axes, images, ncol, title, column_labels=None, row_labels=None, xlabel=None, ylabel=None):
    """`images` (N x C x H x W in [0, 1]) in rows of `ncol` on `axes`, the rows and columns named."""
    from torchvision.utils import make_grid

    images = common.float_images(images.detach().cpu()).float().clamp(0, 1)
    height, width = images.shape[-2:]
    grid = make_grid(images, nrow=ncol, padding=1, pad_value=1.0).permute(1, 2, 0).numpy()
    axes.imshow(grid, interpolation="nearest")
    nrow = -(-len(images) // ncol)
    axes.set_xticks([1 + (width + 1) * i + width / 2 for i in range(ncol)] if column_labels else [],
                    column_labels or [], fontsize=7)
    axes.set_yticks([1 + (height + 1) * i + height / 2 for i in range(nrow)] if row_labels else [],
                    row_labels or [], fontsize=7)
    axes.tick_params(length=0)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(xlabel or "", fontsize=8)
    axes.set_ylabel(ylabel or "", fontsize=8)


def save_grids(path, title, panels, size=0.4):
    """Panels (dicts of draw_grid's arguments) side by side under one title, a figure sized to their cells."""
    columns = sum(panel["ncol"] for panel in panels)
    rows = max(-(-len(panel["images"]) // panel["ncol"]) for panel in panels)
    figure = machinery.plt_figure(figsize=(size * columns + 1.2 * len(panels), size * rows + 1.2))
    for i, panel in enumerate(panels):
        draw_grid(figure.add_subplot(1, len(panels), i + 1), **panel)
    figure.suptitle(title, fontsize=10)
    machinery.save_figure(figure, path)


def side_by_side(path, title, pictures, rows=1, labels=None):
    """PNGs (drawn by the model scripts) in a grid of `rows`, each with its caption, one title above;
    `labels` name the rows (the toy's models)."""
    import matplotlib.image

    columns = -(-len(pictures) // rows)
    figure = machinery.plt_figure(figsize=(3.2 * columns, 3.2 * rows + 0.4))
    for i, (caption, picture) in enumerate(pictures):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.set_xticks([])
        axes.set_yticks([])
        for side in axes.spines.values():
            side.set_visible(False)
        if Path(picture).exists():
            axes.imshow(matplotlib.image.imread(picture), cmap="gray")  # grids of grey images: one channel
        axes.set_title(caption, fontsize=8)
        if labels and i % columns == 0:
            axes.set_ylabel(labels[i // columns], fontsize=10)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.2 * rows + 0.4)))  # the top 0.4 inch for the title
    machinery.save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# The figures: each takes the runs folder and the output folder and writes its PNG(s)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def aae_figure2(runs, out, data="digits", vae=False):
    """AAE Figure 2: test codes over the Gaussian (a) and the 10-Gaussian mixture (b), with `vae` the VAE's
    under the same priors (c, d); the mixture's manifold (e)."""
    models = ("aae", "vae") if vae else ("aae",)
    folders = {(model, prior): Path(runs) / on(data, f"{model}-{prior}") for model in models
               for prior in ("gaussian", "mixture")}
    trained, mixture = code_spaces(runs, folders.values()), folders["aae", "mixture"]
    common.save_manifold(trained[mixture].model, mixture / "manifold.png")
    panels = [(f"({letter}) {model.upper()}, prior " + ("N(0, I)" if prior == "gaussian" else "10-Gaussian mixture"),
               folders[model, prior] / "code_space.png")
              for letter, (model, prior) in zip("abcd", folders)]
    side_by_side(out / f"{on(data, 'aae-figure2')}.png", f"AAE Figure 2: 2-D codes of test digits ({DATA[data]})",
                 panels + [("(e) AAE: dec(z) on a grid of z, mixture prior", mixture / "manifold.png")])


@torch.no_grad()
def aae_figure4(runs, out, data="digits"):
    """AAE Figure 4: the label-conditioned discriminator puts each class on its own component (a) / segment (c)."""
    mixture, swissroll = Path(runs) / on(data, "aae-mixture-labels"), Path(runs) / on(data, "aae-swissroll-labels")
    labels = code_spaces(runs, (mixture, swissroll))[mixture].config["labels"]
    side_by_side(out / f"{on(data, 'aae-figure4')}.png",
                 f"AAE Figure 4: labels in the adversarial game ({labels} labelled; {DATA[data]})",
                 [("(a) 10-Gaussian mixture, one per class", mixture / "code_space.png"),
                  ("(c) swiss roll, one segment per class", swissroll / "code_space.png")])


@torch.no_grad()
def aae_figure7(runs, out, data="digits"):
    """AAE Figure 7: dec(one-hot(y), z), one row per style z, one column per class."""
    model = load(runs, on(data, "aae-supervised"))[0].model
    torch.manual_seed(0)
    z = model.sample_prior(10)
    save_grids(out / f"{on(data, 'aae-figure7')}.png", f"AAE Figure 7: style (rows) and content (columns), {data}",
               [dict(images=aae.label_grid(model.decode, z, 10), ncol=10, title="dec(one-hot(y), z)",
                     column_labels=[str(k) for k in range(10)], xlabel="label y",
                     ylabel="style z ~ N(0, I), one per row")])


@torch.no_grad()
def aae_figure9(runs, out, data="digits"):
    """AAE Figure 9: a row per cluster, its head dec(y_k, z = 0) first, then test images assigned to it."""
    run, dataset = load(runs, on(data, "clustering"))
    model, k, per_row = run.model, run.model.clusters, 10
    heads = model.decode(model.code(torch.eye(k), torch.zeros(k, model.style_dim)))
    assigned = common.map_batches(model.class_probabilities, dataset.x_test, 500, "cpu").argmax(1)
    rows = []
    for c in range(k):
        members = common.float_images(dataset.x_test[assigned == c][:per_row])
        rows += [heads[c:c + 1], members, torch.zeros(per_row - len(members), *members.shape[1:])]
    save_grids(out / f"{on(data, 'aae-figure9')}.png",
               f"AAE Figure 9: unsupervised clustering into {k} clusters ({DATA[data]})",
               [dict(images=torch.cat(rows), ncol=per_row + 1, title="cluster head, then test images argmax q(y|x) = k",
                     column_labels=["head"] + [""] * per_row, row_labels=[f"k={c}" for c in range(k)])])


@torch.no_grad()
def aae_figure11(runs, out):
    """AAE Figure 11: dimensionality reduction to 2-D, test codes and the cluster heads (crosses)."""
    run, data = load(runs, "reduction")
    common.save_code_space(run.model, data.x_test, data.y_test, out / "aae-figure11.png",
                           marks=run.model.cluster_heads.detach().cpu())


@torch.no_grad()
def daae_figures(runs, out, data="digits"):
    """DAAE: the Markov chain (x_0 = dec(z) beside steps 1-10), reconstructions of corrupted test
    images, and the histogram of codes over the prior."""
    run, dataset = load(runs, on(data, "daae"))
    model, steps = run.model, min(run.config["sample_steps"], 10)  # Omniglot runs 50: its first 10 drawn
    torch.manual_seed(0)
    chain = model.markov_chain_sample(10, steps)
    save_grids(out / f"{on(data, 'daae-chain')}.png",
               f"DAAE: sampling by the Markov chain x_t = dec(enc(x_{{t-1}} + noise)), {data}",
               [dict(images=torch.stack(chain, 1).flatten(0, 1), ncol=steps + 1, title="one chain per row",
                     column_labels=["x_0"] + [str(t) for t in range(1, steps + 1)],
                     xlabel="x_0 = dec(z), z ~ p(z), then chain step t")])
    x = common.float_images(dataset.x_test[:10])
    x_tilde = common.corrupt(x, model.sigma)
    save_grids(out / f"{on(data, 'daae-reconstructions')}.png", f"DAAE: reconstructions of corrupted test images, {data}",
               [dict(images=torch.cat([x, x_tilde.clamp(0, 1), model.decode(model.encode(x_tilde))]), ncol=len(x),
                     title="", row_labels=["x", f"x~ (sigma {model.sigma:g})", "dec(enc(x~))"])])
    daae.save_code_histogram(model, dataset.x_test[:2000], out / f"{on(data, 'daae-code_histogram')}.png")


@torch.no_grad()
def learned_prior_figures(runs, out):
    """Learned prior: the AAE's samples beside the learned prior's (Figure 8); the conditional grids
    of the supervised (Figure 10) and categorical (Figure 12) settings and their code spaces (11, 13)."""
    torch.manual_seed(0)
    panels = [dict(images=load(runs, name)[0].model.sample(100), ncol=10, title=title)
              for name, title in (("lp-aae", "AAE: dec(z), z ~ N(0, I)"), ("lp", "learned prior: dec(CG(z))"))]
    save_grids(out / "learned_prior-figure8.png", "Learned prior, Figure 8: samples", panels)
    for name, figure, code_figure in (("lp-supervised", 10, 11), ("lp-categorical", 12, 13)):
        run, data = load(runs, name)
        model = run.model
        grid = aae.label_grid(lambda z, s: model.decode(model.prior_code(z, s)), model.sample_noise(10), 10)
        save_grids(out / f"learned_prior-figure{figure}.png",
                   f"Learned prior, Figure {figure}: {run.config['setting']} setting",
                   [dict(images=grid, ncol=10, title="dec(CG(z, s))", column_labels=[str(k) for k in range(10)],
                         xlabel="label s" if figure == 10 else "category s", ylabel="noise z, one per row")])
        s = model.sample_labels(2000)
        common.save_code_space(model, data.x_test, data.y_test, out / f"learned_prior-figure{code_figure}.png",
                               prior=(model.prior_code(model.sample_noise(2000), s), s))


@torch.no_grad()
def ali_figures(runs, out):
    """ALI: reconstructions G_x(G_z(x)) under each test digit, and interpolations between two encodings."""
    run, data = load(runs, "ali")
    model = run.model
    x = common.float_images(data.x_test[:20])
    save_grids(out / "ali-reconstructions.png", "ALI: reconstructions of test digits",
               [dict(images=torch.cat([x[:10], model.decode(model.encode(x[:10])),
                                       x[10:], model.decode(model.encode(x[10:]))]), ncol=10, title="",
                     row_labels=["x", "G_x(G_z(x))"] * 2)])
    z1, z2 = model.encode(x[:10]), model.encode(x[10:])
    t = torch.linspace(0, 1, 8)[None, :, None]
    between = model.decode((z1[:, None] + t * (z2 - z1)[:, None]).flatten(0, 1)).unflatten(0, (10, 8))
    save_grids(out / "ali-interpolations.png", "ALI: interpolations between the codes of two test digits",
               [dict(images=torch.cat([x[:10, None], between, x[10:, None]], 1).flatten(0, 1), ncol=10, title="",
                     column_labels=["x_1"] + [f"{v:.2f}" for v in t.flatten().tolist()] + ["x_2"],
                     xlabel="G_x((1 - t) G_z(x_1) + t G_z(x_2)), t above")])


def toy_models(runs, out, updates=5000):
    """The 2-D toy, one row per model: samples, reconstructions and codes, as each run drew them."""
    prefix = "toy-" if updates == 5000 else "toy200k-"
    names = [f"{prefix}{name}" for name, _, _ in TOY if (Path(runs) / f"{prefix}{name}").is_dir()]
    def codes(folder):  # the clustering's code is a cluster and a style: its picture is the points by cluster
        return ("codes", folder / "code_space.png") if (folder / "code_space.png").exists() else \
            ("test points by cluster", folder / "clusters.png")
    pictures = [picture for name in names for picture in (
        ("samples over the test points", Path(runs) / name / "samples.png"),
        ("reconstructions", Path(runs) / name / "reconstructions.png"), codes(Path(runs) / name))]
    side_by_side(out / ("toy-models.png" if updates == 5000 else "toy-models-200k.png"),
                 f"The 2-D toy (25 Gaussians), {updates:,} updates each", pictures,
                 rows=len(names), labels=[name.removeprefix(prefix) for name in names])


def overview(runs, out):
    """The README's picture: AAE and DAAE figures on MNIST and Omniglot where drawn (else on digits) beside
    two toy models at the paper's length (else at 5,000 updates); a picture not drawn yet is left blank."""
    def drawn(*paths):
        return next((path for path in paths if Path(path).exists()), paths[-1])
    runs = Path(runs)
    toy = "toy200k" if (runs / "toy200k-ali" / "samples.png").exists() else "toy"
    side_by_side(out / "overview.png", "Adversarial autoencoders, one file per model (docs/figures.md)",
                 [("AAE: test codes, one mixture component per label",
                   drawn(runs / "mnist-aae-mixture-labels" / "code_space.png", runs / "aae-mixture-labels" / "code_space.png")),
                  ("DAAE: x_0, then 10 steps of the chain", drawn(out / "mnist-daae-chain.png", out / "daae-chain.png")),
                  ("AAE: style (rows), content (columns)", drawn(out / "mnist-aae-figure7.png", out / "aae-figure7.png")),
                  ("toy: ALI samples", runs / f"{toy}-ali" / "samples.png"),
                  ("toy: DAAE x_0 (blue), chain (red)", runs / f"{toy}-daae" / "samples.png"),
                  ("DAAE on Omniglot: x_0, then the chain",
                   drawn(out / "omniglot-daae-chain.png", out / "daae-chain.png"))], rows=2)


# figure -> (its function, the runs it draws from, the PNGs it writes)
FIGURES = {
    "aae-figure2": (aae_figure2, ["aae-gaussian", "aae-mixture"], ["aae-figure2.png"]),
    "aae-figure4": (aae_figure4, ["aae-mixture-labels", "aae-swissroll-labels"], ["aae-figure4.png"]),
    "aae-figure7": (aae_figure7, ["aae-supervised"], ["aae-figure7.png"]),
    "aae-figure9": (aae_figure9, ["clustering"], ["aae-figure9.png"]),
    "aae-figure11": (aae_figure11, ["reduction"], ["aae-figure11.png"]),
    "daae": (daae_figures, ["daae"], ["daae-chain.png", "daae-reconstructions.png", "daae-code_histogram.png"]),
    "learned_prior": (learned_prior_figures, ["lp-aae", "lp", "lp-supervised", "lp-categorical"],
                      [f"learned_prior-figure{k}.png" for k in (8, 10, 11, 12, 13)]),
    "ali": (ali_figures, ["ali"], ["ali-reconstructions.png", "ali-interpolations.png"]),
    **{f"mnist-{figure}": (partial(draw, data="mnist"), [f"mnist-{name}" for name in names],
                           [f"mnist-{png}" for png in pngs]) for figure, draw, names, pngs in (
        ("aae-figure2", partial(aae_figure2, vae=True), ["aae-gaussian", "aae-mixture", "vae-gaussian", "vae-mixture"],
         ["aae-figure2.png"]),
        ("aae-figure4", aae_figure4, ["aae-mixture-labels", "aae-swissroll-labels"], ["aae-figure4.png"]),
        ("aae-figure7", aae_figure7, ["aae-supervised"], ["aae-figure7.png"]),
        ("aae-figure9", aae_figure9, ["clustering"], ["aae-figure9.png"]),
        ("daae", daae_figures, ["daae"], ["daae-chain.png", "daae-reconstructions.png", "daae-code_histogram.png"]))},
    "omniglot-daae": (partial(daae_figures, data="omniglot"), ["omniglot-daae"],
                      [f"omniglot-daae-{png}.png" for png in ("chain", "reconstructions", "code_histogram")]),
    "toy-models": (toy_models, [f"toy-{name}" for name, _, _ in TOY], ["toy-models.png"]),
    "toy-models-200k": (partial(toy_models, updates=200_000), [f"toy200k-{name}" for name, _, _ in TOY],
                        ["toy-models-200k.png"]),
    "overview": (overview, ["aae-mixture-labels", "aae-supervised", "daae", "toy-ali", "toy-daae"], ["overview.png"]),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/figures", help="the figures' run folders (trained when missing)")
    parser.add_argument("--out", default="docs/figures", help="where the PNGs are written")
    parser.add_argument("--mnist", default=DATA_PATHS["mnist"],
                        help="the MNIST figures' data, made by make_mnist10k.py (default mnist10k.npz)")
    parser.add_argument("--omniglot", default=DATA_PATHS["omniglot"],
                        help="the Omniglot chain's data, made by benchmarks/make_omniglot_small.py "
                             "(default data/omniglot-small)")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="these figures only (default: all)")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, one thread each (default 1; 2 on two cores)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"mnist": str(Path(args.mnist).resolve()), "omniglot": str(Path(args.omniglot).resolve())}
    makes = {"mnist": "python make_mnist10k.py` or name it with --mnist",
             "omniglot": "python benchmarks/make_omniglot_small.py --zip images_background_small1.zip "
                         f"--out {args.omniglot}` (docs/daae.md) or name it with --omniglot"}
    figures = args.only or list(FIGURES)
    for name in ("mnist", "omniglot"):
        needing = [figure for figure in figures if figure.startswith(f"{name}-")]
        if needing and not Path(data[name]).exists():
            message = f"{getattr(args, name)} not found: make it with `{makes[name]}"
            if args.only:
                raise machinery.CLIError(message)
            print(f"the {', '.join(needing)} figures are skipped ({message})", flush=True)
            figures = [figure for figure in figures if figure not in needing]
    if args.workers < 1:
        raise machinery.CLIError(f"--workers {args.workers}: give 1 or more")
    start = time.perf_counter()
    trained = train_missing([name for figure in figures for name in FIGURES[figure][1]], args.runs, data, args.workers)
    if trained:
        print(f"trained in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in trained.items()))
    for figure in figures:
        FIGURES[figure][0](args.runs, out)
        print(f"{figure}: drawn", flush=True)
    print(f"figures written to {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    machinery.cli(main)
