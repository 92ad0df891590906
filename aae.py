"""Adversarial Autoencoders (Makhzani, Shlens, Jaitly, Goodfellow, Frey, 2015), arXiv:1511.05644.

An autoencoder whose code space is shaped by a GAN. The encoder q(z|x), one of Section 2's three (`--encoder`,
encoders.py), is deterministic, z = enc(x) (the default); a Gaussian posterior, z = mu(x) + sigma(x) * eps
(reparametrised); or a universal approximator, z = f(x, eta), noise eta a second input. Its aggregated posterior

    q(z) = integral of q(z|x) p_data(x) dx                                      (Eq. 1)

is matched to a chosen prior p(z) by a discriminator D on codes, for which samples of p(z)
are "real" (label 1) and codes z ~ q(z|x) are "fake" (label 0). The encoder is the generator of
that game. Each mini-batch has two phases (Section 2):

  reconstruction:  min_{enc, dec}  E_x[ BCE(x, dec(enc(x))) ]
  regularisation:  max_D    E_{z~p(z)}[log D(z)] + E_x[log(1 - D(enc(x)))]   (the GAN game, Sec. 1.1)
                   min_enc  -E_x[log D(enc(x))]        (the non-saturating generator loss)

When the game is balanced, D outputs 1/2 everywhere: its loss (real + fake term) is 2 ln 2 = 1.386 and the
encoder's adversarial loss is ln 2 = 0.693. Priors: N(0, I); a mixture of 10 two-dimensional Gaussians; a
"swiss roll". With labels (Section 2.3, Figure 3) D also sees a one-hot of the class, with an extra slot for
"unlabelled"; a labelled image's positive sample comes from its class's component (or segment of the roll).

Supervised AAE (Section 4), `--supervised`: the decoder gets the one-hot label beside the code,
dec([one-hot(y), z]), and only z is matched to the prior. The label already tells the decoder the class, and a
code matched to N(0, I) has no gaps to sort classes into, so z should keep the rest: the style (slant, stroke
width); how well depends on z's size (docs/aae.md, Section 4). samples.png is then Figure 7: each row one
fixed z, each column one class. `--sigma` > 0 feeds the encoder a corrupted x + sigma * eps: with sigma = 0
this file is the DAAE authors' AAE baseline (Creswell & Bharath), whose architectures and settings it uses.

    python aae.py                                   # digits, offline, under a minute on a CPU
    python aae.py --dataset digits --prior mixture  # 2-D codes matched to 10 Gaussians
    python aae.py --dataset mnist --prior mixture --labels 10000
    python aae.py --supervised                      # Figure 7: style along rows, class along columns
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import conv_networks
import encoders
import machinery
import toy

# The DAAE paper's networks and training (its "architecture and training" paragraphs, the authors' notebooks),
# daae.py's too; sigma = 0: the AAE. digits (8x8) is ours; cifar10/svhn (no AAE in either paper) reuse CelebA's.
NETWORKS = {
    "digits": dict(encoder_hidden=[256, 256], decoder_hidden=[256, 256], discriminator_hidden=[256, 256],
                   conv=False, latent_dim=10, lr=1e-3, batch_size=64, epochs=150),
    "mnist": dict(encoder_hidden=[1000, 1000], decoder_hidden=[1000, 1000], discriminator_hidden=[1000, 1000],
                  conv=False, latent_dim=10, lr=2e-4, batch_size=64, epochs=100),
    "omniglot": dict(encoder_hidden=[1000] * 3, decoder_hidden=[1000] * 6, discriminator_hidden=[1000, 1000],
                     conv=False, latent_dim=200, lr=1e-5, batch_size=64, epochs=1000),
    "sprites": dict(encoder_hidden=[1000, 1000], decoder_hidden=[1000, 500, 500], discriminator_hidden=[1000, 1000],
                    conv=False, latent_dim=200, lr=1e-4, batch_size=128, epochs=5),
    **{name: dict(conv=True, encoder_hidden=[], decoder_hidden=[], discriminator_hidden=[1000, 1000], lr=2e-4,
                  batch_size=64, **row) for name, row in {"celeba": dict(latent_dim=200, epochs=10),
                                                         "cifar10": dict(latent_dim=64, epochs=100),
                                                         "svhn": dict(latent_dim=64, epochs=100)}.items()},
    **{name: dict(toy.NETWORKS, conv=False) for name in toy.MIXTURES},  # points in the plane: toy.py
}
PRIORS = ("gaussian", "mixture", "swissroll")
ENCODERS = ("deterministic", "gaussian", "universal")  # Section 2's choices of q(z|x)
# --supervised: Section 4's MNIST style code z is 15-D (a .npz: the mnist row). Nothing keeps the class out of z
# (the encoder does not see the label): the smaller z, the less room for it; 2-D on 8x8 digits (docs/aae.md).
SUPERVISED_LATENT_DIM = {"mnist": 15, "digits": 2}
DEFAULTS = {name: dict(row, prior="gaussian", labels=0, sigma=0.0, supervised=False, encoder="deterministic")
            for name, row in NETWORKS.items()}
SUPERVISED_DEFAULTS = {name: dict(row, latent_dim=SUPERVISED_LATENT_DIM.get(name, row["latent_dim"]))
                       for name, row in DEFAULTS.items()}  # --supervised
MIXTURE_COMPONENTS, MIXTURE_RADIUS, MIXTURE_STD = 10, 4.0, 0.5  # the DAAE authors' mixture
SWISSROLL_STD = 0.1  # the paper gives no width for the Gaussian around the roll; a thin one


# ---------------------------------------------------------------------------------------------
# Networks: ReLU hidden units, linear code, sigmoid image (linear point), discriminator logit
# ---------------------------------------------------------------------------------------------


def mlp(sizes, activation=nn.ReLU):
    """Linear layers of the given sizes, `activation()` between them (learned_prior_aae.py: LeakyReLU)."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers[:-1])


