"""Denoising Adversarial Autoencoders (Creswell & Bharath, 2017), arXiv:1703.01220: the DAAE.

An adversarial autoencoder (aae.py) trained with a denoising criterion. The encoder sees a
corrupted image, drawn from the corruption process c(x~|x),

    x~ = x + sigma * eps,   eps ~ N(0, I)          (additive Gaussian, not clipped)

and the decoder must give back the CLEAN image. Section III-A offers two things to match to
the prior p(z) with a discriminator D on codes:

    DAAE  (this file)  q(z|x~), the codes of corrupted images:     z_fake = enc(x~)
    iDAAE (idaae.py)   q~(z|x) = E_{c(x~|x)}[q(z|x~)], integrated by Monte Carlo:
                       z_fake = (1/M) sum_j enc(x + sigma * eps_j)

Every mini-batch has three updates, each with its own optimiser, in the order of the authors'
notebooks (MNIST, Omniglot and Sprites alike), each drawing its own corruption noise:

  discriminator:        max_D    E_{z~p(z)}[log D(z)] + E[log(1 - D(z_fake))]  (prior "real" 1, codes "fake" 0)
  encoder_adversarial:  min_enc  -E[log D(z_fake)]                    (the non-saturating loss)
  reconstruction:       min_{enc, dec}  E[ BCE(x, dec(enc(x~))) ]     (the clean x is the target)

The Omniglot and Sprites notebooks clip the probabilities their BCEs see: D's to [0.001, 0.999],
the decoder's to [0.001, 0.99]. A clip passes no gradient where it is active, so a code that D is
more than 99.9 % sure of pushes neither D nor the encoder, and reconstruction goes on alone.
`--no-clip` and `--update-order reconstruction-first` (the AAE paper's order) undo each detail.

Sampling (Section IV-B). The DAAE matches q(z|x~), not q(z|x), to the prior, so dec(z) with
z ~ p(z) is not yet a sample of the model. Decoding, corrupting and encoding again is the
transition operator of a Markov chain whose stationary distribution is the model's (the
paper's theorem, when the adversarial pair is optimal and q(z|x~) matches p(z)):

    x_0 = dec(z_0),  z_0 ~ p(z);      x_{t+1} = dec(enc(x_t + sigma * eps_t))

The paper runs 10 steps on MNIST, 50 on Omniglot, 2 on Sprites (`--sample-steps`). At
sigma = 0 the model is the AAE baseline the paper compares with.

    python daae.py                                   # digits, offline, about a minute on a CPU
    python daae.py --dataset mnist                   # the paper's MNIST settings
    python daae.py --dataset omniglot --gpu          # the paper's: 1000 epochs (286,000 updates) at lr 1e-5
    python daae.py --dataset omniglot --image-size 28 --sigma 0.25 --lr 1e-4 --adversarial-lr 4e-5 \
        --init he --epochs 100                       # on a CPU in minutes; not the paper's (docs/daae.md)
"""

import argparse
import math

import torch
import torch.nn as nn

import aae
import common
import machinery
import toy

# The paper's settings (its "architecture and training" paragraph for each dataset): the networks,
# lr, batch and epochs are aae.NETWORKS; here are the DAAE's own. digits, cifar10 and svhn are ours.
PAPER = {
    "digits": dict(sigma=0.25, sample_steps=10),  # half MNIST's sigma: an 8x8 digit has few pixels to denoise from
    "mnist": dict(sigma=0.5, sample_steps=10),
    # Omniglot: the notebook's run (lr 1e-5, 1000 epochs = 286,000 updates, Glorot init, clipping, D first). What
    # still differs: its 286 batches are fixed and only their order is permuted each epoch, where run.batches
    # deals new batches every epoch.
    "omniglot": dict(sigma=0.5, sample_steps=50, clip=True),
    # Sprites: the paper's lr annealing, x0.95 per epoch (the notebooks' annealed rate never reached their
    # Adam updates; we follow the paper), the notebooks' L1 (0.1) and L2 (1e-4) weight penalties and clipping
    "sprites": dict(sigma=0.25, sample_steps=2, lr_decay=0.95, l1_penalty=0.1, l2_penalty=1e-4, clip=True),
    # CelebA: the authors' PyTorch code trains with RMSprop 1e-3, the discriminator with momentum 0.9
    "celeba": dict(sigma=0.25, sample_steps=10, optimizer="rmsprop", lr=1e-3),
    "cifar10": dict(sigma=0.25, sample_steps=10),
    "svhn": dict(sigma=0.25, sample_steps=10),
    # Points in the plane (ours): the modes are 2 apart (1.5 on the ring) and 0.05 wide (0.02), so a
    # corruption of 0.25 blurs every mode well past its width without carrying points to the next one
    **{name: dict(sigma=0.25, sample_steps=10) for name in toy.MIXTURES},
}
DEFAULTS = {name: {"prior": "gaussian", "optimizer": "adam", "lr_decay": 1.0, "l1_penalty": 0.0, "l2_penalty": 0.0,
                   "adversarial_lr": None, "init": "glorot", "clip": False, "update_order": "adversarial-first",
                   **aae.NETWORKS[name], **row} for name, row in PAPER.items()}
