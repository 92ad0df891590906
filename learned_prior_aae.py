"""Learning Priors for Adversarial Autoencoders (Wang, Peng, Ko), APSIPA Transactions on Signal and
Information Processing, Cambridge University Press, 2020.

An AAE whose prior is learned. A code generator CG turns simple noise z ~ N(0, I) (and, in
the conditional settings, a label s) into a latent code z_c = CG(z[, s]); the decoder draws
images from those codes. Two discriminators: D_C in code space (codes z_c are "real",
encodings enc(x) "fake") and D_I in image space (real images against decoded codes dec(z_c)
and reconstructions dec(enc(x))). Each mini-batch has two phases (Algorithm 1, Figure 3):

  AAE phase (CG fixed), trained as an AAE:
    min_{enc, dec}  L_rec = || F(dec(enc(x))) - F(x) ||^2,  F = D_I's last conv layer  (Eq. 6)
    max_{D_C}  log D_C(z_c) + log(1 - D_C(enc(x)))                                    (Eq. 5)
    min_enc    -log D_C(enc(x))

  Prior-improvement phase (encoder fixed):
    max_{D_I}  log D_I(x) + log(1 - D_I(dec(z_c))) + log(1 - D_I(dec(enc(x))))    (Eq. 4, Alg. 1)
    min_{CG, dec}  -log D_I(dec(z_c)) - log D_I(dec(enc(x)))   (the decoder too: footnote 2)

Conditional priors (Section 3.B). Supervised: CG(z, s) takes the image's label s, D_C sees
(code, s) (Eq. 8), and a classifier Q on D_I's hidden layer recovers s from dec(z_c); its
cross-entropy, the variational bound on I(s; dec(z_c)) of InfoGAN,

    L_I = -E_{z, s} [ log Q(s | dec(CG(z, s))) ]                                       (Eq. 7)

trains CG, the decoder and Q. Categorical (the paper's "unsupervised setting", Figure 5): s
is drawn uniformly from K categories, D_C is class-agnostic, L_I as above.

Ablation switches (Table 3): --no-learned-prior (no CG: z_c = z, or [one-hot s, z]),
--pixel-loss (pixel MSE instead of Eq. 6), --no-decoder-in-prior-phase. Table 3's rows:
  AAE baseline    --no-learned-prior --pixel-loss --no-decoder-in-prior-phase
  A               --pixel-loss --no-decoder-in-prior-phase
  A + B           --no-decoder-in-prior-phase
  A + B + C       (no switch: the full model)

Images are in [0, 1] outside the networks (the project's contract); the 32x32 networks work
on the paper's [-1, 1] scale inside (x -> 2x - 1 on the way in, (tanh + 1) / 2 on the way
out), and pad smaller images (MNIST's 28x28) to 32x32 with background, cropping on output.

Pictures: samples.png (in the conditional settings the layout of Figures 10 and 12: each row
one noise vector, each column one label), reconstructions.png, and code_space.png (Figures 11
and 13: encoder outputs and CG outputs projected to 2-D by one PCA).

    python learned_prior_aae.py                                   # digits, offline, about a minute on a CPU
    python learned_prior_aae.py --setting supervised
    python learned_prior_aae.py --dataset mnist --setting supervised --channels 8  # 1/8 of the width
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aae
import common

SETTINGS = ("unsupervised", "supervised", "categorical")

# The paper gives no optimiser settings, batch size or epochs in its text (its appendix
# tables are images): Adam with the DCGAN settings (lr 2e-4, beta1 0.5), batch 64, for every
# network. digits (8x8, offline) is a small fully connected setting of ours.
PAPER_NETWORKS = dict(conv=True, channels=64, image_discriminator_hidden=1000,
                      code_discriminator_hidden=[1000, 500, 200], lr=2e-4, batch_size=64)
DEFAULTS = {
    "digits": dict(conv=False, hidden=[256, 256], image_discriminator_hidden=256, code_discriminator_hidden=[256, 256],
                   lr=1e-3, batch_size=64, epochs=100),
    "mnist": dict(PAPER_NETWORKS, epochs=50),
    "cifar10": dict(PAPER_NETWORKS, epochs=100),
    "svhn": dict(PAPER_NETWORKS, epochs=100),
}
SHARED_DEFAULTS = dict(setting="unsupervised", learned_prior=True, reconstruction="perceptual",
                       decoder_in_prior_phase=True)
# (latent_dim, noise_dim) per setting: Figure 8 (8-D MNIST, 64-D CIFAR-10 codes; the paper
# gives no CG input size, so the noise is as large as the code), Figure 10 (10-D one-hot +
# 54-D noise -> 64-D code), Figure 12 (10 categories + 90-D noise -> 100-D code).
CODE_SIZES = {
    "unsupervised": {"digits": (8, 8), "mnist": (8, 8), "cifar10": (64, 64), "svhn": (64, 64)},
    "supervised": {name: (64, 54) for name in DEFAULTS},
    "categorical": {name: (100, 90) for name in DEFAULTS},
}
CATEGORIES = 10
ADAM_BETAS = (0.5, 0.999)
LEAKY_SLOPE = 0.2  # the paper says LeakyReLU, not its slope; DCGAN's
CONV_SIZE = 32  # the appendix networks are for 32x32 images


# ---------------------------------------------------------------------------------------------
# Networks: the appendix's 32x32 convolutional networks (Tables A1-A3, as transcribed by the
# reproduction report) and a small fully connected variant for 8x8 digits
# ---------------------------------------------------------------------------------------------


def pad_to(x, size):
    """Pad H x W images with background (0) to size x size, centred (MNIST 28 -> 32)."""
    dh, dw = size - x.shape[-2], size - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)) if dh or dw else x


def crop_to(x, height, width):
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


def to_conv_scale(x):
    """[0, 1] images of any size up to 32x32 -> the paper's [-1, 1] images at 32x32."""
    return 2 * pad_to(x, CONV_SIZE) - 1


