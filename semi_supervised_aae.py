"""Semi-supervised, clustering and dimensionality-reducing adversarial autoencoders
(Makhzani, Shlens, Jaitly, Goodfellow, Frey, 2015, arXiv 1511.05644, Sections 5-7).

Section 5, semi-supervised classification (Figure 8). The encoder q(y, z | x) has one trunk and
two heads: a softmax y over K classes (the content) and a linear z (the style). The decoder
reconstructs x from [y, z]. Two adversarial networks shape the two heads:

  D_cat    tells one-hot samples of Cat(K) ("real") from the encoder's y ("fake"): y is pushed
           towards one-hot vectors, used equally often, so it can hold a class and not a style;
  D_gauss  tells samples of N(0, I) from the encoder's z: z is pushed towards a Gaussian, with
           no gaps between classes, so the class (which y gives the decoder anyway) has little
           reason to stay in z, and z keeps what y does not say: the style.

Each mini-batch has three phases, each update with its own optimiser (Section 5):

  (1) reconstruction:  min_{enc, dec}  BCE(x, dec(y, z)),  (y, z) = q(x)    on an unlabelled batch
  (2) regularisation:  max_{D_cat}   log D_cat(y~) + log(1 - D_cat(y)),     y~ ~ Cat(K)
                       max_{D_gauss} log D_gauss(z~) + log(1 - D_gauss(z)), z~ ~ N(0, I)
                       then  min_enc  -log D_cat(y) - log D_gauss(z)   (the generator of both games)
  (3) semi-supervised classification:
                       min_enc  -log q(y = label | x)                      on a labelled batch

Every image takes part in (1) and (2) unlabelled; only the --labels N labelled images (balanced
over the classes) ever show their labels, in (3). The test error is that of argmax q(y|x).

Section 6, unsupervised clustering (--labels 0): the same model without phase (3), and y with
K = 16 or 30 categories (--clusters). The adversarial game alone makes y a K-way clustering;
eval.py scores it as the paper does: each cluster takes the label of the one validation image
it is most confident about, and every test image the label of its argmax cluster. Here, and not
in the paper, the discriminators see their inputs through Gaussian noise (--discriminator-noise
0.3, see instance_noise): without it the clusters froze early, most of them unused.

Section 7, dimensionality reduction (--reduce-dim n): the decoder sees the n-D code

    c = y W_C + z,   W_C a K x n matrix whose rows are learned "cluster heads",

z an n-D style code matched to N(0, I), y as above. An extra cost pushes the heads apart:
for every pair, max(0, eta - ||W_C[i] - W_C[j]||), zero once they are eta apart. With n = 2
the test codes c are Figure 11's scatter.

The appendix values below come from secondary sources (summaries, citing papers and public
re-implementations), not from the paper: each one this code depends on is marked "recalled"
in a comment. The authors released no code.

    python semi_supervised_aae.py                                 # digits, 100 labels, ~1 min
    python semi_supervised_aae.py --labels 0                      # digits, 16 clusters (Section 6)
    python semi_supervised_aae.py --labels 0 --clusters 30        # digits, 30 clusters
    python semi_supervised_aae.py --reduce-dim 2 --labels 0 --clusters 20      # Figure 11c
    python semi_supervised_aae.py --dataset mnist --labels 1000                # Table 2
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aae
import common

# Section 5's appendix (recalled): 2 x 1000 ReLU units in every network, y and z 10-D, z ~ N(0, I),
# Gaussian noise of std 0.3 on the autoencoder's input. The paper trains with SGD and momentum
# (reconstruction lr 0.01, cross-entropy and adversarial 0.1, divided by 10 after epoch 50, 5000
# epochs); the re-implementations converge on Adam, which learns in tens of epochs instead of
# thousands: we take that reading, at 1e-3. Most of them give the adversarial networks 1e-4; with
# it our D_gauss won (its loss fell to 0.07 on MNIST), z kept the class, and samples.png showed
# one digit per row instead of one per column. The paper's own adversarial rate is not below its
# reconstruction rate (0.1 against 0.01), so every optimiser here uses 1e-3 (--adversarial-lr).
# The batch size is not recorded: 100. digits is a small setting of ours.
SEMI_SUPERVISED = {
    "digits": dict(hidden=[256, 256], discriminator_hidden=[256, 256], style_dim=10, labels=100, input_noise=0.3,
                   input_dropout=0.0, batch_norm=False, discriminator_noise=0.0, lr=1e-3, adversarial_lr=1e-3,
                   batch_size=64, epochs=100),
    "mnist": dict(hidden=[1000, 1000], discriminator_hidden=[1000, 1000], style_dim=10, labels=1000,
                  input_noise=0.3, input_dropout=0.0, batch_norm=False, discriminator_noise=0.0, lr=1e-3,
                  adversarial_lr=1e-3, batch_size=100, epochs=100),
}
# Section 6's appendix (recalled): 2 x 3000 ReLU, z 5-D, 20 % dropout on the input, BatchNorm in the
# encoder, 1500 epochs. The BatchNorm matters: without it, 16 clusters on digits collapsed to three
# in use (error 69 % by the paper's rule after 100 epochs), with it 43 % (seven in use). The
# discriminators keep Section 5's 1000 units (the record gives 3000 for "the networks" of the
# autoencoder; 3000-unit discriminators on 5- and 16-D inputs would triple the cost of a step).
# discriminator_noise is not the paper's (see instance_noise). Without it, 16 clusters on digits kept
# 6 or 7 in use from epoch 10 to epoch 100 (error 41-54 %); with it, 13 to 15 were in use at epoch
# 100 and the error was 22-28 % (seeds 0-2).
CLUSTERING = {
    "digits": dict(hidden=[256, 256], discriminator_hidden=[256, 256], style_dim=5, clusters=16, input_noise=0.0,
                   input_dropout=0.2, batch_norm=True, discriminator_noise=0.3, lr=1e-3, adversarial_lr=1e-3,
                   batch_size=64, epochs=100),
    "mnist": dict(hidden=[3000, 3000], discriminator_hidden=[1000, 1000], style_dim=5, clusters=16,
                  input_noise=0.0, input_dropout=0.2, batch_norm=True, discriminator_noise=0.3, lr=1e-3,
                  adversarial_lr=1e-3, batch_size=100, epochs=100),
}
# Section 7 gives no threshold eta for the cluster-head cost: 4, two standard deviations of
# z ~ N(0, I) on each side, so that neighbouring clusters of codes y W_C + z barely overlap.
HEAD_DISTANCE = 4.0


# ---------------------------------------------------------------------------------------------
# Networks: an encoder with two heads, aae.py's decoder and discriminators
# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """q(y, z | x): a fully connected ReLU trunk (784-1000-1000 for MNIST), then two linear
    heads, the logits of the softmax y (K) and the style z. For clustering (Section 6's
    appendix, recalled): dropout on the input and BatchNorm after each hidden layer."""

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
                 input_noise=0.0, input_dropout=0.0, batch_norm=False):
        super().__init__()
        self.clusters, self.style_dim, self.reduce = clusters, style_dim, bool(reduce_dim)
        self.sigma = input_noise  # eval.py's reconstruction study corrupts the test images with it
        self.latent_dim = style_dim if self.reduce else clusters + style_dim  # what the decoder sees
        self.encoder = Encoder(image_shape, hidden, clusters, style_dim, input_dropout, batch_norm)
        self.decoder = aae.Decoder(image_shape, hidden, self.latent_dim)
        self.d_cat = aae.Discriminator(clusters, discriminator_hidden)
        self.d_gauss = aae.Discriminator(style_dim, discriminator_hidden)
        self.apply(aae.lasagne_init)  # Glorot weights, zero biases, as aae.py (see lasagne_init)
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

    def sample_prior(self, n):
        """y ~ Cat(K) (one-hot), z ~ N(0, I)."""
        device = self.decoder_device()
        return self.sample_categorical(n, device), torch.randn(n, self.style_dim, device=device)

    def sample_categorical(self, n, device):
        return F.one_hot(torch.randint(self.clusters, (n,), device=device), self.clusters).float()

    def sample(self, n):
        """x = dec(y, z) with (y, z) from the priors."""
        return self.decode(self.code(*self.sample_prior(n)))

    def decoder_device(self):
        return next(self.decoder.parameters()).device


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return SemiSupervisedAAE(config["image_shape"], config["clusters"], config["style_dim"], config["hidden"],
                             config["discriminator_hidden"], config["reduce_dim"], config["input_noise"],
                             config["input_dropout"], config.get("batch_norm", False))


# ---------------------------------------------------------------------------------------------
# The labelled images: N of the training set, balanced over the classes
# ---------------------------------------------------------------------------------------------


def labelled_subset(y_train, n, num_classes, seed):
    """Indices of n training images, n / num_classes of each class, grouped by class; a fixed
    draw for each seed (eval.py draws the same one again for the baselines)."""
    per_class = n // num_classes
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        of_class = (y_train == c).nonzero().squeeze(1)
        chosen.append(of_class[torch.randperm(len(of_class), generator=generator)[:per_class]])
    return torch.cat(chosen)


class LabelledBatches:
    """Balanced labelled batches for phase (3): each draws per_class images of every class,
    uniformly with replacement, from the labelled images alone (held grouped by class)."""

    def __init__(self, x, y, num_classes, batch_size, device):
        self.x, self.y = x.to(device), y.to(device)
        self.num_classes, self.in_class = num_classes, len(x) // num_classes
        self.per_class = max(1, batch_size // num_classes)

    def next(self):
        # Row c of `index` holds per_class positions inside class c's block of in_class images.
        start = torch.arange(self.num_classes, device=self.x.device)[:, None] * self.in_class
        offsets = torch.randint(self.in_class, (self.num_classes, self.per_class), device=self.x.device)
        index = (start + offsets).flatten()
        return self.x[index], self.y[index]


# ---------------------------------------------------------------------------------------------
# The three phases of a mini-batch (Section 5), and the cluster-head cost (Section 7)
# ---------------------------------------------------------------------------------------------


def corrupt(x, noise):
    """The encoder's training input in every phase: x + noise * eps (Section 5's appendix,
    recalled: 0.3). Section 6's input dropout is a layer of the encoder (on in training only)."""
    return common.corrupt(x, noise) if noise > 0 else x