class Encoder(nn.Module):
    """q(z|x): image -> code, fully connected (784-1000-1000-z for MNIST), linear output."""

    def __init__(self, image_shape, hidden, latent_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp([math.prod(image_shape), *hidden, latent_dim]))

    def forward(self, x):
        return self.net(x)


def make_encoder(kind, image_shape, hidden, latent_dim, conv=False):
    """q(z|x), one of ENCODERS (encoders.py): enc(x); a Gaussian from [mu, log sigma^2] outputs; f(x, eta)."""
    if kind == "universal":  # fully connected: the noise joins the pixels at the input
        return encoders.UniversalEncoder(Encoder([math.prod(image_shape) + latent_dim], hidden, latent_dim), latent_dim)
    outputs = 2 * latent_dim if kind == "gaussian" else latent_dim
    net = conv_networks.CelebAEncoder(image_shape, outputs) if conv else Encoder(image_shape, hidden, outputs)
    return encoders.GaussianEncoder(net) if kind == "gaussian" else net


class Decoder(nn.Module):
    """p(x|z): code -> image, fully connected, sigmoid output (pixel probabilities); for points in the
    plane a linear output (the mean of a Gaussian), which logits() also returns."""

    def __init__(self, image_shape, hidden, latent_dim):
        super().__init__()
        self.image_shape, self.points = tuple(image_shape), toy.is_points(image_shape)
        self.net = mlp([latent_dim, *hidden, math.prod(image_shape)])

    def logits(self, z):
        return self.net(z).view(-1, *self.image_shape)

    def forward(self, z):
        return self.logits(z) if self.points else torch.sigmoid(self.logits(z))