class ToConvScale(nn.Module):
    def forward(self, x):
        return to_conv_scale(x)


# The tables name residual blocks without their insides: ours are He et al.'s (two 3x3
# convolutions with BatchNorm, a 1x1 projection on the shortcut when the shape changes).
class DownBlock(nn.Module):
    """Residual block, 3x3 convolutions; stride 2 halves the size (a "down-sampling" block)."""

    def __init__(self, n_in, n_out, stride=1):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False), nn.BatchNorm2d(n_out))
        self.shortcut = nn.Identity() if n_in == n_out and stride == 1 else nn.Sequential(
            nn.Conv2d(n_in, n_out, 1, stride, bias=False), nn.BatchNorm2d(n_out))

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class UpBlock(nn.Module):
    """Up-sampling residual block: a 4x4 stride-2 transposed convolution doubles the size."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.residual = nn.Sequential(
            nn.ConvTranspose2d(n_in, n_out, 4, 2, 1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False), nn.BatchNorm2d(n_out))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(n_in, n_out, 1, bias=False),
                                      nn.BatchNorm2d(n_out))

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """Table A1: 3x3 conv 64 stride 2; residual block 64; down-sampling residual blocks 128,
    256, 512; average pool; FC 2 x code + BN + ReLU; FC code (linear). `channels` = 64 is the
    paper's width; smaller values scale every layer (for CPU runs)."""

    def __init__(self, image_shape, latent_dim, channels=64):
        super().__init__()
        c = channels
        # With the transcribed strides a 32x32 image is 2x2 after the last block, where the table
        # says "4x4 average pooling": we average over whatever is left (the same on a 4x4 map).
        self.net = nn.Sequential(
            nn.Conv2d(image_shape[0], c, 3, 2, 1), nn.ReLU(),
            DownBlock(c, c), DownBlock(c, 2 * c, 2), DownBlock(2 * c, 4 * c, 2), DownBlock(4 * c, 8 * c, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8 * c, 2 * latent_dim), nn.BatchNorm1d(2 * latent_dim), nn.ReLU(),
            nn.Linear(2 * latent_dim, latent_dim))

    def forward(self, x):
        return self.net(to_conv_scale(x))


