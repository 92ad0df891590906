"""Learning Priors for Adversarial Autoencoders (Wang, Peng, Ko), APSIPA Transactions on Signal and
Information Processing, 2020, arXiv:1909.04443.

An AAE whose prior is learned. A code generator CG (the paper's word) turns simple noise z ~ N(0, I),
and in the conditional settings a label s, into a latent code z_c = CG(z[, s]) that the decoder
draws images from. Two discriminators: D_C in code space (codes z_c "real", encodings enc(x)
"fake") and D_I in image space (real images against decoded codes dec(z_c) and reconstructions
dec(enc(x))). Each mini-batch has two phases (Algorithm 1, Figure 3):

  AAE phase (CG fixed), trained as an AAE:
    min_{enc, dec}  L_rec = || F(dec(enc(x))) - F(x) ||^2,  F = D_I's last conv layer  (Eq. 6)
    max_{D_C}  log D_C(z_c) + log(1 - D_C(enc(x)))                                    (Eq. 5)
    min_enc    -log D_C(enc(x))
  Prior-improvement phase (encoder fixed):
    max_{D_I}  log D_I(x) + log(1 - D_I(dec(z_c))) + log(1 - D_I(dec(enc(x))))    (Eq. 4, Alg. 1)
    min_{CG, dec}  -log D_I(dec(z_c)) - log D_I(dec(enc(x)))   (the decoder too: footnote 2)

Conditional priors (Section 3.B). Supervised: CG(z, s) takes the image's label s, D_C sees
(code, s) (Eq. 8), and a classifier Q on D_I's hidden layer recovers s from dec(z_c); its
cross-entropy, InfoGAN's bound on I(s; dec(z_c)), L_I = -E_{z,s}[log Q(s | dec(CG(z, s)))] (Eq. 7),
trains CG, the decoder and Q. Categorical (the paper's "unsupervised setting", Figure 5): s is
uniform over K categories, D_C class-agnostic, L_I as above.

Ablation switches (Table 3): --no-learned-prior (no CG: z_c = z, or [one-hot s, z]),
--pixel-loss (pixel MSE instead of Eq. 6), --no-decoder-in-prior-phase. Table 3's rows:
  AAE baseline    --no-learned-prior --pixel-loss --no-decoder-in-prior-phase
  A               --pixel-loss --no-decoder-in-prior-phase
  A + B           --no-decoder-in-prior-phase
  A + B + C       (no switch: the full model)

    python learned_prior_aae.py                                   # digits, offline, about a minute on a CPU
    python learned_prior_aae.py --dataset mnist --setting supervised --channels 8  # 1/8 of the width
"""

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aae
import common
import conv_networks
import machinery
import toy

SETTINGS = ("unsupervised", "supervised", "categorical")
# The paper gives no optimiser settings, batch size or epochs in its text (its appendix tables are
# images): Adam with the DCGAN settings, batch 64. digits (8x8, offline) is a small setting of ours.
# The codes are the unsupervised setting's, Figure 8's: 8-D for MNIST, 64-D for CIFAR-10 (the paper
# gives no CG input size, so the noise is as large as the code).
PAPER_NETWORKS = dict(conv=True, channels=64, hidden=None, image_discriminator_hidden=1000,
                      code_discriminator_hidden=[1000, 500, 200], lr=2e-4, batch_size=64)
DEFAULTS = {"digits": dict(conv=False, hidden=[256, 256], image_discriminator_hidden=256,
                           code_discriminator_hidden=[256, 256], latent_dim=8, noise_dim=8, lr=1e-3, batch_size=64,
                           epochs=100),
            "mnist": dict(PAPER_NETWORKS, latent_dim=8, noise_dim=8, epochs=50),
            **{name: dict(PAPER_NETWORKS, latent_dim=64, noise_dim=64, epochs=100) for name in ("cifar10", "svhn")},
            # points in the plane: toy.NETWORKS' width and length, a 2-D code in every setting (ours)
            **{name: dict(conv=False, hidden=[128, 128], image_discriminator_hidden=128,
                          code_discriminator_hidden=[128, 128], latent_dim=2, noise_dim=2, lr=1e-3, batch_size=100,
                          epochs=5) for name in toy.MIXTURES}}