class Discriminator(nn.Module):
    """D(z) (or D(z, one-hot label)): fully connected, no BatchNorm (it stalls a latent discriminator at 50 %).
    Returns the logit; the sigmoid is inside the loss."""

    def __init__(self, latent_dim, hidden, label_slots=0, activation=nn.ReLU):
        super().__init__()
        self.net = mlp([latent_dim + label_slots, *hidden, 1], activation)

    def forward(self, z, onehot=None):
        return self.net(z if onehot is None else torch.cat([z, onehot], 1)).squeeze(1)


def sample_prior(prior, n, latent_dim, device, labels=None):
    """z ~ p(z). For the mixture and the swiss roll, `labels` (a class 0..9 per row, or -1: "unlabelled")
    pick the component or the segment of the roll; unlabelled rows and labels=None sample the whole prior."""
    if prior == "gaussian":
        return torch.randn(n, latent_dim, device=device)
    part = torch.randint(MIXTURE_COMPONENTS, (n,), device=device)
    if labels is not None:
        part = torch.where(labels >= 0, labels, part)
    if prior == "mixture":
        return mixture_means(device)[part] + MIXTURE_STD * torch.randn(n, 2, device=device)
    u = (part + torch.rand(n, device=device)) / MIXTURE_COMPONENTS  # class k: the segment [k/10, (k+1)/10)
    return swissroll_mean(u) + SWISSROLL_STD * torch.randn(n, 2, device=device)


def mixture_means(device):
    angle = 2 * math.pi * torch.arange(MIXTURE_COMPONENTS, device=device) / MIXTURE_COMPONENTS
    return MIXTURE_RADIUS * torch.stack([angle.cos(), angle.sin()], 1)


def swissroll_mean(u):
    """The swiss roll's spiral r = 3 sqrt(u), angle = 4 pi sqrt(u): uniform along its length for u ~ U(0, 1)."""
    radius, angle = 3 * u.sqrt(), 4 * math.pi * u.sqrt()
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1)


# Initial weights of the Linear layers, zero biases. glorot (Glorot-uniform): lasagne's DenseLayer default, the DAAE
# authors'; PyTorch's default shrinks a ReLU signal 2.4 times per layer, Glorot's 1.4 (docs/daae.md: Omniglot's deep
# decoder). he (He-uniform, variance 2 / fan_in) keeps its scale: daae.py --init he for short Omniglot runs. normal,
# N(0, 0.01^2): musyoku's Chainer AAE (semi_supervised_aae.py --init normal).
INITS = {"glorot": nn.init.xavier_uniform_, "he": lambda weight: nn.init.kaiming_uniform_(weight, nonlinearity="relu"),
         "normal": lambda weight: nn.init.normal_(weight, 0.0, 0.01)}