class ConvDecoder(nn.Module):
    """Table A1: 4x4 transposed conv 512 + BN + ReLU (1x1 -> 4x4); up-sampling residual blocks
    256, 128, 64 (8, 16, 32); 3x3 conv to the image channels, tanh. Returns [0, 1] images of
    image_shape (the centre of the 32x32 output)."""

    def __init__(self, image_shape, latent_dim, channels=64):
        super().__init__()
        c, self.image_shape = channels, tuple(image_shape)
        self.net = nn.Sequential(
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, 8 * c, 4, 1, 0, bias=False), nn.BatchNorm2d(8 * c), nn.ReLU(),
            UpBlock(8 * c, 4 * c), UpBlock(4 * c, 2 * c), UpBlock(2 * c, c),
            nn.Conv2d(c, image_shape[0], 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return crop_to((self.net(z) + 1) / 2, *self.image_shape[1:])


def conv_image_features(image_shape, channels=64):
    """Table A3, D_I's convolutional layers: 4x4 stride-2 convs 64 (LeakyReLU), 128 and 256
    (BN + LeakyReLU). Their output is F of the perceptual loss (Eq. 6)."""
    c = channels

    def block(n_in, n_out, norm):
        return [nn.Conv2d(n_in, n_out, 4, 2, 1, bias=not norm), *([nn.BatchNorm2d(n_out)] if norm else []),
                nn.LeakyReLU(LEAKY_SLOPE)]

    net = nn.Sequential(*block(image_shape[0], c, False), *block(c, 2 * c, True), *block(2 * c, 4 * c, True))
    return nn.Sequential(ToConvScale(), net), 4 * c * (CONV_SIZE // 8) ** 2


def fc_image_features(image_shape, hidden):
    """D_I's feature layers for small images: LeakyReLU layers; the last one is F (Eq. 6)."""
    sizes = [math.prod(image_shape), *hidden]
    layers = aae.mlp(sizes, lambda: nn.LeakyReLU(LEAKY_SLOPE))
    return nn.Sequential(nn.Flatten(), layers, nn.LeakyReLU(LEAKY_SLOPE)), sizes[-1]


class ImageDiscriminator(nn.Module):
    """D_I (Table A3): feature layers F, then FC `hidden` + LeakyReLU, then FC 1 (the logit;
    the sigmoid is inside the loss). Returns (logit, hidden layer); Q reads the hidden layer."""

    def __init__(self, features, feature_size, hidden):
        super().__init__()
        self.features = features
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(feature_size, hidden), nn.LeakyReLU(LEAKY_SLOPE))
        self.real_or_fake = nn.Linear(hidden, 1)

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


class CodeDiscriminator(nn.Module):
    """D_C (Table A3): FC 1000-500-200 LeakyReLU, FC 1 (logit); with a label, D_C(code, s)."""

    def __init__(self, latent_dim, hidden, label_slots=0):
        super().__init__()
        self.net = aae.mlp([latent_dim + label_slots, *hidden, 1], lambda: nn.LeakyReLU(LEAKY_SLOPE))

    def forward(self, z, onehot=None):
        return self.net(z if onehot is None else torch.cat([z, onehot], 1)).squeeze(1)


class LearnedPriorAAE(nn.Module):
    """Encoder, decoder, CG, D_C, D_I and Q, and what eval.py uses: encode, decode, sample."""

    def __init__(self, image_shape, latent_dim, noise_dim, setting="unsupervised", num_labels=0,
                 learned_prior=True, conv=False, channels=64, hidden=(256, 256), image_discriminator_hidden=1000,
                 code_discriminator_hidden=(1000, 500, 200)):
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}")
        self.setting, self.learned_prior = setting, learned_prior
        self.num_labels = num_labels if setting != "unsupervised" else 0
        self.latent_dim, self.noise_dim, self.sigma = latent_dim, noise_dim, 0.0
        if not learned_prior and noise_dim + self.num_labels != latent_dim:
            raise ValueError("without a code generator the code is [one-hot label, noise]")
        if conv:
            self.encoder = ConvEncoder(image_shape, latent_dim, channels)
            self.decoder = ConvDecoder(image_shape, latent_dim, channels)
            features, feature_size = conv_image_features(image_shape, channels)
        else:
            self.encoder = aae.Encoder(image_shape, hidden, latent_dim)  # the AAE's fully connected networks
            self.decoder = aae.Decoder(image_shape, hidden[::-1], latent_dim)
            features, feature_size = fc_image_features(image_shape, hidden)
        self.code_generator = CodeGenerator(noise_dim, self.num_labels, latent_dim) if learned_prior else None
        # Eq. 8: only the supervised D_C sees the label; the categorical one is class-agnostic.
        self.code_discriminator = CodeDiscriminator(latent_dim, code_discriminator_hidden,
                                                    self.num_labels if setting == "supervised" else 0)
        self.image_discriminator = ImageDiscriminator(features, feature_size, image_discriminator_hidden)
        self.classifier = nn.Linear(image_discriminator_hidden, self.num_labels) if self.num_labels else None  # Q

    def onehot(self, labels):
        return None if labels is None else F.one_hot(labels, self.num_labels).float()

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

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def sample(self, n):
        """x = dec(CG(z, s)), z ~ N(0, I), s uniform: samples of the learned prior."""
        return self.decode(self.prior_code(self.sample_noise(n), self.sample_labels(n)))

    def device(self):
        return next(self.decoder.parameters()).device