FULL_MODEL = dict(setting="unsupervised", learned_prior=True, reconstruction="perceptual",
                  decoder_in_prior_phase=True)  # the paper's full model; the ablation's flags turn parts off
# The conditional settings' codes of images: Figure 10 (10-D one-hot + 54-D noise), Figure 12 (10 + 90-D).
CODE_SIZES = {"supervised": dict(latent_dim=64, noise_dim=54), "categorical": dict(latent_dim=100, noise_dim=90)}
CATEGORIES = 10
SETTING_DEFAULTS = {setting: {name: {**FULL_MODEL, **row, **(CODE_SIZES.get(setting, {}) if name not in toy.MIXTURES
                                                                else {}),
                                     "setting": setting, "categories": CATEGORIES if setting == "categorical" else None}
                              for name, row in DEFAULTS.items()} for setting in SETTINGS}  # each setting's, complete
ADAM_BETAS = (0.5, 0.999)  # DCGAN's (Radford et al.): the paper gives none
leaky_relu = functools.partial(nn.LeakyReLU, 0.2)  # the paper says LeakyReLU, not its slope: DCGAN's


# ---------------------------------------------------------------------------------------------
# Networks: D_I, CG and D_C (Tables A2-A3), the model; for digits and points fully connected ones
# ---------------------------------------------------------------------------------------------


def fc_image_features(image_shape, hidden):
    """D_I's feature layers for small images: LeakyReLU layers; the last one is F (Eq. 6)."""
    sizes = [math.prod(image_shape), *hidden]
    return nn.Sequential(nn.Flatten(), aae.mlp(sizes, leaky_relu), leaky_relu()), sizes[-1]


class ImageDiscriminator(nn.Module):
    """D_I (Table A3): feature layers F, then FC `units` + LeakyReLU, then FC 1 (the logit; the
    sigmoid is inside the loss). Returns (logit, hidden layer's activations); Q reads them."""

    def __init__(self, features, feature_size, units):
        super().__init__()
        self.features = features
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(feature_size, units), leaky_relu())
        self.real_or_fake = nn.Linear(units, 1)

    def forward(self, x):
        h = self.hidden(self.features(x))
        return self.real_or_fake(h).squeeze(1), h


class CodeGenerator(nn.Module):
    """CG (Table A2): [noise, one-hot label] -> FC 2x input + BN + ReLU -> FC code + BN."""

    def __init__(self, noise_dim, num_labels, latent_dim):
        super().__init__()
        n_in = noise_dim + num_labels
        self.net = nn.Sequential(nn.Linear(n_in, 2 * n_in), nn.BatchNorm1d(2 * n_in), nn.ReLU(),
                                 nn.Linear(2 * n_in, latent_dim), nn.BatchNorm1d(latent_dim))

    def forward(self, z, onehot=None):
        return self.net(z if onehot is None else torch.cat([z, onehot], 1))