def head_distance_cost(heads, eta=HEAD_DISTANCE):
    """Section 7: sum over pairs i < j of max(0, eta - ||W_C[i] - W_C[j]||)."""
    i, j = torch.triu_indices(len(heads), len(heads), offset=1, device=heads.device)
    return F.relu(eta - (heads[i] - heads[j]).norm(dim=1)).sum()


def reconstruction_phase(model, optimizer, x, noise):
    """(1) min_{enc, dec} BCE(x, dec(y, z)) on an unlabelled batch. Section 7's head cost is
    added here: the paper does not say in which phase, and W_C is part of the autoencoder."""
    logits, z = model.encoder(corrupt(x, noise))
    x_logits = model.decoder.logits(model.code(F.softmax(logits, 1), z))
    reconstruction = F.binary_cross_entropy_with_logits(x_logits, x)  # from logits: stabler (see aae.py)
    loss = reconstruction
    heads = head_distance_cost(model.cluster_heads) if model.reduce else None
    if heads is not None:
        loss = loss + heads
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses = {"reconstruction": reconstruction.detach()}
    if heads is not None:
        losses["head_distance"] = heads.detach()
    return losses


def instance_noise(v, std):
    """v + std * eps, what the discriminators see in training (--discriminator-noise). Not the
    paper's, which states none; the Chainer re-implementation musyoku/adversarial-autoencoder
    puts the same 0.3 before both discriminators. Without it D_cat tells the encoder's softmax y
    (0.98 on its largest entry) from exactly one-hot samples by its softness alone, the
    encoder's answer is an ever more saturated softmax, and a saturated softmax passes back no
    gradient: the images stay in the few clusters they first fell into, 6 of 16 on digits. The
    noise hides the last few hundredths from D_cat, which then judges what the paper asks of it:
    how often each category is used."""
    return v + std * torch.randn_like(v) if std > 0 else v