def num_labels(config):
    """K, the size of s: the dataset's classes (supervised), --categories, or 0."""
    return {"supervised": config["num_classes"], "categorical": config["categories"]}.get(config["setting"], 0)


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return LearnedPriorAAE(
        config["image_shape"], config["latent_dim"], config["noise_dim"], config["setting"], num_labels(config),
        config["learned_prior"], config["conv"], config.get("channels", 64), config.get("hidden", (256, 256)),
        config["image_discriminator_hidden"], config["code_discriminator_hidden"])


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def discriminator_loss(real_logits, *fake_logits):
    """-[log D(real) + sum over the fakes of log(1 - D(fake))]: each term a batch mean, so a
    balanced D scores ln 2 per term (1.386 for D_C, 2.079 for D_I with its two kinds of fake)."""
    loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    for logits in fake_logits:
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    return loss


def generator_loss(fake_logits):
    """-log D(fake): the non-saturating form of the min over log(1 - D(fake)) in Eqs. 4-5
    (the paper writes the minimax game; this is the form GANs train with). ln 2 when balanced."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def perceptual_loss(model, x, x_rec):
    """Eq. 6, ||F(dec(enc(x))) - F(x)||^2 with F = D_I's last convolutional layer, as a mean
    over features and images (Section 4.C: "the mean squared error in feature domain"). x and
    x_rec go through D_I in one batch so its BatchNorm treats both alike."""
    features = model.image_discriminator.features(torch.cat([x, x_rec])).flatten(1)
    target, reconstructed = features.chunk(2)
    return F.mse_loss(reconstructed, target)


def information_loss(model, hidden, labels):
    """Eq. 7: L_I = -E[log Q(s | dec(z_c))], Q read from D_I's hidden layer of dec(z_c)."""
    return F.cross_entropy(model.classifier(hidden), labels)




# ---------------------------------------------------------------------------------------------
# The two phases of Algorithm 1
# ---------------------------------------------------------------------------------------------
# Where the printed Algorithm 1 and the text disagree we follow the equations: the AAE phase
# updates D_C, not D_I (a typo in the pseudo-code); Eq. 6's squared error, not the
# pseudo-code's unsquared norm; and the prior-improvement phase updates CG (the text, Figure
# 3(a)), which the pseudo-code leaves out. The reconstructions among D_I's fakes, and the
# decoder trained against D_I on them, come from the pseudo-code (the text is silent).


def labels_for(model, y):
    """s for one phase: the images' own labels (supervised), a fresh uniform draw
    (categorical), or None (unsupervised)."""
    if model.setting == "supervised":
        return y
    return model.sample_labels(len(y))


