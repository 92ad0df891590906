"""The toy datasets: points in the plane, drawn from a mixture of Gaussians whose component is each
point's label, and the pictures of a run on them. Every model file trains on them (--dataset toy25
or ring8) with small networks, in under a minute on a CPU, and eval.py's modes study scores them
as the ALI paper does. Here a sample, a code and a reconstruction are each a point to draw.

toy25 is the ALI paper's 2-D toy ("Importance of learning inference jointly with generation"): 25
Gaussians on a 5 x 5 grid. ring8 is the ring of 8 Gaussians of the unrolled-GAN paper (Metz et al.,
2017, arXiv:1611.02163), which later GAN papers use.
"""

import math
import shutil

import torch

import machinery

# (means, std) of each mixture, its components equally likely. toy25: the ALI authors' means
# {-4, -2, 0, 2, 4}^2 and std 0.05 (github.com/IshmaelBelghazi/ALI, experiments/ali_mixture.py: MEANS,
# VARIANCES = 0.05^2 I, PRIORS = None). ring8: radius 2 and std 0.02, as later papers use it (the
# unrolled-GAN authors' demo notebook has radius 1, std 0.01).
MIXTURES = {
    "toy25": (torch.tensor([[i, j] for i in range(-4, 5, 2) for j in range(-4, 5, 2)], dtype=torch.float32), 0.05),
    "ring8": (2 * torch.stack([torch.cos(torch.arange(8) * math.pi / 4), torch.sin(torch.arange(8) * math.pi / 4)], 1),
              0.02),
}
SPLITS = (100_000, 10_000, 10_000)  # ALI trained on 100,000 points and reconstructed 10,000 held out
# The model files' networks for points (ours): the depths of the ALI authors' toy networks (two hidden
# layers in the encoder, four in the decoder, three in D; experiments/ali_mixture.py) at 128 units
# (theirs: 400, and 200 in D), a 2-D code, and 5 epochs of 1,000 updates at 1e-3: under a minute on a
# CPU, where the authors' ALI ran 200,000 updates at 1e-4.
NETWORKS = dict(encoder_hidden=[128, 128], decoder_hidden=[128] * 4, discriminator_hidden=[128] * 3, latent_dim=2,
                lr=1e-3, batch_size=100, epochs=5)


def is_points(shape) -> bool:
    """Whether data of this shape (of one example) are points in the plane, not images."""
    return len(shape) == 1


def load(name):
    """[(x, y) of train, validation, test]: N x 2 float32 points, each labelled by its component, the
    same on every run (seed 0)."""
    means, std = MIXTURES[name]
    generator = torch.Generator().manual_seed(0)
    splits = []
    for n in SPLITS:
        component = torch.randint(len(means), (n,), generator=generator)
        splits.append((means[component] + std * torch.randn(n, 2, generator=generator), component))
    return splits


def save_pictures(model, run, epoch, samples, n_lines=300):
    """At every saved epoch: samples.png (and samples/epoch_NNN.png), the test points with each set of
    `samples` ({label: N x 2 points}) over them; reconstructions.png, test points joined by a line to
    dec(enc(x)); for 2-D codes, code_space.png, the test codes over the prior, coloured by mode. Every
    picture keeps one frame, so that epochs and models compare; far-off samples fall outside it."""
    x_test, y_test, out = run.data.x_test[:2000], run.data.y_test[:2000], run.out
    means = MIXTURES[run.config["dataset"]][0]
    lim = 1.5 * float(means.abs().max())
    figure, axes = new_axes()
    axes.scatter(x_test[:, 0], x_test[:, 1], s=3, c="lightgrey", label="test points")
    for (label, points), colour in zip(samples.items(), ("tab:blue", "tab:red")):
        axes.scatter(points[:, 0].cpu(), points[:, 1].cpu(), s=2, c=colour, alpha=0.5, label=label)
    axes.scatter(means[:, 0], means[:, 1], marker="+", c="black", s=30, label="modes")
    outside = sum(int((points.abs() > lim).any(1).sum()) for points in samples.values())
    axes.set(xlim=(-lim, lim), ylim=(-lim, lim),
             title=f"{run.config['dataset']}: samples, epoch {epoch}" + (f" ({outside} outside)" if outside else ""))
    axes.legend(fontsize=7, loc="upper right", markerscale=3)
    machinery.save_figure(figure, out / "samples" / f"epoch_{epoch:03d}.png")
    with machinery.atomic_path(out / "samples.png") as tmp:
        shutil.copyfile(out / "samples" / f"epoch_{epoch:03d}.png", tmp)

    x = x_test[:n_lines].to(run.device)
    x_rec, x = model.decode(model.encode(x)).cpu(), x.cpu()
    figure, axes = new_axes()
    axes.plot(torch.stack([x[:, 0], x_rec[:, 0]]), torch.stack([x[:, 1], x_rec[:, 1]]), c="grey", linewidth=0.5)
    axes.scatter(x[:, 0], x[:, 1], s=4, c="black", label="test points x")
    axes.scatter(x_rec[:, 0], x_rec[:, 1], s=4, c="tab:red", label="dec(enc(x))")
    axes.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"reconstructions, epoch {epoch}")
    axes.legend(fontsize=7, loc="upper right", markerscale=2)
    machinery.save_figure(figure, out / "reconstructions.png")

    if getattr(model, "latent_dim", None) == 2:
        z, prior = model.encode(x_test.to(run.device)).cpu(), model.sample_prior(2000).cpu()
        figure, axes = new_axes()
        axes.scatter(prior[:, 0], prior[:, 1], s=2, c="lightgrey")
        by_mode(figure, axes, z, y_test, len(means), "mode")
        axes.set_title(f"test codes over the prior (grey), epoch {epoch}")
        machinery.save_figure(figure, out / "code_space.png")


def save_clusters(model, x, path):
    """The points coloured by their cluster, argmax q(y|x) (semi_supervised_aae.py, Section 6)."""
    assigned = model.class_probabilities(x.to(model.device())).argmax(1).cpu()
    figure, axes = new_axes()
    by_mode(figure, axes, x, assigned, model.clusters, "cluster")
    axes.set_title(f"test points by cluster ({len(assigned.unique())} of {model.clusters} used)")
    machinery.save_figure(figure, path)


def new_axes():
    figure = machinery.plt_figure(figsize=(6, 6))
    axes = figure.add_subplot(1, 1, 1)
    axes.set_aspect("equal")
    return figure, axes


def by_mode(figure, axes, points, labels, k, word):
    """A scatter of points coloured by their label (of k), with its colour bar."""
    drawn = axes.scatter(points[:, 0], points[:, 1], s=4, c=labels, cmap="nipy_spectral", vmin=-0.5, vmax=k - 0.5)
    figure.colorbar(drawn, ax=axes, label=word)
