"""Semi-supervised, clustering and dimensionality-reducing adversarial autoencoders
(Makhzani, Shlens, Jaitly, Goodfellow, Frey, 2015), arXiv:1511.05644, Sections 5-7.

Section 5, semi-supervised classification (Figure 8). The encoder q(y, z | x) has one trunk and
two heads: a softmax y over K classes (the content) and a linear z (the style); the decoder
reconstructs x from [y, z]. D_cat tells one-hot samples of Cat(K) ("real") from the encoder's y
("fake"), D_gauss samples of N(0, I) from its z: y is pushed to one-hot vectors used equally often
(a class, not a style), z to a Gaussian with no gaps between classes, so that the class (which y
gives the decoder anyway) has no reason to stay in z, and z keeps the rest: the style. Each
mini-batch has three phases, each update with its own optimiser:

  (1) reconstruction:  min_{enc, dec}  BCE(x, dec(y, z)),  (y, z) = q(x)    on an unlabelled batch
  (2) regularisation:  max_{D_cat}   log D_cat(y~) + log(1 - D_cat(y)),     y~ ~ Cat(K)
                       max_{D_gauss} log D_gauss(z~) + log(1 - D_gauss(z)), z~ ~ N(0, I)
                       then  min_enc  -log D_cat(y) - log D_gauss(z)   (the encoder as the generator of both)
  (3) classification:  min_enc  -log q(y = label | x)                      on a labelled batch

Every image takes part in (1) and (2) unlabelled; only the --labels N labelled images (balanced
over the classes) show their labels, in (3). The test error is that of argmax q(y|x).

Section 6, unsupervised clustering (--labels 0): the same model without phase (3), y with K = 16 or
30 categories (--clusters): the game alone makes y a K-way clustering, which eval.py scores by the
paper's rule. Not the paper's: the discriminators' inputs get Gaussian noise (--discriminator-noise).

Section 7, dimensionality reduction (--reduce-dim n): the decoder sees c = y W_C + z, W_C a K x n
matrix whose rows are learned "cluster heads", z an n-D style code matched to N(0, I). An extra
cost, max(0, eta - ||W_C[i] - W_C[j]||) for every pair, pushes the heads apart. With n = 2 the
test codes c are Figure 11's scatter. Values marked "recalled" come from secondary sources
(summaries, citing papers, re-implementations), not from the paper; the authors released no code.

    python semi_supervised_aae.py                                 # digits, 100 labels, ~1 min
    python semi_supervised_aae.py --labels 0 --clusters 30        # digits, 30 clusters (Section 6)
    python semi_supervised_aae.py --reduce-dim 2 --labels 0 --clusters 20      # Figure 11c
    python semi_supervised_aae.py --dataset mnist --labels 1000                # Table 2
    python eval.py classification runs/semi_supervised_aae-digits       # the test error (or the cluster error)
"""

import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aae
import common
import machinery
import toy


# Section 5's appendix (recalled): 2 x 1000 ReLU units in every network, y and z 10-D, z ~ N(0, I), noise of
# std 0.3 on the autoencoder's input; SGD with momentum (reconstruction lr 0.01, cross-entropy and adversarial
# 0.1, divided by 10 after epoch 50, 5000 epochs). We take the re-implementations' Adam, which learns in tens
# of epochs, at 1e-3, also for the adversarial networks (why: docs/aae.md; the paper's adversarial rate is not
# below its reconstruction rate). Batch size: not recorded, 100. digits is a small setting of ours.
SECTION_5 = dict(style_dim=10, input_noise=0.3, input_dropout=0.0, batch_norm=False, discriminator_noise=0.0,
                 lr=1e-3, adversarial_lr=1e-3, epochs=100, init="glorot", beta1=0.9, grad_clip=0.0, clusters=None,
                 reduce_dim=0)  # clusters: one per class of the data
SEMI_SUPERVISED = {
    "digits": dict(hidden=[256, 256], discriminator_hidden=[256, 256], labels=100, batch_size=64, **SECTION_5),
    "mnist": dict(hidden=[1000, 1000], discriminator_hidden=[1000, 1000], labels=1000, batch_size=100, **SECTION_5),
}
# Points in the plane (ours): toy.NETWORKS' width and length, a 2-D style, no input noise or dropout (on two
# coordinates either hides the point), 10 labelled points per mode; clustering into as many clusters as modes.
TOY = dict(hidden=[128, 128], discriminator_hidden=[128, 128], batch_size=100, style_dim=2, input_noise=0.0,
           input_dropout=0.0, lr=1e-3, adversarial_lr=1e-3, epochs=5)