def aae_phase(model, optimizers, x, y, perceptual=True):
    """Algorithm 1, AAE phase, CG fixed: the autoencoder takes a step on L_rec; D_C learns codes
    z_c from encodings; the encoder takes a step against the updated D_C."""
    # "update the autoencoder following the training procedure of AAE" (Section 3.A): its
    # reconstruction and regularisation updates, each with its own Adam. The printed algorithm
    # steps the encoder once on -L_GAN^C + L_rec; with one Adam for both, the adversarial
    # gradient (100x larger early on) drowned L_rec and the encoder collapsed to a point.
    with common.frozen(model.image_discriminator):
        x_rec = model.decoder(model.encoder(x))
        rec_loss = perceptual_loss(model, x, x_rec) if perceptual else F.mse_loss(x_rec, x)  # Eq. 6
    optimizers["reconstruction"].zero_grad(set_to_none=True)
    rec_loss.backward()
    optimizers["reconstruction"].step()

    s = labels_for(model, y)
    dc_onehot = model.onehot(s) if model.setting == "supervised" else None  # Eq. 8; Eq. 5 without s
    with torch.no_grad():
        z_c = model.prior_code(model.sample_noise(len(x)), s)
    z_enc = model.encoder(x)
    d_loss = discriminator_loss(*aae.real_and_fake_logits(model.code_discriminator, z_c, z_enc.detach(),
                                                          dc_onehot))  # Eq. 5
    optimizers["code_discriminator"].zero_grad(set_to_none=True)
    d_loss.backward()
    optimizers["code_discriminator"].step()

    with common.frozen(model.code_discriminator):
        adv_loss = generator_loss(model.code_discriminator(z_enc, dc_onehot))
    optimizers["encoder"].zero_grad(set_to_none=True)
    adv_loss.backward()
    optimizers["encoder"].step()
    return {"reconstruction": rec_loss.detach(), "code_discriminator": d_loss.detach(),
            "encoder_adversarial": adv_loss.detach()}


def prior_improvement_phase(model, optimizers, x, y, decoder_in_prior_phase=True):
    """Algorithm 1, prior-improvement phase: D_I learns real images from decoded codes and
    reconstructions; then CG (and the decoder, footnote 2), with Q in the conditional settings,
    take one step against the updated D_I. The encoder is fixed."""
    s = labels_for(model, y)
    train_decoder = decoder_in_prior_phase
    with torch.no_grad():
        z_enc = model.encoder(x)
    with torch.set_grad_enabled(model.code_generator is not None):
        z_c = model.prior_code(model.sample_noise(len(x)), s)
    with common.frozen(None if train_decoder else model.decoder):
        x_prior = model.decoder(z_c)  # dec(z_c)
        with torch.set_grad_enabled(train_decoder):
            x_rec = model.decoder(z_enc)

    prior_logits, prior_hidden = model.image_discriminator(x_prior.detach())
    d_loss = discriminator_loss(model.image_discriminator(x)[0], prior_logits,
                                model.image_discriminator(x_rec.detach())[0])  # Eq. 4 + Algorithm 1
    losses = {"image_discriminator": d_loss.detach()}
    if model.classifier is not None:
        # Q learns to name s from dec(z_c) (Eq. 7). Q is a head on D_I's hidden layer, and, as
        # in InfoGAN, the layers it shares with D_I learn from L_I too: we read Algorithm 1's
        # "theta_Q" as Q with its shared layers (the paper does not say).
        info_loss = information_loss(model, prior_hidden, s)
        d_loss = d_loss + info_loss
        losses["information_q"] = info_loss.detach()
    optimizers["image_discriminator"].zero_grad(set_to_none=True)
    d_loss.backward()
    optimizers["image_discriminator"].step()

    if "prior" not in optimizers:  # nothing on the generator side learns here
        return losses
    with common.frozen(model.image_discriminator, model.classifier):
        logits, hidden = model.image_discriminator(x_prior)
        g_loss = generator_loss(logits)
        if train_decoder:
            g_loss = g_loss + generator_loss(model.image_discriminator(x_rec)[0])
        total = g_loss
        if model.classifier is not None:
            info_loss = information_loss(model, hidden, s)  # Eq. 7, now for CG and the decoder
            total = total + info_loss
            losses["information"] = info_loss.detach()
        optimizers["prior"].zero_grad(set_to_none=True)
        total.backward()
        optimizers["prior"].step()
    losses["generator_adversarial"] = g_loss.detach()
    return losses


def train_step(model, optimizers, x, y, perceptual=True, decoder_in_prior_phase=True):
    """One mini-batch of Algorithm 1: the AAE phase, then the prior-improvement phase."""
    return {**aae_phase(model, optimizers, x, y, perceptual),
            **prior_improvement_phase(model, optimizers, x, y, decoder_in_prior_phase)}