UPDATE_ORDERS = ("adversarial-first", "reconstruction-first")  # the DAAE notebooks'; the AAE paper's (Sec. 2)
PRIORS = ("gaussian", "mixture")  # the paper's two: N(0, I), and 10 two-dimensional Gaussians on a circle
RMSPROP_DISCRIMINATOR_MOMENTUM = 0.9

# ---------------------------------------------------------------------------------------------
# Networks: aae.AAE's encoder, decoder and code discriminator (the DAAE paper's table is the
# AAE's); the class DAAE under "Sampling" adds the Markov chain. Then the losses.
# ---------------------------------------------------------------------------------------------

discriminator_loss = aae.discriminator_loss  # -[log D(z_prior) + log(1 - D(z_fake))], 2 ln 2 at equilibrium
encoder_adversarial_loss = aae.encoder_adversarial_loss  # -log D(z_fake), ln 2 at equilibrium

# The Omniglot and Sprites notebooks clip the probabilities before their BCEs (the MNIST notebook does not)
DISCRIMINATOR_CLIP = (0.001, 0.999)
DECODER_CLIP = (0.001, 0.99)


def clip_logits(logits, low, high):
    """Logits whose sigmoid is clip(sigmoid(logits), low, high). The sigmoid is monotonic, so a BCE
    of these logits has the notebooks' value and their gradient: zero where the clip is active."""
    return logits.clamp(math.log(low / (1 - low)), math.log(high / (1 - high)))


def corrupted_codes(encoder, x, sigma):
    """The DAAE's fake sample: z = enc(x~), x~ ~ c(x~|x), a sample of q(z|x~) (Sec. III-A)."""
    return encoder(common.corrupt(x, sigma))


def weight_penalty(encoder, l1, l2):
    """l1 * sum|W| + l2 * sum W^2 of the encoder's output layer. The Sprites notebooks add
    lasagne's regularize_layer_params(enc, l1) * 0.1 (and l2 * 1e-4), which penalises only the
    weights of the layer it is given, the encoder's last; their decoder term is on a reshape
    layer, which has no weights, so it is zero."""
    weight = [m for m in encoder.modules() if isinstance(m, nn.Linear)][-1].weight
    return l1 * weight.abs().sum() + l2 * weight.pow(2).sum()


# ---------------------------------------------------------------------------------------------
# The three updates of a mini-batch, and the step that orders them
# ---------------------------------------------------------------------------------------------