def regularisation_phase(model, optimizers, x, noise, discriminator_noise=0.0):
    """(2) D_cat and D_gauss learn to tell the priors' samples from the encoder's y and z; then
    the encoder, as the generator of both games, learns to fool the updated discriminators."""
    logits, z = model.encoder(corrupt(x, noise))
    y = F.softmax(logits, 1)
    y_real = model.sample_categorical(len(x), x.device)  # one-hot samples of Cat(K)
    z_real = torch.randn_like(z)  # samples of N(0, I)

    def noisy(v):
        return instance_noise(v, discriminator_noise)

    d_cat_loss = aae.discriminator_loss(*aae.real_and_fake_logits(model.d_cat, noisy(y_real), noisy(y.detach())))
    d_gauss_loss = aae.discriminator_loss(*aae.real_and_fake_logits(model.d_gauss, noisy(z_real), noisy(z.detach())))
    optimizers["discriminators"].zero_grad(set_to_none=True)
    (d_cat_loss + d_gauss_loss).backward()  # two networks with no shared weights: two independent updates
    optimizers["discriminators"].step()

    # The encoder against the updated discriminators, which are frozen for this backward pass:
    # only the gradient through them to y and z is needed.
    with common.frozen(model.d_cat, model.d_gauss):
        generator = (aae.encoder_adversarial_loss(model.d_cat(noisy(y)))
                     + aae.encoder_adversarial_loss(model.d_gauss(noisy(z))))
        optimizers["generator"].zero_grad(set_to_none=True)
        generator.backward()
        optimizers["generator"].step()
    return {"d_cat": d_cat_loss.detach(), "d_gauss": d_gauss_loss.detach(), "generator": generator.detach()}