class LearnedPriorAAE(nn.Module):
    """Encoder, decoder, CG, D_C, D_I and Q, and what eval.py uses: encode, decode, sample, and
    sigma (0: nothing corrupts the encoder's input)."""

    def __init__(self, image_shape, latent_dim, noise_dim, setting="unsupervised", num_labels=0, learned_prior=True,
                 conv=False, channels=64, hidden=(256, 256), image_discriminator_hidden=1000,
                 code_discriminator_hidden=(1000, 500, 200)):
        super().__init__()
        self.setting, self.num_labels = setting, num_labels if setting != "unsupervised" else 0
        self.latent_dim, self.noise_dim, self.sigma = latent_dim, noise_dim, 0.0
        if conv:
            self.encoder = conv_networks.ResidualEncoder(image_shape, latent_dim, channels)
            self.decoder = conv_networks.ResidualDecoder(image_shape, latent_dim, channels)
            features, feature_size = conv_networks.image_discriminator_features(image_shape, channels, leaky_relu)
        else:
            self.encoder = aae.Encoder(image_shape, hidden, latent_dim)
            self.decoder = aae.Decoder(image_shape, hidden[::-1], latent_dim)
            features, feature_size = fc_image_features(image_shape, hidden)
        self.code_generator = CodeGenerator(noise_dim, self.num_labels, latent_dim) if learned_prior else None
        # D_C (Table A3): the AAE's discriminator, with LeakyReLU. Eq. 8: only the supervised D_C
        # sees the label; the categorical one is class-agnostic.
        self.code_discriminator = aae.Discriminator(latent_dim, code_discriminator_hidden,
                                                    self.num_labels if setting == "supervised" else 0, leaky_relu)
        self.image_discriminator = ImageDiscriminator(features, feature_size, image_discriminator_hidden)
        self.classifier = nn.Linear(image_discriminator_hidden, self.num_labels) if self.num_labels else None  # Q

    def onehot(self, labels):
        return None if labels is None else F.one_hot(labels, self.num_labels).float()

    def code_label(self, labels):
        """D_C's label input: one-hot s in the supervised setting (Eq. 8), else None (Eq. 5)."""
        return self.onehot(labels) if self.setting == "supervised" else None

    def prior_code(self, z, labels=None):
        """z_c = CG(z[, s]); the AAE baseline uses the simple prior itself, [one-hot s, z]."""
        onehot = self.onehot(labels)
        if self.code_generator is not None:
            return self.code_generator(z, onehot)
        return z if onehot is None else torch.cat([onehot, z], 1)

    def sample_noise(self, n):
        return torch.randn(n, self.noise_dim, device=self.device())

    def sample_labels(self, n):
        """s ~ uniform over the labels (None in the unsupervised setting)."""
        return torch.randint(self.num_labels, (n,), device=self.device()) if self.num_labels else None

    def labels_for(self, y):
        """s for a phase of a batch y: y itself (supervised), a fresh uniform draw (categorical), or None."""
        return y if self.setting == "supervised" else self.sample_labels(len(y))

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def sample_prior(self, n):
        """z_c = CG(z, s), z ~ N(0, I), s uniform: codes of the learned prior."""
        return self.prior_code(self.sample_noise(n), self.sample_labels(n))

    def sample(self, n):
        """x = dec(CG(z, s)): samples of the learned prior."""
        return self.decode(self.sample_prior(n))

    def device(self):
        return next(self.parameters()).device


def num_labels(config):
    """K, the size of s: the dataset's classes (supervised), --categories, or 0."""
    return {"supervised": config["num_classes"], "categorical": config["categories"]}.get(config["setting"], 0)


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return LearnedPriorAAE(
        config["image_shape"], config["latent_dim"], config["noise_dim"], config["setting"], num_labels(config),
        config["learned_prior"], config["conv"], config["channels"], config["hidden"],
        config["image_discriminator_hidden"], config["code_discriminator_hidden"])


# ---------------------------------------------------------------------------------------------
# Losses, the updates of Algorithm 1, and the step that orders them
# ---------------------------------------------------------------------------------------------
# Where the printed Algorithm 1 and the text disagree we follow the equations: the AAE phase
# updates D_C, not D_I (a typo in the pseudo-code); Eq. 6's squared error, not the
# pseudo-code's unsquared norm; and the prior-improvement phase updates CG (the text, Figure
# 3(a)), which the pseudo-code leaves out. The reconstructions among D_I's fakes, and the
# decoder trained against D_I on them, come from the pseudo-code (the text is silent).


# Eqs. 4-5 with aae.py's losses: the discriminators' cross-entropy (ln 2 per term when balanced: 1.386
# for D_C, 2.079 for D_I with its two kinds of fake), and -log D(fake), the non-saturating form of the
# paper's min over log(1 - D(fake)), for the encoder against D_C and for CG against D_I.
discriminator_loss = aae.discriminator_loss
encoder_adversarial_loss = code_generator_adversarial_loss = aae.encoder_adversarial_loss


def perceptual_loss(model, x, x_rec):
    """Eq. 6, ||F(dec(enc(x))) - F(x)||^2 with F = D_I's last convolutional layer, as a mean over
    features and images (Section 4.C: "the mean squared error in feature domain"). x and x_rec go
    through D_I in one batch so its BatchNorm treats both alike."""
    target, reconstructed = model.image_discriminator.features(torch.cat([x, x_rec])).flatten(1).chunk(2)
    return F.mse_loss(reconstructed, target)