def discriminator_update(model, optimizer, x, sigma, fake_codes, clip):
    """D learns to tell prior samples (real, 1) from codes of corrupted images (fake, 0)."""
    with torch.no_grad():
        z_fake = fake_codes(model.encoder, x, sigma)
    logits = aae.real_and_fake_logits(model.discriminator, model.sample_prior(len(x)), z_fake)
    if clip:
        logits = [clip_logits(half, *DISCRIMINATOR_CLIP) for half in logits]
    loss = discriminator_loss(*logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def encoder_adversarial_update(model, optimizer, x, sigma, fake_codes, clip):
    """The encoder, as the generator of the code game, learns to fool D. D is frozen for this
    backward pass: only the gradient through it to the codes is needed, not its weights'."""
    with common.frozen(model.discriminator):
        logits = model.discriminator(fake_codes(model.encoder, x, sigma))
        loss = encoder_adversarial_loss(clip_logits(logits, *DISCRIMINATOR_CLIP) if clip else logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def reconstruction_update(model, optimizer, x, sigma, clip, l1_penalty=0.0, l2_penalty=0.0):
    """Encode a corrupted x, decode, compare with the CLEAN x: BCE(x, dec(enc(x~))) (the squared
    error for points), from the decoder's logits as in aae.py. Returns it without the weight penalties."""
    logits = model.decoder.logits(model.encoder(common.corrupt(x, sigma)))
    reconstruction = common.reconstruction_loss(clip_logits(logits, *DECODER_CLIP) if clip else logits, x)
    loss = reconstruction
    if l1_penalty or l2_penalty:
        loss = loss + weight_penalty(model.encoder, l1_penalty, l2_penalty)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return reconstruction.detach()


def train_step(model, optimizers, x, sigma, fake_codes=corrupted_codes, clip=False,
               update_order="adversarial-first", l1_penalty=0.0, l2_penalty=0.0):
    """One mini-batch: the discriminator, the encoder against it, then reconstruction, as every
    notebook of the authors orders them; `update_order="reconstruction-first"` is the AAE paper's
    order. Each update draws its own corruption, as the notebooks' separately compiled updates do.
    `fake_codes(encoder, x, sigma)` gives D's fake samples: corrupted_codes for the DAAE,
    idaae.integrated_codes for the iDAAE. Returns detached losses (no host sync)."""
    if update_order == "reconstruction-first":
        reconstruction = reconstruction_update(model, optimizers["reconstruction"], x, sigma, clip, l1_penalty,
                                               l2_penalty)
    discriminator = discriminator_update(model, optimizers["discriminator"], x, sigma, fake_codes, clip)
    encoder_adversarial = encoder_adversarial_update(model, optimizers["encoder_adversarial"], x, sigma, fake_codes,
                                                     clip)
    if update_order == "adversarial-first":
        reconstruction = reconstruction_update(model, optimizers["reconstruction"], x, sigma, clip, l1_penalty,
                                               l2_penalty)
    return {"reconstruction": reconstruction, "discriminator": discriminator, "encoder_adversarial": encoder_adversarial}


def make_optimizers(model, config):
    """The authors' three optimisers, one per update: Adam, or for CelebA RMSprop (their PyTorch
    code, whose discriminator alone has momentum 0.9). The paper uses one learning rate for all
    three; --adversarial-lr gives the two adversarial updates their own."""
    params = {"reconstruction": [*model.encoder.parameters(), *model.decoder.parameters()],
              "discriminator": list(model.discriminator.parameters()),
              "encoder_adversarial": list(model.encoder.parameters())}
    adversarial_lr = config["adversarial_lr"] or config["lr"]
    lr = {"reconstruction": config["lr"], "discriminator": adversarial_lr, "encoder_adversarial": adversarial_lr}
    if config["optimizer"] == "rmsprop":
        return {name: torch.optim.RMSprop(p, lr=lr[name], momentum=RMSPROP_DISCRIMINATOR_MOMENTUM
                                          if name == "discriminator" else 0.0) for name, p in params.items()}
    return {name: common.adam(p, lr[name]) for name, p in params.items()}


# ---------------------------------------------------------------------------------------------
# Sampling: the Markov chain of Section IV-B
# ---------------------------------------------------------------------------------------------


class DAAE(aae.AAE):
    """aae.AAE's encoder, decoder and code discriminator, a training sigma, and the Markov chain
    that samples a DAAE. sample(n) runs `sample_steps` steps of the chain; 0 (the iDAAE's, and
    the AAE's at sigma 0) is dec(z), z ~ p(z)."""

    def __init__(self, image_shape, latent_dim, sigma, prior="gaussian", conv=False, encoder_hidden=(),
                 decoder_hidden=(), discriminator_hidden=(1000, 1000), init="glorot", sample_steps=0):
        super().__init__(image_shape, latent_dim, prior, conv, encoder_hidden, decoder_hidden,
                         discriminator_hidden, sigma=sigma, init=init)
        self.sample_steps = sample_steps

    def chain(self, steps, z):
        """Yield x_0 = dec(z), then x_{t+1} = dec(enc(corrupt(x_t))) for `steps` steps (Sec. IV-B)."""
        x = self.decode(z)
        yield x
        for _ in range(steps):
            x = self.decode(self.encode(common.corrupt(x, self.sigma)))
            yield x

    @torch.no_grad()
    def markov_chain_sample(self, n, steps, z=None):
        """[x_0, x_1, ..., x_steps]: n chains started from z ~ p(z) (or the given z), images in [0, 1]."""
        return list(self.chain(steps, self.sample_prior(n) if z is None else z))

    @torch.no_grad()
    def sample(self, n, steps=None):
        """The model's samples: x_steps of n chains, keeping only the last batch. steps=None is the
        run's sample_steps (the paper's); steps=0 is x_0 = dec(z), z ~ p(z), the chain's start."""
        for x in self.chain(self.sample_steps if steps is None else steps, self.sample_prior(n)):
            pass
        return x


def build_model(config, sample_steps=None):
    """The model a run's config.json describes (eval.py rebuilds runs with this; idaae too, with
    sample_steps 0: the iDAAE samples from the prior)."""
    return DAAE(config["image_shape"], config["latent_dim"], config["sigma"], config["prior"], config["conv"],
                config["encoder_hidden"], config["decoder_hidden"], config["discriminator_hidden"], config["init"],
                config["sample_steps"] if sample_steps is None else sample_steps)


# ---------------------------------------------------------------------------------------------
# Pictures: samples, reconstructions, the chain, and codes over the prior
# ---------------------------------------------------------------------------------------------


def save_chain(chain, out, rows=10, columns=11):
    """chain_samples.png: the last step of every chain. chain.png: `rows` chains, one per row, at
    `columns` evenly spaced steps from x_0 (left) to the last step (right), as the paper's figures,
    each column headed by its step."""
    common.save_grid(chain[-1], out / "chain_samples.png")
    steps = len(chain) - 1
    shown = sorted({round(i * steps / (columns - 1)) for i in range(columns)})
    strip = torch.stack([chain[t][:rows] for t in shown], 1)  # rows x len(shown) x C x H x W
    common.save_grid(strip.flatten(0, 1), out / "chain.png", nrow=len(shown),  # x_0 first, then step t
                     column_labels=["x_0"] + [f"t={t}" for t in shown[1:]])


def save_code_histogram(model, x, path, fake_codes=None, batch_size=500):
    """The paper's CelebA figure, for any dataset: the values of enc(x) and enc(x~) (every code
    dimension pooled) over the prior's. The DAAE matches enc(x~) to the prior; enc(x) is narrower.
    `fake_codes` (the iDAAE's) adds the discriminator's fake samples, the mean code of M corruptions."""
    device, sigma = model.device(), model.sigma
    series = {"prior p(z)": model.sample_prior(max(len(x), 5000)).cpu(),
              "enc(x), clean": common.map_batches(model.encode, x, batch_size, device),
              f"enc(x~), sigma {sigma:g}": common.map_batches(lambda b: corrupted_codes(model.encoder, b, sigma),
                                                             x, batch_size, device)}
    if fake_codes is not None:
        series["D's fake samples"] = common.map_batches(lambda b: fake_codes(model.encoder, b, sigma),
                                                        x, batch_size, device)
    figure = common.plt_figure(figsize=(6, 4))
    axes = figure.add_subplot(1, 1, 1)
    everything = torch.cat([z.flatten() for z in series.values()])
    low, high = everything.quantile(0.001).item(), everything.quantile(0.999).item()
    for label, z in series.items():
        axes.hist(z.flatten().clamp(low, high).numpy(), bins=80, range=(low, high), density=True, histtype="step",
                  linewidth=1.5, label=f"{label} (std {z.std().item():.2f})")
    axes.set_xlabel("code value (all dimensions)")
    axes.set_ylabel("density")
    axes.set_title("test codes over the prior")
    axes.legend(fontsize=8)
    common.save_figure(figure, path)


def save_pictures(model, run, fixed_z, epoch, fake_codes=None):
    """Every saved epoch: samples.png (x_0 = dec(z) of fixed z) and reconstructions.png of corrupted
    test images (aae.py's pictures). Every tenth of the run: the chain from the same z, the code
    histogram, and for 2-D codes the code space. Points in the plane: toy.save_pictures, with
    x_0 and the chain's last step over the data."""
    steps = run.config["sample_steps"]
    if toy.is_points(run.config["image_shape"]):
        samples = {"x_0 = dec(z)": model.sample(2000, steps=0)}
        if steps:
            samples[f"after {steps} chain steps"] = model.sample(2000)
        toy.save_pictures(model, run, epoch, samples)
    else:
        aae.save_pictures(model, run, fixed_z, epoch)
        if run.every_tenth(epoch):
            save_chain(model.markov_chain_sample(len(fixed_z), steps, fixed_z), run.out)
    if run.every_tenth(epoch):
        save_code_histogram(model, run.data.x_test[:2000], run.out / "code_histogram.png", fake_codes)


# ---------------------------------------------------------------------------------------------
# Training (idaae.py trains with this loop too, giving its own fake codes)
# ---------------------------------------------------------------------------------------------


def train(run, fake_codes=corrupted_codes, build=build_model):
    config, data = run.config, run.data
    machinery.check_networks_fit(build, config, run.device)
    model = build(config).to(run.device)
    optimizers = make_optimizers(model, config)
    schedulers = {}
    if config["lr_decay"] != 1.0:  # Sprites: the learning rate is annealed after every epoch
        schedulers = {name: torch.optim.lr_scheduler.ExponentialLR(o, config["lr_decay"])
                      for name, o in optimizers.items()}
    run.track(model, optimizers, schedulers)
    fixed_z = model.sample_prior(100)

    for epoch in run.epochs():
        for x, _ in run.batches(data.x_train, data.y_train):
            with common.autocast(run):
                losses = train_step(model, optimizers, x, config["sigma"], fake_codes, config["clip"],
                                    config["update_order"], config["l1_penalty"], config["l2_penalty"])
            run.record(losses)
        for scheduler in schedulers.values():
            scheduler.step()
        if run.saving(epoch):
            with common.drawing(model):
                save_pictures(model, run, fixed_z, epoch, None if fake_codes is corrupted_codes else fake_codes)
            run.save_checkpoint()
    run.done()
    return model


# ---------------------------------------------------------------------------------------------
# Flags and main (idaae.py adds --M to these)
# ---------------------------------------------------------------------------------------------


def add_flags(parser):
    parser.add_argument("--sigma", type=machinery.corruption_sigma,
                        help="std of the Gaussian corruption (paper: 0.5 MNIST and Omniglot, 0.25 Sprites and CelebA)")
    parser.add_argument("--sample-steps", type=machinery.positive_int,
                        help="Markov chain steps of a sample (paper: 10 MNIST, 50 Omniglot, 2 Sprites)")
    parser.add_argument("--prior", choices=PRIORS, help="p(z) (default gaussian; mixture is 2-D)")
    parser.add_argument("--adversarial-lr", type=machinery.positive_float,
                        help="learning rate of the discriminator and of the encoder's adversarial update "
                        "(default: --lr, as the paper)")
    parser.add_argument("--clip", action=argparse.BooleanOptionalAction,
                        help="clip D's probabilities to [0.001, 0.999] and the decoder's to [0.001, 0.99] in the "
                        "losses, as the authors' notebooks (default: on for omniglot and sprites, off otherwise)")
    parser.add_argument("--update-order", choices=UPDATE_ORDERS,
                        help="adversarial-first (default: discriminator, encoder, reconstruction, as the authors' "
                        "notebooks) or reconstruction-first (the AAE paper's order)")
    parser.add_argument("--init", choices=tuple(aae.INITS), help="initial weights of the fully connected "
                        "networks: glorot (default, the authors' lasagne), he (short Omniglot runs: see "
                        "docs/daae.md) or normal")
    return parser


def check_args(args):
    """The flags argparse cannot check alone; returns args (the mixture prior sets --latent-dim 2)."""
    if args.prior == "mixture":
        if args.latent_dim not in (None, 2):
            raise machinery.CLIError("the mixture prior is 2-D; drop --latent-dim or set it to 2")
        args.latent_dim = 2
    if args.clip and args.dataset in toy.MIXTURES:
        raise machinery.CLIError(f"--clip clips pixel probabilities, and {args.dataset} holds points; drop --clip")
    return args


def parse_args(argv):
    parser = add_flags(machinery.model_parser("daae", __doc__))
    return check_args(machinery.describe_defaults(parser, DEFAULTS).parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    train(common.start_run("daae", args, DEFAULTS, variant=args.prior if args.prior != "gaussian" else None))


if __name__ == "__main__":
    machinery.cli(main)