def init_weights(module, init="glorot"):
    """INITS[init] for the weights of every Linear layer in `module`, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            INITS[init](layer.weight)
            nn.init.zeros_(layer.bias)


class AAE(nn.Module):
    """The three networks, and what eval.py uses: encode, decode, sample, sigma. `label_slots`:
    the discriminator's one-hot of Section 2.3 (classes + 1 for "unlabelled"), 0 for none."""

    def __init__(self, image_shape, latent_dim, prior="gaussian", conv=False, encoder_hidden=(),
                 decoder_hidden=(), discriminator_hidden=(1000, 1000), label_slots=0, sigma=0.0, init="glorot",
                 decoder_labels=0, encoder="deterministic"):
        super().__init__()
        self.prior, self.latent_dim, self.sigma, self.stochastic = prior, latent_dim, sigma, encoder != "deterministic"
        self.decoder_labels = decoder_labels  # Section 4: the decoder also gets a one-hot label of this size
        self.encoder = make_encoder(encoder, image_shape, encoder_hidden, latent_dim, conv)
        self.decoder = conv_networks.CelebADecoder(image_shape, latent_dim + decoder_labels) if conv \
            else Decoder(image_shape, decoder_hidden, latent_dim + decoder_labels)
        self.discriminator = Discriminator(latent_dim, discriminator_hidden, label_slots)
        if not conv:  # the convolutional (CelebA) networks come from the authors' PyTorch code: its defaults
            init_weights(self, init)

    def encode(self, x):
        """The code of x: enc(x), or E[z|x] of a stochastic encoder (training uses its samples)."""
        return self.encoder.mean(x) if self.stochastic else self.encoder(x)

    def decoder_input(self, z, labels=None):
        """z, or [one-hot label, z] for the supervised AAE (Section 4)."""
        if not self.decoder_labels:
            return z
        if labels is None:
            raise ValueError("a --supervised AAE decodes [label, z]: its decoder needs the labels")
        return torch.cat([F.one_hot(labels, self.decoder_labels).float(), z], 1)

    def decode(self, z, labels=None):
        return self.decoder(self.decoder_input(z, labels))

    def sample_prior(self, n, labels=None):
        return sample_prior(self.prior, n, self.latent_dim, self.device(), labels)

    def sample(self, n):
        """x = dec(z), z ~ p(z) (with a uniformly drawn class for the supervised AAE)."""
        labels = torch.randint(self.decoder_labels, (n,), device=self.device()) if self.decoder_labels else None
        return self.decode(self.sample_prior(n), labels)

    def device(self):
        return next(self.parameters()).device


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return AAE(config["image_shape"], config["latent_dim"], config["prior"], config["conv"],
               config["encoder_hidden"], config["decoder_hidden"], config["discriminator_hidden"],
               label_slots=config["num_classes"] + 1 if config["labels"] else 0, sigma=config["sigma"],
               decoder_labels=config["num_classes"] if config["supervised"] else 0, encoder=config["encoder"])


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def discriminator_loss(real_logits, *fake_logits):
    """-[log D(z_prior) + log(1 - D(enc(x)))]: prior samples are real (1), codes fake (0). The sum of the mean
    terms, so ln 2 per term at equilibrium: 1.386 here; 2.079 for learned_prior_aae.py's D_I (two fakes)."""
    loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    for logits in fake_logits:
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    return loss


def encoder_adversarial_loss(fake_logits):
    """-log D(enc(x)): the non-saturating generator loss; ln 2 = 0.693 at equilibrium."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def real_and_fake_logits(discriminator, real, fake, onehot=None):
    """D's logits for the real and the fake samples from one call on both: equal to two (D has no BatchNorm), faster."""
    logits = discriminator(torch.cat([real, fake]), None if onehot is None else torch.cat([onehot, onehot]))
    return logits.chunk(2)


def label_onehot(labels, label_slots):
    """Section 2.3's one-hot for D: the row's class, or the last slot for "unlabelled" (-1)."""
    return F.one_hot(torch.where(labels >= 0, labels, label_slots - 1), label_slots).float() if label_slots else None


# ---------------------------------------------------------------------------------------------
# The updates of a mini-batch (Section 2), and the step that orders them
# ---------------------------------------------------------------------------------------------