SEMI_SUPERVISED.update({name: dict(SECTION_5, **TOY, labels=10 * len(m)) for name, (m, _) in toy.MIXTURES.items()})
# Section 6's appendix (recalled): 2 x 3000 ReLU, z 5-D, 20 % dropout on the input, BatchNorm in the
# encoder, 1500 epochs. Not the paper's: 1000 units (--hidden 3000 is the recalled width; why: docs/aae.md,
# Section 6), and the discriminators' noise.
SECTION_6 = dict(style_dim=5, clusters=16, input_noise=0.0, input_dropout=0.2, batch_norm=True,
                 discriminator_noise=0.3, lr=1e-3, adversarial_lr=1e-3, epochs=100, init="glorot", beta1=0.9,
                 grad_clip=0.0, labels=0, reduce_dim=0)
# musyoku/adversarial-autoencoder, the public Chainer re-implementation, clusters with --hidden 1000 --no-batch-norm
# --input-dropout 0 --init normal --lr 1e-4 --adversarial-lr 1e-4 --beta1 0.1 --grad-clip 5 and our D noise; beyond
# flags, a 10-D z, a tanh decoder with the squared error, batch 64 and one Adam for both encoder updates (docs/aae.md).
CLUSTERING = {
    "digits": dict(hidden=[256, 256], discriminator_hidden=[256, 256], batch_size=64, **SECTION_6),
    "mnist": dict(hidden=[1000, 1000], discriminator_hidden=[1000, 1000], batch_size=100, **SECTION_6),
    **{name: dict(SECTION_6, **TOY, clusters=len(means)) for name, (means, _) in toy.MIXTURES.items()},
}
# Section 7 gives no threshold eta for the cluster-head cost: 4, two standard deviations of
# z ~ N(0, I) on each side, so that neighbouring clusters of codes y W_C + z barely overlap.
HEAD_DISTANCE = 4.0


# ---------------------------------------------------------------------------------------------
# Networks: an encoder with two heads, aae.py's decoder and discriminators; the losses (aae.py's, and Section 7's)
# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """q(y, z | x): a fully connected ReLU trunk (784-1000-1000 for MNIST), then two linear heads, the
    logits of y (K) and the style z; for clustering (Section 6, recalled) input dropout and BatchNorm."""

    def __init__(self, image_shape, hidden, clusters, style_dim, input_dropout=0.0, batch_norm=False):
        super().__init__()
        layers = [nn.Flatten(), nn.Dropout(input_dropout)]
        for n_in, n_out in zip([math.prod(image_shape), *hidden[:-1]], hidden):
            layers += [nn.Linear(n_in, n_out), *([nn.BatchNorm1d(n_out)] if batch_norm else []), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.y_head = nn.Linear(hidden[-1], clusters)
        self.z_head = nn.Linear(hidden[-1], style_dim)

    def forward(self, x):
        h = self.trunk(x)
        return self.y_head(h), self.z_head(h)  # logits of q(y|x), and z


class SemiSupervisedAAE(nn.Module):
    """The encoder, the decoder, D_cat and D_gauss (and W_C for Section 7); what eval.py uses:
    encode (the code the decoder sees), decode, sample, class_probabilities, sigma."""

    def __init__(self, image_shape, clusters, style_dim, hidden, discriminator_hidden, reduce_dim=0,
                 input_noise=0.0, input_dropout=0.0, batch_norm=False, init="glorot"):
        super().__init__()
        self.clusters, self.style_dim, self.reduce = clusters, style_dim, bool(reduce_dim)
        self.sigma = input_noise  # eval.py's reconstruction study corrupts the test images with it
        self.latent_dim = style_dim if self.reduce else clusters + style_dim  # what the decoder sees
        self.encoder = Encoder(image_shape, hidden, clusters, style_dim, input_dropout, batch_norm)
        self.decoder = aae.Decoder(image_shape, hidden, self.latent_dim)
        self.d_cat = aae.Discriminator(clusters, discriminator_hidden)
        self.d_gauss = aae.Discriminator(style_dim, discriminator_hidden)
        aae.init_weights(self, init)  # Glorot weights, zero biases, as aae.py, unless --init
        if self.reduce:
            # W_C: row k is cluster k's head. Started spread at the scale of the threshold.
            self.cluster_heads = nn.Parameter(HEAD_DISTANCE * torch.randn(clusters, style_dim))

    def code(self, y, z):
        """What the decoder sees: [y, z] (Sections 5 and 6) or y W_C + z (Section 7)."""
        return y @ self.cluster_heads + z if self.reduce else torch.cat([y, z], 1)

    def encode(self, x):
        logits, z = self.encoder(x)
        return self.code(F.softmax(logits, 1), z)

    def class_probabilities(self, x):
        """q(y|x): the softmax head."""
        return F.softmax(self.encoder(x)[0], 1)

    def decode(self, code):
        return self.decoder(code)

    def sample_categorical(self, n):
        """y ~ Cat(K), one-hot."""
        return F.one_hot(torch.randint(self.clusters, (n,), device=self.device()), self.clusters).float()

    def sample_prior(self, n):
        """The code of y ~ Cat(K) (one-hot) and z ~ N(0, I)."""
        return self.code(self.sample_categorical(n), torch.randn(n, self.style_dim, device=self.device()))

    def sample(self, n):
        """x = dec(y, z) with y ~ Cat(K) (one-hot) and z ~ N(0, I)."""
        return self.decode(self.sample_prior(n))

    def device(self):
        return next(self.parameters()).device


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return SemiSupervisedAAE(config["image_shape"], config["clusters"], config["style_dim"], config["hidden"],
                             config["discriminator_hidden"], config["reduce_dim"], config["input_noise"],
                             config["input_dropout"], config["batch_norm"], config["init"])


def head_distance_cost(heads, eta=HEAD_DISTANCE):
    """Section 7: sum over pairs i < j of max(0, eta - ||W_C[i] - W_C[j]||)."""
    i, j = torch.triu_indices(len(heads), len(heads), offset=1, device=heads.device)
    return F.relu(eta - (heads[i] - heads[j]).norm(dim=1)).sum()


def clip_gradients(max_norm, *networks):
    """Each network's gradient scaled down to L2 norm max_norm if longer (0: off), as musyoku's
    Chainer AAE clips each network before its step. Not the paper's."""
    for network in networks if max_norm else ():
        nn.utils.clip_grad_norm_(network.parameters(), max_norm)