def make_optimizers(model, lr, decoder_in_prior_phase=True):
    """One Adam per update: a network pulled by two different losses (the encoder, the
    decoder) has one for each, with its own moment estimates."""
    def adam(params):
        return common.adam(params, lr, betas=ADAM_BETAS)

    optimizers = {
        "reconstruction": adam([*model.encoder.parameters(), *model.decoder.parameters()]),
        "code_discriminator": adam(model.code_discriminator.parameters()),
        "encoder": adam(model.encoder.parameters()),
        "image_discriminator": adam([*model.image_discriminator.parameters(),
                                     *(model.classifier.parameters() if model.classifier is not None else [])]),
    }
    prior = [m for m in (model.code_generator, model.decoder if decoder_in_prior_phase else None) if m is not None]
    if prior:
        optimizers["prior"] = adam([p for m in prior for p in m.parameters()])
    return optimizers


# ---------------------------------------------------------------------------------------------
# Pictures: samples (Figures 10 and 12), reconstructions, the code space (Figures 11 and 13)
# ---------------------------------------------------------------------------------------------


def fixed_sample_inputs(model, rows=10):
    """Noise and labels of the sample grid: with labels, `rows` noise vectors times every
    label (row = one noise vector, column = one label, as Figures 10 and 12); else 100 noises."""
    if not model.num_labels:
        return model.sample_noise(100), None
    k = model.num_labels
    z = model.sample_noise(rows).repeat_interleave(k, 0)
    labels = torch.arange(k, device=model.device()).repeat(rows)
    return z, labels


def save_code_space(model, x_test, y_test, path, n_prior=2000):
    """Figures 11 and 13: test encodings (coloured by their true class) and prior codes CG(z, s)
    (coloured by s), both projected by one 2-D PCA fitted to the two sets together."""
    from sklearn.decomposition import PCA

    z_enc = common.map_batches(model.encode, x_test, 500, model.device())
    s = model.sample_labels(n_prior)
    z_c = model.prior_code(model.sample_noise(n_prior), s).cpu()
    pca = PCA(2).fit(torch.cat([z_enc, z_c]).numpy())
    figure = common.plt_figure(figsize=(11, 5))
    panels = [(z_enc, y_test, "encoder output, test images (colour: class)"),
              (z_c, None if s is None else s.cpu(), "prior codes z_c" + (" (colour: s)" if s is not None else ""))]
    for i, (codes, colours, title) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        xy = pca.transform(codes.numpy())
        if colours is None or (colours < 0).all():
            axes.scatter(xy[:, 0], xy[:, 1], s=3, c="grey")
        else:
            points = axes.scatter(xy[:, 0], xy[:, 1], s=3, c=colours, cmap="tab10", vmin=-0.5, vmax=9.5)
            figure.colorbar(points, ax=axes, ticks=range(10))
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("PC 1")
        axes.set_ylabel("PC 2")
    common.save_figure(figure, path)