def reconstruction_update(model, optimizer, x, x_in, labels=None):
    """The reconstruction phase: min BCE(x, dec(enc(x_in))) (points: the squared error), from the decoder's
    logits; Section 4's decoder also gets `labels`."""
    logits = model.decoder.logits(model.decoder_input(model.encoder(x_in), labels))
    loss = common.reconstruction_loss(logits, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def discriminator_update(model, optimizer, x_in, labels, label_slots):
    """The regularisation phase (a): D learns to tell prior samples (real, 1) from codes (fake, 0).
    With labels (Sec. 2.3) a labelled row's positive sample comes from its class's part of p(z)."""
    with torch.no_grad():
        z_fake = model.encoder(x_in)
    z_real = model.sample_prior(len(x_in), labels if label_slots else None)
    loss = discriminator_loss(*real_and_fake_logits(model.discriminator, z_real, z_fake,
                                                    label_onehot(labels, label_slots)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def encoder_adversarial_update(model, optimizer, x_in, labels, label_slots):
    """The regularisation phase (b): the encoder, the code game's generator, learns to fool the updated D (frozen)."""
    with common.frozen(model.discriminator):
        loss = encoder_adversarial_loss(model.discriminator(model.encoder(x_in), label_onehot(labels, label_slots)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_step(model, optimizers, x, labels, sigma, label_slots, supervised=False):
    """One mini-batch of Section 2: reconstruction, then regularisation (D, then the encoder against it). `labels`:
    each row's class or -1 ("unlabelled"), seen by D when label_slots > 0 and by the decoder when `supervised`."""
    x_in = common.corrupt(x, sigma)
    return {"reconstruction": reconstruction_update(model, optimizers["reconstruction"], x, x_in,
                                                    labels if supervised else None),
            "discriminator": discriminator_update(model, optimizers["discriminator"], x_in, labels, label_slots),
            "encoder_adversarial": encoder_adversarial_update(model, optimizers["encoder_adversarial"], x_in, labels,
                                                              label_slots)}


def make_optimizers(model, lr):
    """The DAAE authors' three Adam optimisers, one per update (the encoder's two keep their own moments)."""
    return {"reconstruction": common.adam([*model.encoder.parameters(), *model.decoder.parameters()], lr),
            "discriminator": common.adam(model.discriminator.parameters(), lr),
            "encoder_adversarial": common.adam(model.encoder.parameters(), lr)}


# ---------------------------------------------------------------------------------------------
# Pictures: samples, reconstructions, Figure 7, and (common.py) the code space of Figures 2 and 4
# ---------------------------------------------------------------------------------------------


def label_grid(decode, z, k):
    """Figure 7 (and the learned-prior paper's Figures 10 and 12): one row per style z, one column per label
    0..k-1, decode(z, label), for save_grid(..., nrow=k). Along a row the style should persist."""
    return decode(z.repeat_interleave(k, 0), torch.arange(k, device=z.device).repeat(len(z)))


def save_reconstructions(rows, labels, path):
    """Groups of rows of up to 10 images, however small the test split: a labelled row of each of `rows`."""
    per_row = min(10, len(rows[0]))
    rows = [r[:len(r) // per_row * per_row].view(-1, per_row, *r.shape[1:]) for r in rows]
    common.save_grid(torch.cat(rows, 1).flatten(0, 1), path, nrow=per_row, row_labels=labels)


def save_pictures(model, run, fixed_z, epoch):
    """samples.png (and samples/epoch_NNN.png) of the fixed codes, Figure 7 for the supervised AAE;
    reconstructions.png, groups of rows of test images, their corruptions (sigma > 0) and reconstructions;
    for 2-D codes, every tenth of the run, the code space and the manifold. Points: toy.save_pictures."""
    out, data = run.out, run.data
    if toy.is_points(run.config["image_shape"]):
        return toy.save_pictures(model, run, epoch, {"samples dec(z)": model.decode(model.sample_prior(2000))})
    k = model.decoder_labels
    samples = label_grid(model.decode, fixed_z[:10], k) if k else model.decode(fixed_z)
    for path in (out / "samples" / f"epoch_{epoch:03d}.png", out / "samples.png"):
        common.save_grid(samples, path, nrow=k or 10)
    x = common.float_images(data.x_test[:50].to(run.device))
    x_in = common.corrupt(x, model.sigma)
    rows = [x, x_in.clamp(0, 1)] if model.sigma > 0 else [x]
    rows.append(model.decode(model.encode(x_in), data.y_test[:len(x)].to(run.device) if model.decoder_labels else None))
    labels = ["test images", f"corrupted, sigma {model.sigma:g}"][:len(rows) - 1] + ["reconstructions"]
    save_reconstructions(rows, labels, out / "reconstructions.png")
    if model.latent_dim == 2 and not model.decoder_labels and run.every_tenth(epoch):  # Figure 7 has its own
        common.save_code_space(model, data.x_test, data.y_test, out / "code_space.png")
        common.save_manifold(model, out / "manifold.png")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def discriminator_labels(config, data):
    """Section 2.3: the labels D sees (--labels images of a fixed shuffle keep their class, the rest
    are -1, "unlabelled") and the one-hot's size; (y_train, 0) without --labels."""
    if not config["labels"]:
        return data.y_train, 0
    labels = data.y_train.clone()
    labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[config["labels"]:]] = -1
    return labels, data.num_classes + 1


def train(run):
    config, data = run.config, run.data
    labels, label_slots = discriminator_labels(config, data)
    machinery.check_networks_fit(build_model, config, run.device)
    model = build_model(config).to(run.device)
    optimizers = make_optimizers(model, config["lr"])
    run.track(model, optimizers)
    fixed_z = model.sample_prior(100)

    for epoch in run.epochs():
        for x, y in run.batches(data.x_train, labels):
            with common.autocast(run):
                losses = train_step(model, optimizers, x, y, config["sigma"], label_slots, config["supervised"])
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
    parser = machinery.model_parser("aae", __doc__)
    parser.add_argument("--prior", choices=PRIORS, help="p(z) (default gaussian; mixture and swissroll are 2-D)")
    parser.add_argument("--labels", type=int, help="labelled training images for the label-conditioned "
                        "discriminator of Section 2.3 (mixture or swissroll prior); default 0: off")
    parser.add_argument("--sigma", type=machinery.corruption_sigma, help="std of the input corruption (default 0)")
    parser.add_argument("--encoder", choices=ENCODERS, help="q(z|x) (Section 2): deterministic (default), gaussian "
                        "(reparametrised) or universal (noise beside the pixels; fully connected networks only)")
    parser.add_argument("--supervised", action="store_true", default=None,  # None: not given (see --resume)
                        help="Section 4: the decoder also gets the one-hot label, only z is matched to the prior "
                             "(z 15-D on mnist); samples.png is Figure 7")
    args = machinery.describe_defaults(parser, DEFAULTS).parse_args(argv)
    if args.prior in ("mixture", "swissroll"):
        if args.latent_dim not in (None, 2):
            raise machinery.CLIError(f"the {args.prior} prior is 2-D; drop --latent-dim or set it to 2")
        args.latent_dim = 2
    if args.encoder == "universal" and DEFAULTS.get(args.dataset, {}).get("conv"):
        raise machinery.CLIError(f"--encoder universal is fully connected, {args.dataset} convolutional: use gaussian")
    if args.labels is not None and args.labels < 0:
        raise machinery.CLIError("--labels must be 0 (off) or a positive number of labelled images")
    if args.labels and args.prior not in ("mixture", "swissroll"):
        raise machinery.CLIError("--labels needs --prior mixture or swissroll (one component per class)")
    if args.supervised and args.labels:
        raise machinery.CLIError("--supervised gives every label to the decoder; --labels (Section 2.3) gives some "
                                 "to the discriminator: choose one")
    return args


def fill_settings(config, data):
    """The flags checked against the data before config.json is written (none filled); else one CLIError line."""
    if config["supervised"]:
        machinery.require_labels(data, "--supervised")
    if config["labels"] and data.num_classes != MIXTURE_COMPONENTS:
        raise machinery.CLIError(f"--labels needs a dataset with {MIXTURE_COMPONENTS} classes")
    if config["labels"] > len(data.y_train):
        raise machinery.CLIError(f"--labels {config['labels']} is more than the {len(data.y_train)} training images; "
                                 f"at most {len(data.y_train)}")


def main(argv=None):
    args = parse_args(argv)
    parts = (args.prior != "gaussian" and args.prior, args.supervised and "supervised",
             args.encoder != "deterministic" and args.encoder)
    train(common.start_run("aae", args, SUPERVISED_DEFAULTS if args.supervised else DEFAULTS,
                           variant="-".join(part for part in parts if part) or None, fill=fill_settings))


if __name__ == "__main__":
    machinery.cli(main)