def information_loss(model, activations, labels):
    """Eq. 7: L_I = -E[log Q(s | dec(z_c))], Q read from D_I's hidden layer's activations on dec(z_c)."""
    return F.cross_entropy(model.classifier(activations), labels)


def reconstruction_update(model, optimizer, x, perceptual=True):
    """AAE phase: the autoencoder takes a step on L_rec, the perceptual loss (Eq. 6), or with
    --pixel-loss the pixel MSE. D_I is frozen: its features only measure the error here."""
    with common.frozen(model.image_discriminator):
        x_rec = model.decoder(model.encoder(x))
        loss = perceptual_loss(model, x, x_rec) if perceptual else F.mse_loss(x_rec, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def code_discriminator_update(model, optimizer, x, y):
    """AAE phase: D_C learns prior codes z_c (real) from encodings enc(x) (fake), Eq. 5; in the
    supervised setting each beside its label (Eq. 8)."""
    s = model.labels_for(y)
    with torch.no_grad():
        z_c, z_fake = model.prior_code(model.sample_noise(len(x)), s), model.encoder(x)
    loss = discriminator_loss(*aae.real_and_fake_logits(model.code_discriminator, z_c, z_fake, model.code_label(s)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def encoder_adversarial_update(model, optimizer, x, y):
    """AAE phase: the encoder, as the generator of the code game, learns to fool the updated D_C.
    D_C is frozen for this backward pass: only the gradient through it to the codes is needed."""
    with common.frozen(model.code_discriminator):
        loss = encoder_adversarial_loss(model.code_discriminator(model.encoder(x), model.code_label(y)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def image_discriminator_update(model, optimizer, x, z, s):
    """Prior-improvement phase: D_I learns real images from decoded prior codes dec(z_c) and from
    reconstructions dec(enc(x)) (Eq. 4 + Algorithm 1)."""
    with torch.no_grad():
        x_prior, x_rec = model.decoder(model.prior_code(z, s)), model.decoder(model.encoder(x))
    prior_logits, prior_activations = model.image_discriminator(x_prior)
    loss = discriminator_loss(model.image_discriminator(x)[0], prior_logits, model.image_discriminator(x_rec)[0])
    losses = {"image_discriminator": loss.detach()}
    if model.classifier is not None:
        # Q learns to name s from dec(z_c) (Eq. 7). Q is a head on D_I's hidden layer, and, as
        # in InfoGAN, the layers it shares with D_I learn from L_I too: we read Algorithm 1's
        # "theta_Q" as Q with its shared layers (the paper does not say).
        information = information_loss(model, prior_activations, s)
        loss = loss + information
        losses["information_q"] = information.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return losses


def code_generator_update(model, optimizer, x, z, s, decoder_in_prior_phase=True):
    """Prior-improvement phase: CG takes a step against the updated D_I, for dec(z_c) to pass as
    real (Eq. 4) and, in the conditional settings, to show Q its s (Eq. 7). The decoder learns
    here too (footnote 2), also for its reconstructions to pass as real (the pseudo-code's),
    unless --no-decoder-in-prior-phase fixes it. D_I, Q and the encoder are fixed."""
    with common.frozen(model.image_discriminator, model.classifier, model.encoder,
                       None if decoder_in_prior_phase else model.decoder):
        logits, activations = model.image_discriminator(model.decoder(model.prior_code(z, s)))
        adversarial = code_generator_adversarial_loss(logits)
        if decoder_in_prior_phase:
            adversarial = adversarial + code_generator_adversarial_loss(
                model.image_discriminator(model.decoder(model.encoder(x)))[0])
        losses, loss = {"code_generator_adversarial": adversarial.detach()}, adversarial
        if model.classifier is not None:
            information = information_loss(model, activations, s)  # Eq. 7, now for CG and the decoder
            loss = loss + information
            losses["information"] = information.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return losses


def train_step(model, optimizers, x, y, perceptual=True, decoder_in_prior_phase=True):
    """One mini-batch of Algorithm 1: the AAE phase, then the prior-improvement phase. Returns
    detached losses (no host sync)."""
    # "update the autoencoder following the training procedure of AAE" (Section 3.A): reconstruction
    # and regularisation each with its own Adam, not the printed one step of the encoder on
    # -L_GAN^C + L_rec (docs/learned_prior.md says why).
    reconstruction = "perceptual_reconstruction" if perceptual else "pixel_reconstruction"
    losses = {reconstruction: reconstruction_update(model, optimizers["reconstruction"], x, perceptual),
              "code_discriminator": code_discriminator_update(model, optimizers["code_discriminator"], x, y),
              "encoder_adversarial": encoder_adversarial_update(model, optimizers["encoder_adversarial"], x, y)}
    s, z = model.labels_for(y), model.sample_noise(len(x))  # one draw for both updates of the phase
    losses.update(image_discriminator_update(model, optimizers["image_discriminator"], x, z, s))
    if "code_generator" in optimizers:  # else nothing learns against D_I (the AAE baseline)
        losses.update(code_generator_update(model, optimizers["code_generator"], x, z, s, decoder_in_prior_phase))
    return losses


def make_optimizers(model, lr, decoder_in_prior_phase=True):
    """One Adam per update: a network pulled by two different losses (the encoder, the decoder)
    has one for each, with its own moment estimates. D_I's also trains Q; CG's also the decoder
    (footnote 2), and without a learned prior only the decoder."""
    networks = {"reconstruction": [model.encoder, model.decoder],
                "code_discriminator": [model.code_discriminator],
                "encoder_adversarial": [model.encoder],
                "image_discriminator": [model.image_discriminator, model.classifier],
                "code_generator": [model.code_generator, model.decoder if decoder_in_prior_phase else None]}
    return {name: common.adam([p for m in group if m is not None for p in m.parameters()], lr, betas=ADAM_BETAS)
            for name, group in networks.items() if any(m is not None for m in group)}


# ---------------------------------------------------------------------------------------------
# Pictures: samples (Figures 10 and 12), reconstructions, the code space (Figures 11 and 13)
# ---------------------------------------------------------------------------------------------


def save_pictures(model, run, fixed_noise, epoch):
    """samples.png (and samples/epoch_NNN.png) of the fixed noise: with labels, one row per noise
    vector and one column per label (Figures 10 and 12); reconstructions.png (aae.py's); every tenth
    of the run, code_space.png (Figures 11 and 13). Points in the plane: toy.save_pictures."""
    out, data, k = run.out, run.data, model.num_labels
    if toy.is_points(run.config["image_shape"]):
        return toy.save_pictures(model, run, epoch, {"samples dec(CG(z))": model.sample(2000)})
    if k:
        samples = aae.label_grid(lambda z, s: model.decode(model.prior_code(z, s)), fixed_noise, k)
    else:
        samples = model.decode(model.prior_code(fixed_noise))
    for path in (out / "samples" / f"epoch_{epoch:03d}.png", out / "samples.png"):
        common.save_grid(samples, path, nrow=k or 10)
    x = common.float_images(data.x_test[:50].to(run.device))
    aae.save_reconstructions([x, model.decode(model.encode(x))], ["test images", "reconstructions"],
                             out / "reconstructions.png")
    if run.every_tenth(epoch):
        s = model.sample_labels(2000)
        prior = None if s is None else (model.prior_code(model.sample_noise(2000), s).cpu(), s)
        common.save_code_space(model, data.x_test, data.y_test, out / "code_space.png", prior=prior)


# ---------------------------------------------------------------------------------------------
# Training, flags and main
# ---------------------------------------------------------------------------------------------


def train(run):
    config, data = run.config, run.data
    machinery.check_networks_fit(build_model, config, run.device, flags=("--latent-dim", "--channels", "--image-size"))
    model = build_model(config).to(run.device)
    optimizers = make_optimizers(model, config["lr"], config["decoder_in_prior_phase"])
    run.track(model, optimizers)
    fixed_noise = model.sample_noise(10 if model.num_labels else 100)  # 10 rows of labels, or 100 samples
    perceptual = config["reconstruction"] == "perceptual"

    for epoch in run.epochs():
        for x, y in run.batches(data.x_train, data.y_train):
            with common.autocast(run):
                losses = train_step(model, optimizers, x, y, perceptual, config["decoder_in_prior_phase"])
            run.record(losses)
        if run.saving(epoch):
            with common.drawing(model):
                save_pictures(model, run, fixed_noise, epoch)
            run.save_checkpoint()
    run.done()
    return model


def parse_args(argv):
    parser = machinery.model_parser("learned_prior_aae", __doc__)
    parser.add_argument("--setting", choices=SETTINGS,
                        help="unsupervised (default): CG(z); supervised: CG(z, label), D_C(code, label), Q; "
                             "categorical: CG(z, s), s uniform over --categories, class-agnostic D_C, Q")
    parser.add_argument("--noise-dim", type=machinery.positive_int,
                        help="size of CG's Gaussian input z (default: per setting and dataset, listed below)")
    parser.add_argument("--categories", type=machinery.at_least_two,
                        help=f"number of categories of s in the categorical setting (default {CATEGORIES})")
    parser.add_argument("--channels", type=machinery.positive_int,
                        help="width of the 32x32 networks (default 64, the paper's; 8 on a CPU: docs/learned_prior.md)")
    parser.add_argument("--no-learned-prior", dest="learned_prior", action="store_const", const=False,
                        help="ablation: no code generator, codes straight from N(0, I) (the AAE baseline)")
    parser.add_argument("--pixel-loss", dest="reconstruction", action="store_const", const="pixel",
                        help="ablation: pixel MSE as the reconstruction loss instead of Eq. 6")
    parser.add_argument("--no-decoder-in-prior-phase", dest="decoder_in_prior_phase", action="store_const",
                        const=False, help="ablation: only CG (and Q) learn against D_I; the decoder is fixed there")
    machinery.describe_defaults(parser, DEFAULTS).epilog += "\n--latent-dim / --noise-dim of images in the " + \
        ", ".join(f"{setting} setting {row['latent_dim']}/{row['noise_dim']}" for setting, row in CODE_SIZES.items())
    args = parser.parse_args(argv)
    if args.categories is not None and (args.setting or FULL_MODEL["setting"]) != "categorical":
        raise machinery.CLIError("--categories is for --setting categorical (supervised uses the dataset's classes)")
    if args.learned_prior is False and args.noise_dim is not None:
        raise machinery.CLIError("with --no-learned-prior the code is [one-hot label, noise]: set --latent-dim, "
                                 "not --noise-dim")
    return args


def fill_settings(config, data):
    """The flags checked against the data, and the baseline's noise size, before config.json is written."""
    if config["setting"] == "supervised":
        machinery.require_labels(data, "--setting supervised")
    if config["channels"] is not None and not config["conv"]:
        raise machinery.CLIError(f"--channels sets the width of the 32x32 networks; {config['dataset']} uses the "
                                 "fully connected ones: drop --channels")
    if config["conv"] and max(config["image_shape"][1:]) > conv_networks.CONV_SIZE:
        raise machinery.CLIError("the paper's networks take images up to 32x32; add --image-size 32")
    k = num_labels(config)
    if not config["learned_prior"]:  # the baseline's code is [one-hot s (K), noise]
        if config["latent_dim"] <= k:
            raise machinery.CLIError(f"--latent-dim {config['latent_dim']} leaves no room for noise next to the "
                                     f"{k} label dimensions; choose a larger one")
        config["noise_dim"] = config["latent_dim"] - k


def main(argv=None):
    args = parse_args(argv)
    setting = args.setting or FULL_MODEL["setting"]
    defaults = SETTING_DEFAULTS[setting]
    if args.latent_dim is not None:  # a code size alone: the noise keeps the setting's room for s
        defaults = {name: {**row, "noise_dim": max(1, args.latent_dim - (row["latent_dim"] - row["noise_dim"]))}
                    for name, row in defaults.items()}
    train(common.start_run("learned_prior_aae", args, defaults,
                           variant=setting if setting != FULL_MODEL["setting"] else None, fill=fill_settings))


if __name__ == "__main__":
    machinery.cli(main)