# ---------------------------------------------------------------------------------------------
# The updates of a mini-batch (Section 5's three phases), and the step that orders them
# ---------------------------------------------------------------------------------------------


def reconstruction_update(model, optimizer, x, x_in, grad_clip=0.0):
    """(1) min_{enc, dec} BCE(x, dec(y, z)), (y, z) = q(x_in), on an unlabelled batch (the squared error
    for points), and Section 7's head cost: the paper does not say in which phase; W_C is the autoencoder's."""
    logits, z = model.encoder(x_in)
    x_logits = model.decoder.logits(model.code(F.softmax(logits, 1), z))
    reconstruction = common.reconstruction_loss(x_logits, x)
    losses, loss = {"reconstruction": reconstruction.detach()}, reconstruction
    if model.reduce:
        heads = head_distance_cost(model.cluster_heads)
        losses["head_distance"], loss = heads.detach(), loss + heads
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(grad_clip, model.encoder, model.decoder)
    optimizer.step()
    return losses


def discriminator_update(model, optimizer, x_in, discriminator_noise, grad_clip=0.0):
    """(2a) D_cat learns to tell one-hot samples of Cat(K) (real, 1) from the encoder's y (fake, 0),
    D_gauss samples of N(0, I) from its z: no shared weights, so one optimiser, two independent updates.
    Both see their inputs through Gaussian noise (not the paper's; musyoku's re-implementation has it):
    without it D_cat tells a softmax y from one-hot samples by its softness alone, the encoder answers
    with a saturated softmax that passes back no gradient, and clusters freeze (docs/aae.md, Section 6)."""
    with torch.no_grad():
        logits, z_fake = model.encoder(x_in)
        y_fake = F.softmax(logits, 1)
    y_real = model.sample_categorical(len(x_in))  # one-hot samples of Cat(K)
    z_real = torch.randn_like(z_fake)  # samples of N(0, I)
    d_cat = aae.discriminator_loss(*aae.real_and_fake_logits(
        model.d_cat, common.corrupt(y_real, discriminator_noise), common.corrupt(y_fake, discriminator_noise)))
    d_gauss = aae.discriminator_loss(*aae.real_and_fake_logits(
        model.d_gauss, common.corrupt(z_real, discriminator_noise), common.corrupt(z_fake, discriminator_noise)))
    optimizer.zero_grad(set_to_none=True)
    (d_cat + d_gauss).backward()
    clip_gradients(grad_clip, model.d_cat, model.d_gauss)
    optimizer.step()
    return {"d_cat": d_cat.detach(), "d_gauss": d_gauss.detach()}