def save_pictures(model, run, fixed, epoch):
    out, data = run.out, run.data
    z, labels = fixed
    samples = model.decode(model.prior_code(z, labels))
    nrow = model.num_labels or 10
    common.save_grid(samples, out / "samples" / f"epoch_{epoch:03d}.png", nrow=nrow)
    common.save_grid(samples, out / "samples.png", nrow=nrow)
    x = common.float_images(data.x_test[:50].to(run.device))
    rows = [x, model.decode(model.encode(x))]
    common.save_grid(torch.cat([r.view(5, 10, *r.shape[1:]) for r in rows], 1).flatten(0, 1),
                     out / "reconstructions.png")
    epochs = run.config["epochs"]
    if epoch % max(1, epochs // 10) == 0 or epoch == epochs:
        save_code_space(model, data.x_test, data.y_test, out / "code_space.png")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = common.model_parser("learned_prior_aae", __doc__)
    parser.add_argument("--setting", choices=SETTINGS,
                        help="unsupervised (default): CG(z); supervised: CG(z, label), D_C(code, label), Q; "
                             "categorical: CG(z, s), s uniform over --categories, class-agnostic D_C, Q")
    parser.add_argument("--noise-dim", type=common.positive_int,
                        help="size of CG's Gaussian input z (default: per setting, see CODE_SIZES)")
    parser.add_argument("--categories", type=common.positive_int,
                        help=f"number of categories of s in the categorical setting (default {CATEGORIES})")
    parser.add_argument("--channels", type=common.positive_int,
                        help="width of the 32x32 networks (default 64, the paper's; 8 is ~40x faster, "
                             "about a minute per epoch of 8,000 MNIST digits on one CPU core)")
    parser.add_argument("--no-learned-prior", dest="learned_prior", action="store_const", const=False,
                        help="ablation: no code generator, codes straight from N(0, I) (the AAE baseline)")
    parser.add_argument("--pixel-loss", dest="reconstruction", action="store_const", const="pixel",
                        help="ablation: pixel MSE as the reconstruction loss instead of Eq. 6")
    parser.add_argument("--no-decoder-in-prior-phase", dest="decoder_in_prior_phase", action="store_const",
                        const=False, help="ablation: only CG (and Q) learn against D_I; the decoder is fixed there")
    common.describe_defaults(parser, DEFAULTS)
    parser.epilog += "\n--latent-dim / --noise-dim per --setting and dataset (CODE_SIZES):\n" + "\n".join(
        f"  {setting:<13} " + ", ".join(f"{name} {latent}/{noise}" for name, (latent, noise) in sizes.items())
        for setting, sizes in CODE_SIZES.items())
    args = parser.parse_args(argv)
    setting = args.setting or SHARED_DEFAULTS["setting"]
    if args.categories is not None and setting != "categorical":
        raise common.CLIError("--categories is for --setting categorical (supervised uses the dataset's classes)")
    if args.categories is not None and args.categories < 2:
        raise common.CLIError("--categories must be at least 2")
    if args.learned_prior is False and args.noise_dim is not None:
        raise common.CLIError("with --no-learned-prior the code is [one-hot label, noise]: set --latent-dim, "
                              "not --noise-dim")
    return args


def main(argv=None):
    args = parse_args(argv)
    setting = args.setting or SHARED_DEFAULTS["setting"]
    defaults = {}
    for name, row in DEFAULTS.items():
        latent_dim, noise_dim = CODE_SIZES[setting][name]
        defaults[name] = {**SHARED_DEFAULTS, **row, "latent_dim": latent_dim, "noise_dim": noise_dim,
                          "categories": CATEGORIES if setting == "categorical" else None}
        if args.latent_dim is not None:  # a code size alone: the noise keeps the setting's room for s
            defaults[name]["noise_dim"] = max(1, args.latent_dim - (latent_dim - noise_dim))
    run = common.start_run("learned_prior_aae", args, defaults,
                            variant=setting if setting != SHARED_DEFAULTS["setting"] else None)
    config, device, data = run.config, run.device, run.data

    if config["setting"] == "supervised" and data.num_classes < 2:
        raise common.CLIError(f"--setting supervised needs class labels; {config['dataset']} has none")
    if config["channels"] is not None and not config["conv"]:
        raise common.CLIError(f"--channels sets the width of the 32x32 networks; {config['dataset']} uses the "
                              "fully connected ones: drop --channels")
    if config["conv"] and max(config["image_shape"][1:]) > CONV_SIZE:
        raise common.CLIError(f"the paper's networks take images up to {CONV_SIZE}x{CONV_SIZE}; "
                              f"add --image-size {CONV_SIZE}")
    k = num_labels(config)
    if not config["learned_prior"] and config["noise_dim"] != config["latent_dim"] - k:
        config["noise_dim"] = config["latent_dim"] - k  # the baseline's code is [one-hot s (K), noise]
        common.write_json(run.out / "config.json", config)
    if config["noise_dim"] < 1:
        raise common.CLIError(f"--latent-dim {config['latent_dim']} leaves no room for noise next to the "
                              f"{k} label dimensions; choose a larger one")

    model = common.build_model(build_model, config, device, flags=("--latent-dim", "--channels", "--image-size"))
    optimizers = make_optimizers(model, config["lr"], config["decoder_in_prior_phase"])
    perceptual = config["reconstruction"] == "perceptual"
    fixed = fixed_sample_inputs(model)

    def step(x, y):
        with common.autocast(run):  # --precision bf16: torch.autocast to bfloat16; fp32: nothing
            return train_step(model, optimizers, x, y, perceptual, config["decoder_in_prior_phase"])

    common.fit(
        run, model, optimizers, step,
        data.x_train, data.y_train,
        on_epoch_end=lambda epoch: save_pictures(model, run, fixed, epoch),
    )
    common.print_done(run)


if __name__ == "__main__":
    common.cli(main)