def classification_phase(model, optimizer, x_labelled, y_labelled, noise):
    """(3) min_enc -log q(y = label | x) on a labelled batch: the trunk and the y head only."""
    logits, _ = model.encoder(corrupt(x_labelled, noise))
    cross_entropy = F.cross_entropy(logits, y_labelled)
    optimizer.zero_grad(set_to_none=True)
    cross_entropy.backward()
    optimizer.step()
    return {"cross_entropy": cross_entropy.detach()}


def train_step(model, optimizers, x, labelled, noise, discriminator_noise=0.0):
    """One mini-batch of Section 5: reconstruction, regularisation, then (when there are
    labelled images; Section 6 has none) semi-supervised classification. `x` is an unlabelled
    batch: its labels are never passed in."""
    losses = reconstruction_phase(model, optimizers["reconstruction"], x, noise)
    losses.update(regularisation_phase(model, optimizers, x, noise, discriminator_noise))
    if labelled is not None:
        losses.update(classification_phase(model, optimizers["classification"], *labelled.next(), noise))
    return losses


def make_optimizers(model, lr, adversarial_lr):
    """One Adam optimiser per update of Section 5, named after the paper's phases."""
    encoder, decoder = list(model.encoder.parameters()), list(model.decoder.parameters())
    heads = [model.cluster_heads] if model.reduce else []
    return {
        "reconstruction": common.adam(encoder + decoder + heads, lr),
        "discriminators": common.adam([*model.d_cat.parameters(), *model.d_gauss.parameters()], adversarial_lr),
        "generator": common.adam(encoder, adversarial_lr),
        # The trunk and the y head: the cross-entropy has no gradient for the z head.
        "classification": common.adam([*model.encoder.trunk.parameters(), *model.encoder.y_head.parameters()], lr),
    }


# ---------------------------------------------------------------------------------------------
# Pictures: samples (a class per column), reconstructions, Figure 9's clusters, Figure 11
# ---------------------------------------------------------------------------------------------


def save_samples(model, fixed_z, path):
    """One row per fixed style z, one column per class or cluster k: dec(y_k, z). Across a row
    the style should stay and the class change (as the paper's Figure 7 for Section 4)."""
    k = model.clusters
    y = torch.eye(k, device=fixed_z.device).repeat(len(fixed_z), 1)
    z = fixed_z.repeat_interleave(k, 0)
    common.save_grid(model.decode(model.code(y, z)), path, nrow=k)