def encoder_adversarial_update(model, optimizer, x_in, discriminator_noise, grad_clip=0.0):
    """(2b) The encoder, as the generator of both games, learns to fool the updated D_cat and D_gauss,
    frozen for this backward pass: only the gradient through them to y and z is needed, not their weights'."""
    with common.frozen(model.d_cat, model.d_gauss):
        logits, z = model.encoder(x_in)
        loss = (aae.encoder_adversarial_loss(model.d_cat(common.corrupt(F.softmax(logits, 1), discriminator_noise)))
                + aae.encoder_adversarial_loss(model.d_gauss(common.corrupt(z, discriminator_noise))))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(grad_clip, model.encoder)
        optimizer.step()
    return loss.detach()


def classification_update(model, optimizer, x_in, y, grad_clip=0.0):
    """(3) min_enc -log q(y = label | x) on a labelled batch: the trunk and the y head only."""
    logits, _ = model.encoder(x_in)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(grad_clip, model.encoder)
    optimizer.step()
    return loss.detach()


def train_step(model, optimizers, x, labelled, input_noise, discriminator_noise=0.0, grad_clip=0.0):
    """One mini-batch of Section 5: reconstruction, regularisation (the discriminators, then the encoder
    against them), classification if there are labelled images (Section 6 has none); `x` is unlabelled.
    The encoder sees x + input_noise * eps, one draw per phase. Returns detached losses (no host sync)."""
    losses = reconstruction_update(model, optimizers["reconstruction"], x, common.corrupt(x, input_noise), grad_clip)
    x_in = common.corrupt(x, input_noise)
    losses.update(discriminator_update(model, optimizers["discriminators"], x_in, discriminator_noise, grad_clip))
    losses["encoder_adversarial"] = encoder_adversarial_update(model, optimizers["encoder_adversarial"], x_in,
                                                               discriminator_noise, grad_clip)
    if labelled is not None:
        x_labelled, y_labelled = next(labelled)
        losses["cross_entropy"] = classification_update(model, optimizers["classification"],
                                                        common.corrupt(x_labelled, input_noise), y_labelled, grad_clip)
    return losses


def make_optimizers(model, lr, adversarial_lr, beta1=0.9):
    """One Adam optimiser per update of Section 5 (one for the two discriminators, which share no weights)."""
    encoder, decoder = list(model.encoder.parameters()), list(model.decoder.parameters())
    heads = [model.cluster_heads] if model.reduce else []
    betas = (beta1, 0.999)
    return {
        "reconstruction": common.adam(encoder + decoder + heads, lr, betas),
        "discriminators": common.adam([*model.d_cat.parameters(), *model.d_gauss.parameters()], adversarial_lr, betas),
        "encoder_adversarial": common.adam(encoder, adversarial_lr, betas),
        # The trunk and the y head: the cross-entropy has no gradient for the z head.
        "classification": common.adam([*model.encoder.trunk.parameters(), *model.encoder.y_head.parameters()], lr,
                                      betas),
    }


# ---------------------------------------------------------------------------------------------
# Pictures: samples (a class per column), reconstructions, Figure 9's clusters, Figure 11
# ---------------------------------------------------------------------------------------------


def save_clusters(model, x_test, path, per_row=10):
    """Figure 9: one row per cluster k, first its head dec(y_k, z = 0), then the first test
    images whose argmax q(y|x) is k (blank where it has fewer)."""
    device, k = model.device(), model.clusters
    heads = model.decode(model.code(torch.eye(k, device=device), torch.zeros(k, model.style_dim, device=device)))
    assigned = common.map_batches(model.class_probabilities, x_test, 500, device).argmax(1)
    rows = []
    for c in range(k):
        members = common.float_images(x_test[assigned == c][:per_row])
        blank = torch.zeros(per_row - len(members), *x_test.shape[1:])
        rows += [heads[c:c + 1].cpu(), members, blank]
    common.save_grid(torch.cat(rows), path, nrow=per_row + 1)