def save_clusters(model, x_test, path, per_row=10):
    """Figure 9: one row per cluster k, first its head dec(y_k, z = 0), then the first test
    images whose argmax q(y|x) is k (blank where it has fewer)."""
    device = model.decoder_device()
    k = model.clusters
    heads = model.decode(model.code(torch.eye(k, device=device), torch.zeros(k, model.style_dim, device=device)))
    assigned = common.map_batches(model.class_probabilities, x_test, 500, device).argmax(1)
    rows = []
    for c in range(k):
        members = common.float_images(x_test[assigned == c][:per_row])
        blank = torch.zeros(per_row - len(members), *x_test.shape[1:])
        rows += [heads[c:c + 1].cpu(), members, blank]
    common.save_grid(torch.cat(rows), path, nrow=per_row + 1)


def save_code_space(model, x_test, y_test, path):
    """Figure 11: the 2-D test codes y W_C + z coloured by label, the cluster heads marked."""
    codes = common.map_batches(model.encode, x_test, 500, model.decoder_device())
    heads = model.cluster_heads.detach().cpu()
    figure = common.plt_figure(figsize=(6, 6))
    axes = figure.add_subplot(1, 1, 1)
    labelled = bool((y_test >= 0).all())
    points = axes.scatter(codes[:, 0], codes[:, 1], s=4, c=y_test if labelled else "tab:blue", cmap="tab10",
                          vmin=-0.5, vmax=9.5)
    if labelled:
        figure.colorbar(points, ax=axes, ticks=range(10), label="label")
    axes.scatter(heads[:, 0], heads[:, 1], s=80, c="black", marker="x", label="cluster heads W_C")
    axes.legend(loc="upper right")
    axes.set_title("test codes y W_C + z")
    axes.set_aspect("equal")
    common.save_figure(figure, path)


def save_pictures(model, run, fixed_z, epoch):
    out, data = run.out, run.data
    save_samples(model, fixed_z, out / "samples" / f"epoch_{epoch:03d}.png")
    save_samples(model, fixed_z, out / "samples.png")
    save_clusters(model, data.x_test, out / "clusters.png")
    x = common.float_images(data.x_test[:10].to(run.device))
    common.save_grid(torch.cat([x, model.decode(model.encode(x))]), out / "reconstructions.png", nrow=len(x))
    # matplotlib takes a third of a second: ten times a run, as aae.py
    if model.reduce and model.style_dim == 2 and (epoch % max(1, run.config["epochs"] // 10) == 0
                                                  or epoch == run.config["epochs"]):
        save_code_space(model, data.x_test, data.y_test, out / "code_space.png")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def two_layers(text):
    return [common.positive_int(text)] * 2


def parse_args(argv):
    parser = common.model_parser("semi_supervised_aae", __doc__)
    parser.add_argument("--labels", type=int, help="labelled training images, balanced over the classes "
                        "(default: 100 on digits, 1000 on mnist); 0: unsupervised clustering (Section 6)")
    parser.add_argument("--clusters", type=int, help="K, the size of y (default: the number of classes; "
                        "16 with --labels 0)")
    parser.add_argument("--style-dim", type=common.positive_int, help="size of the style z (default 10; 5 with "
                        "--labels 0)")
    parser.add_argument("--reduce-dim", type=common.positive_int, help="Section 7: the decoder sees the n-D "
                        "code y W_C + z with learned cluster heads W_C (z is then n-D); 2 for Figure 11")
    parser.add_argument("--adversarial-lr", type=common.positive_float, help="learning rate of the "
                        "discriminators and of the encoder as their generator (default 1e-3; --lr sets the "
                        "reconstruction and cross-entropy ones, default 1e-3)")
    parser.add_argument("--discriminator-noise", type=common.non_negative_float, help="std of the Gaussian "
                        "noise added to what D_cat and D_gauss see in training (not the paper's; default 0.3 with "
                        "--labels 0, where it keeps the clusters from collapsing, else 0)")
    parser.add_argument("--hidden", type=two_layers, help="units in each of the two hidden layers of the encoder "
                        "and decoder (default: 256 on digits; 1000 on mnist, 3000 there with --labels 0)")
    args = parser.parse_args(argv)
    if args.latent_dim is not None:
        raise common.CLIError("the code here is y and z: set --clusters and --style-dim (or --reduce-dim), "
                              "not --latent-dim")
    if args.labels is not None and args.labels < 0:
        raise common.CLIError("--labels must be 0 (clustering) or a positive number of labelled images")
    if args.clusters is not None and args.clusters < 2:
        raise common.CLIError(f"--clusters must be at least 2 (got {args.clusters}): one category holds no "
                              "information")
    if args.reduce_dim and args.style_dim not in (None, args.reduce_dim):
        raise common.CLIError("with --reduce-dim n the style z is n-D: drop --style-dim")
    return args


def settings(args):
    """The table of per-dataset defaults for the experiment the flags ask for."""
    table = CLUSTERING if args.labels == 0 else SEMI_SUPERVISED
    defaults = {}
    for name, row in table.items():
        row = {"labels": 0, "clusters": None, "reduce_dim": 0, **row}
        if args.reduce_dim:
            row["style_dim"] = args.reduce_dim
        defaults[name] = row
    return defaults


def check_labels(config, data):
    """The labelled set the flags ask for exists; else one CLIError line."""
    n, k = config["labels"], data.num_classes
    if n == 0:
        return
    if k < 2 or (data.y_train < 0).any():
        raise common.CLIError(f"--labels {n} needs class labels, and {config['dataset']} has none: use --labels 0 "
                              "for unsupervised clustering")
    if n > len(data.x_train):
        raise common.CLIError(f"--labels {n} is more than the {len(data.x_train)} training images")
    if n % k:
        raise common.CLIError(f"--labels {n} must be a multiple of the {k} classes, so that every class has as "
                              "many labelled images")
    smallest = int(torch.bincount(data.y_train, minlength=k).min())
    if n // k > smallest:
        raise common.CLIError(f"--labels {n} asks for {n // k} images of each class, but the smallest class has "
                              f"{smallest}")
    if config["clusters"] != k:
        raise common.CLIError(f"with labels, y has one slot per class: --clusters must be {k} (or left out)")


def main(argv=None):
    args = parse_args(argv)
    variant = "-".join(part for part in ("clustering" if args.labels == 0 else None,
                                         f"reduce{args.reduce_dim}" if args.reduce_dim else None) if part)
    run = common.start_run("semi_supervised_aae", args, settings(args), variant=variant or None)
    config, device, data = run.config, run.device, run.data
    if config["clusters"] is None:  # semi-supervised: one category per class
        config["clusters"] = data.num_classes
    check_labels(config, data)
    config["latent_dim"] = config["style_dim"] if config["reduce_dim"] else config["clusters"] + config["style_dim"]
    common.write_json(run.out / "config.json", config)

    model = build_model(config).to(device)
    optimizers = make_optimizers(model, config["lr"], config["adversarial_lr"])
    labelled = None
    if config["labels"]:
        index = labelled_subset(data.y_train, config["labels"], data.num_classes, config["seed"])
        labelled = LabelledBatches(common.float_images(data.x_train[index]), data.y_train[index], data.num_classes,
                                   config["batch_size"], device)
        print(f"{config['labels']} labelled training images ({config['labels'] // data.num_classes} of each class); "
              f"the other {len(data.x_train) - config['labels']} are used without their labels")
    # Phases (1) and (2) see every training image without its label: fit() hands them -1s.
    no_labels = torch.full((len(data.x_train),), -1)
    fixed_z = torch.randn(10, config["style_dim"], device=device)

    def step(x, _):
        with common.autocast(run):  # --precision bf16: torch.autocast to bfloat16; fp32: nothing
            return train_step(model, optimizers, x, labelled, config["input_noise"],
                              config.get("discriminator_noise", 0.0))

    common.fit(
        run, model, optimizers, step,
        data.x_train, no_labels,
        on_epoch_end=lambda epoch: save_pictures(model, run, fixed_z, epoch),
    )
    print(f"done: {run.out}/samples.png, clusters.png, reconstructions.png, losses.png, checkpoint.pt "
          "(python eval.py classify RUN_DIR for the test error)")


if __name__ == "__main__":
    common.cli(main)