def save_pictures(model, run, fixed_z, epoch):
    """samples.png (and samples/epoch_NNN.png): one row per fixed style z, one column per class or cluster
    k, dec(y_k, z): along a row the style should stay and the class change (as the paper's Figure 7 for
    Section 4). Then clusters.png, reconstructions.png of ten test images, and code_space.png. Points
    in the plane: toy.save_pictures, and clusters.png (Figure 9), the test points by cluster."""
    out, data, k = run.out, run.data, model.clusters
    if toy.is_points(run.config["image_shape"]):
        toy.save_pictures(model, run, epoch, {"samples dec(y, z)": model.sample(2000)})
        return toy.save_clusters(model, data.x_test[:2000], out / "clusters.png")
    samples = aae.label_grid(lambda z, y: model.decode(model.code(F.one_hot(y, k).float(), z)), fixed_z, k)
    common.save_grid(samples, out / "samples" / f"epoch_{epoch:03d}.png", nrow=k)
    common.save_grid(samples, out / "samples.png", nrow=k)
    save_clusters(model, data.x_test, out / "clusters.png")
    x = common.float_images(data.x_test[:10].to(run.device))
    common.save_grid(torch.cat([x, model.decode(model.encode(x))]), out / "reconstructions.png", nrow=len(x))
    if model.reduce and model.style_dim == 2 and run.every_tenth(epoch):
        common.save_code_space(model, data.x_test, data.y_test, out / "code_space.png",  # Figure 11
                               marks=model.cluster_heads.detach().cpu())


# ---------------------------------------------------------------------------------------------
# Training: the labelled batches of phase (3) (N training images, balanced over the classes), the loop
# ---------------------------------------------------------------------------------------------


def labelled_batches(x, y, num_classes, batch_size):
    """Phase (3)'s batches, without end: batch_size // num_classes images of every class, uniformly with
    replacement, from the labelled images alone (x, y grouped by class, as labelled_subset gives them)."""
    in_class, per_class = len(x) // num_classes, max(1, batch_size // num_classes)
    start = torch.arange(num_classes, device=x.device)[:, None] * in_class  # row c: class c's block of images
    while True:
        index = (start + torch.randint(in_class, (num_classes, per_class), device=x.device)).flatten()
        yield x[index], y[index]


def train(run):
    config, data = run.config, run.data
    labelled = None
    if config["labels"]:
        index = common.labelled_subset(data.y_train, config["labels"], data.num_classes, config["seed"])
        labelled = labelled_batches(common.float_images(data.x_train[index]).to(run.device),
                                    data.y_train[index].to(run.device), data.num_classes, config["batch_size"])
        print(f"{len(index)} labelled images ({len(index) // data.num_classes} per class); the rest are unlabelled")
    unlabelled = torch.full((len(data.x_train),), -1)  # what phases (1) and (2) get for labels
    machinery.check_networks_fit(build_model, config, run.device, flags=("--hidden", "--image-size"))
    model = build_model(config).to(run.device)
    optimizers = make_optimizers(model, config["lr"], config["adversarial_lr"], config["beta1"])
    run.track(model, optimizers)
    fixed_z = torch.randn(10, config["style_dim"], device=run.device)

    for epoch in run.epochs():
        for x, _ in run.batches(data.x_train, unlabelled):
            with common.autocast(run):
                losses = train_step(model, optimizers, x, labelled, config["input_noise"],
                                    config["discriminator_noise"], config["grad_clip"])
            run.record(losses)
        if run.saving(epoch):
            with common.drawing(model):
                save_pictures(model, run, fixed_z, epoch)
            run.save_checkpoint()
    run.done()
    return model


# ---------------------------------------------------------------------------------------------
# Flags and main
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = machinery.model_parser("semi_supervised_aae", __doc__)
    parser.add_argument("--labels", type=int, help="labelled training images, balanced over the classes "
                        "(default: 100 on digits, 1000 on mnist); 0: unsupervised clustering (Section 6)")
    parser.add_argument("--clusters", type=machinery.at_least_two,
                        help="K, the size of y (default: the classes; 16 with --labels 0)")
    parser.add_argument("--style-dim", type=machinery.positive_int, help="size of z (default 10; 5 with --labels 0)")
    parser.add_argument("--reduce-dim", type=machinery.positive_int, help="Section 7: the decoder sees the n-D "
                        "code y W_C + z with learned cluster heads W_C (z is then n-D); 2 for Figure 11")
    parser.add_argument("--adversarial-lr", type=machinery.positive_float, help="learning rate of the discriminators "
                        "and of the encoder's adversarial update (default 1e-3; --lr sets the other two, default 1e-3)")
    parser.add_argument("--discriminator-noise", type=machinery.non_negative_float, help="std of the noise on what "
                        "D_cat and D_gauss see (not the paper's; 0.3 with --labels 0, against collapse; else 0)")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, help="BatchNorm in the encoder's "
                        "trunk (default: on with --labels 0, as Section 6's appendix, recalled; else off)")
    parser.add_argument("--input-dropout", type=machinery.fraction, help="dropout on the encoder's input "
                        "(default: 0.2 with --labels 0, Section 6's appendix, recalled; else 0)")
    parser.add_argument("--init", choices=tuple(aae.INITS), help="initial weights (aae.INITS; default glorot)")
    parser.add_argument("--beta1", type=machinery.fraction, help="Adam's beta1 in every optimiser (default 0.9, "
                        "Adam's own; musyoku's clustering: 0.1)")
    parser.add_argument("--grad-clip", type=machinery.non_negative_float, help="clip each network's gradient to "
                        "this L2 norm before its step (default 0: off; musyoku's clustering: 5)")
    parser.add_argument("--hidden", type=machinery.positive_int, help="units in each of the two hidden layers of "
                        "the encoder and decoder (default: 256 on digits, 1000 on mnist; Section 6 recalls 3000)")
    tables = {**SEMI_SUPERVISED, **{f"{name} with --labels 0:": row for name, row in CLUSTERING.items()}}
    machinery.describe_defaults(parser, {name: {**row, "hidden": row["hidden"][0]} for name, row in tables.items()})
    args = parser.parse_args(argv)
    if args.latent_dim is not None:
        raise machinery.CLIError("the code here is y and z: set --clusters and --style-dim (or --reduce-dim), "
                                 "not --latent-dim")
    if args.labels is not None and args.labels < 0:
        raise machinery.CLIError("--labels must be 0 (clustering) or a positive number of labelled images")
    if args.reduce_dim and args.style_dim not in (None, args.reduce_dim):
        raise machinery.CLIError("with --reduce-dim n the style z is n-D: drop --style-dim")
    if args.hidden is not None:
        args.hidden = [args.hidden] * 2  # both hidden layers
    return args


def fill_settings(config, data):
    """What depends on the data, before config.json is written: y's size (one category per class
    unless --clusters says), the labelled set --labels asks for (it must exist; else one CLIError
    line), and the code's size."""
    if config["clusters"] is None:  # semi-supervised: one category per class
        config["clusters"] = data.num_classes
    if config["labels"]:
        check_labels(config, data)
    config["latent_dim"] = config["style_dim"] if config["reduce_dim"] else config["clusters"] + config["style_dim"]


def check_labels(config, data):
    """The labelled set --labels asks for exists; else one CLIError line."""
    n, k = config["labels"], data.num_classes
    if k < 2 or (data.y_train < 0).any():
        raise machinery.CLIError(f"--labels {n} needs class labels, and {config['dataset']} has none: use "
                                 "--labels 0 for unsupervised clustering")
    if n > len(data.x_train):
        raise machinery.CLIError(f"--labels {n} is more than the {len(data.x_train)} training images")
    if n % k:
        raise machinery.CLIError(f"--labels {n} must be a multiple of the {k} classes, so that every class has as "
                                 "many labelled images")
    smallest = int(torch.bincount(data.y_train, minlength=k).min())
    if n // k > smallest:
        raise machinery.CLIError(f"--labels {n} asks for {n // k} images of each class, but the smallest class has "
                                 f"{smallest}")
    if config["clusters"] != k:
        raise machinery.CLIError(f"with labels, y has one slot per class: --clusters must be {k} (or left out)")


def main(argv=None):
    args = parse_args(argv)
    reduce = {"style_dim": args.reduce_dim} if args.reduce_dim else {}  # Section 7: z is n-D
    defaults = {name: {**row, **reduce} for name, row in (CLUSTERING if args.labels == 0 else SEMI_SUPERVISED).items()}
    variant = "-".join(part for part in ("clustering" if args.labels == 0 else None,
                                         f"reduce{args.reduce_dim}" if args.reduce_dim else None) if part)
    train(common.start_run("semi_supervised_aae", args, defaults, variant=variant or None, fill=fill_settings))


if __name__ == "__main__":
    machinery.cli(main)
