"""Adversarially Learned Inference (Dumoulin, Belghazi, Poole, Mastropietro, Lamb, Arjovsky,
Courville, ICLR 2017), arXiv:1606.00704: the BiGAN-style baseline the DAAE paper argues against.

Two joint distributions over images x and codes z (Section 2):

    encoder  q(x, z) = q(x) q(z|x):   x from the data,  z^ = G_z(x)
    decoder  p(x, z) = p(z) p(x|z):   z ~ N(0, I),      x~ = G_x(z)

A discriminator sees PAIRS, (x, z^) from the encoder against (x~, z) from the decoder; the
encoder and the decoder together, Algorithm 1's "generator" G (the paper's word, which this file
keeps for that pair: its loss, update, optimiser and log column), learn to fool it (Eq. 1):

    min_G max_D  E_q(x)[log D(x, G_z(x))] + E_p(z)[log(1 - D(G_x(z), z))]

G minimises the non-saturating V' of Eq. 4 (D's labels swapped); the ENCODER's pairs are D's "real"
side. When the two joints match, G_x and G_z invert each other (the paper's invertibility result),
yet no reconstruction error is ever minimised: G_x(G_z(x)) is only as faithful as the game makes
it, which is the DAAE paper's point against ALI. The encoder is stochastic, sampled by
reparametrisation so that D's gradient reaches mu and log sigma (Eq. 2; the code calls sigma(x)
`std`, as `sigma` is the std of a corruption in these files):

    z^ = mu(x) + sigma(x) * eps,   eps ~ N(0, I)

The paper's networks are convolutional (Tables 3-5: CIFAR-10, SVHN, CelebA); digits, MNIST, Omniglot
and Sprites get the DAAE's fully connected sizes, so that eval.py compares the two objectives alike.

    python ali.py                                  # digits, offline, about a minute on a CPU
    python ali.py --dataset mnist                  # the DAAE's MNIST sizes, ALI's game
    python ali.py --dataset svhn                   # the paper's SVHN networks (Table 4)
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aae
import common
import machinery
import toy

# Per dataset: the DAAE's fully connected sizes, or the paper's convolutional networks (CONV_NETWORKS)
# with its latent size and epochs; ALI's Adam 1e-4, batch 100 (Tables 3-5). digits (8x8) is ours.
NO_HIDDEN = dict(encoder_hidden=[], decoder_hidden=[], discriminator_hidden=[])  # conv sizes: CONV_NETWORKS
DEFAULTS = {
    "digits": dict(network="mlp", encoder_hidden=[256, 256], decoder_hidden=[256, 256], discriminator_hidden=[256, 256],
                   latent_dim=10, lr=1e-4, batch_size=100, epochs=200),
    "mnist": dict(network="mlp", encoder_hidden=[1000, 1000], decoder_hidden=[1000, 1000],
                  discriminator_hidden=[1000, 1000], latent_dim=10, lr=1e-4, batch_size=100, epochs=100),
    "omniglot": dict(network="mlp", encoder_hidden=[1000] * 3, decoder_hidden=[1000] * 6,
                     discriminator_hidden=[1000, 1000], latent_dim=200, lr=1e-4, batch_size=100, epochs=1000),
    "sprites": dict(network="mlp", encoder_hidden=[1000, 1000], decoder_hidden=[1000, 500, 500],
                    discriminator_hidden=[1000, 1000], latent_dim=200, lr=1e-4, batch_size=100, epochs=5),
    "cifar10": dict(network="cifar10", **NO_HIDDEN, latent_dim=64, lr=1e-4, batch_size=100, epochs=6475),
    "svhn": dict(network="svhn", **NO_HIDDEN, latent_dim=256, lr=1e-4, batch_size=100, epochs=100),
    "celeba": dict(network="celeba", **NO_HIDDEN, latent_dim=256, lr=1e-4, batch_size=100, epochs=123),
    **{name: dict(toy.NETWORKS, network="mlp") for name in toy.MIXTURES},  # points in the plane: toy.py
}
ADAM_BETAS = (0.5, 0.999)  # Tables 3-5: beta1 0.5 (the tables' "beta2 = 10^-3" is Blocks' 1 - beta2)
MLP_DISCRIMINATOR = dict(leak=0.2, maxout=False, dropout=(0.2, 0.5))  # see Discriminator
TOY_DISCRIMINATOR = dict(leak=0.2, maxout=False, dropout=(0.0, 0.0))  # points: no dropout, as the authors' toy
MAXOUT_PIECES = 2  # Table 3: CIFAR-10's D


# ---------------------------------------------------------------------------------------------
# Networks G_z(x), G_x(z), D(x, z): fully connected (digits, MNIST, Omniglot, Sprites), then the
# paper's convolutional ones (CIFAR-10, SVHN, CelebA); the model ALI, which holds either
# ---------------------------------------------------------------------------------------------


def generator_mlp(sizes):
    """Linear layers of the given sizes with batch norm and ReLU between them, linear last: G_z and
    G_x of the authors' fully connected ALI (experiments/ali_mixture.py)."""
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


class Encoder(nn.Module):
    """G_z(x) -> (mu, log std) of q(z|x), fully connected: the DAAE's sizes, twice the outputs."""

    def __init__(self, image_shape, hidden, latent_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), generator_mlp([math.prod(image_shape), *hidden, 2 * latent_dim]))

    def forward(self, x):
        return self.net(x).chunk(2, dim=1)


class Decoder(nn.Module):
    """G_x(z): code -> image, fully connected (the DAAE's decoder sizes), sigmoid output (points: linear)."""

    def __init__(self, image_shape, hidden, latent_dim):
        super().__init__()
        self.image_shape, self.points = tuple(image_shape), toy.is_points(image_shape)
        self.net = generator_mlp([latent_dim, *hidden, math.prod(image_shape)])

    def forward(self, z):
        x = self.net(z).view(-1, *self.image_shape)
        return x if self.points else torch.sigmoid(x)


class Maxout(nn.Module):
    """The largest of `pieces` consecutive channels (Goodfellow et al., 2013): CIFAR-10's D."""

    def __init__(self, pieces):
        super().__init__()
        self.pieces = pieces

    def forward(self, x):
        return x.unflatten(1, (-1, self.pieces)).amax(2)


def discriminator_layer(make_layer, units, dropout, spec, batch_norm=False):
    """A hidden layer of D: dropout on its input, the layer (make_layer(outputs)), optional BN,
    then leaky ReLU, or maxout over MAXOUT_PIECES linear pieces per unit."""
    pieces = MAXOUT_PIECES if spec["maxout"] else 1
    return [nn.Dropout(dropout), make_layer(units * pieces), *([nn.BatchNorm2d(units * pieces)] if batch_norm else []),
            Maxout(pieces) if spec["maxout"] else nn.LeakyReLU(spec["leak"])]


class Discriminator(nn.Module):
    """D(x, z) for the fully connected models: one MLP on the concatenated pair, as the authors'
    FullyConnectedALI, with the DAAE discriminator's sizes, leaky ReLU (0.2, ours) and Table 3's
    dropout, 0.2 on the input pair and 0.5 on every hidden layer. Returns the logit."""

    def __init__(self, image_shape, latent_dim, hidden, spec=MLP_DISCRIMINATOR):
        super().__init__()
        sizes, layers = [math.prod(image_shape) + latent_dim, *hidden], []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += discriminator_layer(lambda n: nn.Linear(n_in, n), n_out, spec["dropout"][i > 0], spec)
        self.net = nn.Sequential(*layers, nn.Dropout(spec["dropout"][1]), nn.Linear(sizes[-1], 1))

    def forward(self, x, z):
        return self.net(torch.cat([x.flatten(1), z], 1)).squeeze(1)


# Tables 3 (CIFAR-10), 4 (SVHN) and 5 (CelebA), checked against the authors' Blocks code
# (github.com/IshmaelBelghazi/ALI, experiments/ali_*.py). Layers are (kernel, stride, feature maps),
# unpadded, down to a 1x1 map and back; G_z and G_x have BN and leaky ReLU on every hidden layer.
# Dropout is on the input of every layer of D: `dropout` = (first layer of D(x) and of D(z), every
# other). Where Table 5 and the code disagree (D(x) of CelebA: BN and no dropout on every layer in
# the table), we follow the code: no BN on the first layer, dropout 0.2 everywhere, like SVHN.
TABLES_3_AND_4 = dict(  # CIFAR-10's and SVHN's networks have the same layers
    encoder=[(5, 1, 32), (4, 2, 64), (4, 1, 128), (4, 2, 256), (4, 1, 512), (1, 1, 512)],
    decoder=[(4, 1, 256), (4, 2, 128), (4, 1, 64), (4, 2, 32), (5, 1, 32), (1, 1, 32)],
    x_discriminator=[(5, 1, 32), (4, 2, 64), (4, 1, 128), (4, 2, 256), (4, 1, 512)],
    z_discriminator=[512, 512], joint_discriminator=[1024, 1024])
CONV_NETWORKS = {
    "cifar10": dict(image_size=32, leak=0.1, maxout=True, discriminator_bn=False, dropout=(0.2, 0.5), **TABLES_3_AND_4),
    "svhn": dict(image_size=32, leak=0.01, maxout=False, discriminator_bn=True, dropout=(0.2, 0.2), **TABLES_3_AND_4),
    "celeba": dict(
        image_size=64, leak=0.02, maxout=False, discriminator_bn=True, dropout=(0.2, 0.2),
        encoder=[(2, 1, 64), (7, 2, 128), (5, 2, 256), (7, 2, 256), (4, 1, 512)],
        decoder=[(4, 1, 512), (7, 2, 256), (5, 2, 256), (7, 2, 128), (2, 1, 64)],
        x_discriminator=[(2, 1, 64), (7, 2, 128), (5, 2, 256), (7, 2, 256), (4, 1, 512)],
        z_discriminator=[1024, 1024], joint_discriminator=[2048, 2048]),
}
INIT_STD = 0.01  # Tables 3-5: weights N(0, 0.01^2), biases 0


def generator_layer(n_in, n_out, kernel, stride, leak, transposed=False):
    """A hidden layer of G_z or G_x (Tables 3-5): unpadded (transposed) convolution, BN, leaky ReLU."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return [conv(n_in, n_out, kernel, stride, bias=False), nn.BatchNorm2d(n_out), nn.LeakyReLU(leak)]


class ConvEncoder(nn.Module):
    """G_z(x) of Tables 3-5: convolutions down to a 1x1 map, a linear 1x1 convolution to (mu, log std)."""

    def __init__(self, image_shape, latent_dim, spec):
        super().__init__()
        layers, n_in = [], image_shape[0]
        for kernel, stride, maps in spec["encoder"]:
            layers += generator_layer(n_in, maps, kernel, stride, spec["leak"])
            n_in = maps
        self.net = nn.Sequential(*layers, nn.Conv2d(n_in, 2 * latent_dim, 1), nn.Flatten())

    def forward(self, x):
        return self.net(x).chunk(2, dim=1)


class ConvDecoder(nn.Module):
    """G_x(z) of Tables 3-5: z as a 1x1 map, transposed convolutions up to the image size (Table 3's
    last 1x1 "convolution" is one), a 1x1 convolution to the channels, a bias per pixel, sigmoid."""

    def __init__(self, image_shape, latent_dim, spec):
        super().__init__()
        layers, n_in = [], latent_dim
        for kernel, stride, maps in spec["decoder"]:
            layers += generator_layer(n_in, maps, kernel, stride, spec["leak"], transposed=True)
            n_in = maps
        self.net = nn.Sequential(*layers, nn.Conv2d(n_in, image_shape[0], 1, bias=False))
        self.pixel_bias = nn.Parameter(torch.zeros(image_shape))

    def forward(self, z):
        return torch.sigmoid(self.net(z[:, :, None, None]) + self.pixel_bias)


class ConvDiscriminator(nn.Module):
    """D(x, z) of Tables 3-5: D(x), convolutions down to a 1x1 map, and D(z), concatenated into
    D(x, z), one logit. On a 1x1 map a 1x1 convolution is a linear layer: D(z), D(x, z) are written so."""

    def __init__(self, image_shape, latent_dim, spec):
        super().__init__()
        first, rest = spec["dropout"]
        layers, n_in = [], image_shape[0]
        for i, (kernel, stride, maps) in enumerate(spec["x_discriminator"]):
            bn = spec["discriminator_bn"] and i > 0
            layers += discriminator_layer(lambda n: nn.Conv2d(n_in, n, kernel, stride, bias=not bn), maps,
                                          first if i == 0 else rest, spec, batch_norm=bn)
            n_in = maps
        self.x_net = nn.Sequential(*layers, nn.Flatten())
        layers, n_z = [], latent_dim
        for i, units in enumerate(spec["z_discriminator"]):
            layers += discriminator_layer(lambda n: nn.Linear(n_z, n), units, first if i == 0 else rest, spec)
            n_z = units
        self.z_net = nn.Sequential(*layers)
        layers, n_joint = [], n_in + n_z
        for units in spec["joint_discriminator"]:
            layers += discriminator_layer(lambda n: nn.Linear(n_joint, n), units, rest, spec)
            n_joint = units
        self.joint_net = nn.Sequential(*layers, nn.Dropout(rest), nn.Linear(n_joint, 1))

    def forward(self, x, z):
        return self.joint_net(torch.cat([self.x_net(x), self.z_net(z)], 1)).squeeze(1)


def init_weights(module, std=INIT_STD):
    """Tables 3-5: every weight from N(0, std^2), every bias 0 (batch norm keeps scale 1, shift 0)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ALI(nn.Module):
    """The three networks, and what eval.py uses: encode (the mean of q(z|x)), decode, sample, latent_dim, sigma."""

    def __init__(self, image_shape, latent_dim, network="mlp", encoder_hidden=(), decoder_hidden=(),
                 discriminator_hidden=()):
        super().__init__()
        self.latent_dim, self.sigma = latent_dim, 0.0  # sigma: the corruption of the encoder's input, none
        if network == "mlp":
            # PyTorch's default init (aae.py and daae.py: Glorot's), the authors' BN in G_z, G_x (docs/ali.md)
            self.encoder = Encoder(image_shape, encoder_hidden, latent_dim)
            self.decoder = Decoder(image_shape, decoder_hidden, latent_dim)
            self.discriminator = Discriminator(image_shape, latent_dim, discriminator_hidden,
                                               TOY_DISCRIMINATOR if toy.is_points(image_shape) else MLP_DISCRIMINATOR)
        else:
            spec = CONV_NETWORKS[network]
            self.encoder = ConvEncoder(image_shape, latent_dim, spec)
            self.decoder = ConvDecoder(image_shape, latent_dim, spec)
            self.discriminator = ConvDiscriminator(image_shape, latent_dim, spec)
            init_weights(self)

    def posterior(self, x):
        """(mu, log std) of q(z|x) = N(mu, std^2 I), std the paper's sigma(x)."""
        return self.encoder(x)

    def sample_posterior(self, x):
        """z^ ~ q(z|x) by the reparametrisation trick, Eq. 2: z^ = mu + std * eps."""
        mu, log_std = self.posterior(x)
        return mu + log_std.exp() * torch.randn_like(mu)

    def encode(self, x):
        """The mean of q(z|x): a deterministic code for eval.py (the paper observes that its
        stochastic encoders become nearly deterministic as training goes on)."""
        return self.posterior(x)[0]

    def decode(self, z):
        return self.decoder(z)

    def sample_prior(self, n):
        return torch.randn(n, self.latent_dim, device=self.device())

    def sample(self, n):
        """x~ = G_x(z), z ~ p(z) = N(0, I)."""
        return self.decode(self.sample_prior(n))

    def device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def start_at_the_mean_image(self, x_train):
        """As the authors' code: G_x's per-pixel output bias starts at the log-odds of the mean
        training image, so that the first samples D sees are that image, not uniform grey."""
        # Summed in chunks: a float copy of a whole uint8 training set takes four times its memory
        p = (sum(common.float_images(x).sum(0) for x in x_train.split(4096)) / len(x_train)).clamp(1e-7, 1 - 1e-7)
        bias = self.decoder.pixel_bias if isinstance(self.decoder, ConvDecoder) else self.decoder.net[-1].bias
        bias.copy_((p / (1 - p)).log().view_as(bias))


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return ALI(config["image_shape"], config["latent_dim"], config["network"], config["encoder_hidden"],
               config["decoder_hidden"], config["discriminator_hidden"])


# ---------------------------------------------------------------------------------------------
# Losses, and the two updates of Algorithm 1 and the step that orders them
# ---------------------------------------------------------------------------------------------


def discriminator_loss(data_logits, sample_logits):
    """Algorithm 1's L_d = -log D(x, z^) - log(1 - D(x~, z)), as softplus of D's logits: the encoder's pairs
    are "real"; 2 ln 2 = 1.386 at equilibrium. In float32 also under bf16, where autocast would keep bfloat16."""
    return F.softplus(-data_logits.float()).mean() + F.softplus(sample_logits.float()).mean()


def generator_loss(data_logits, sample_logits):
    """Algorithm 1's L_g = -log(1 - D(x, z^)) - log D(x~, z), the labels swapped (Eq. 4's V'): the
    encoder pushes its pairs towards "fake", the decoder its towards "real"; 2 ln 2 balanced. In float32."""
    return F.softplus(data_logits.float()).mean() + F.softplus(-sample_logits.float()).mean()


def draw_pairs(model, x):
    """Algorithm 1's sampling lines on a fresh draw: z^ ~ q(z|x), z ~ p(z), x~ = G_x(z)."""
    z_hat, z = model.sample_posterior(x), model.sample_prior(len(x))
    return z_hat, model.decoder(z), z


def joint_logits(discriminator, x, z_hat, x_tilde, z):
    """D's logits for the encoder's pairs (x, z^) and for the decoder's pairs (x~, z). Both kinds
    go through D as one batch, as in the authors' code, so that D's batch norm sees them together."""
    return discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z])).chunk(2)


def discriminator_update(model, optimizer, x):
    """theta_d <- theta_d - grad L_d. The encoder and decoder only sample here (no graph)."""
    with torch.no_grad():
        pairs = draw_pairs(model, x)
    loss = discriminator_loss(*joint_logits(model.discriminator, x, *pairs))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def generator_update(model, optimizer, x):
    """theta_g <- theta_g - grad L_g: encoder and decoder together, on new pairs, through the
    updated D, whose own weights are frozen for this backward pass (no gradient is wasted on them)."""
    with common.frozen(model.discriminator):
        loss = generator_loss(*joint_logits(model.discriminator, x, *draw_pairs(model, x)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_step(model, optimizers, x):
    """One iteration of Algorithm 1, which updates theta_d and theta_g at once from the same
    predictions (as does the authors' code). Here the updates alternate, D first, each from its own
    forward pass: an L_g computed before D's step would backpropagate through D weights changed since."""
    return {"discriminator": discriminator_update(model, optimizers["discriminator"], x),
            "generator": generator_update(model, optimizers["generator"], x)}


def make_optimizers(model, lr):
    """Tables 3-5: Adam, lr 1e-4, beta1 0.5, one for D and one for the encoder and decoder
    together, which Algorithm 1 updates as one."""
    return {
        "discriminator": common.adam(model.discriminator.parameters(), lr, betas=ADAM_BETAS),
        "generator": common.adam([*model.encoder.parameters(), *model.decoder.parameters()], lr, betas=ADAM_BETAS),
    }


# ---------------------------------------------------------------------------------------------
# Pictures: samples, reconstructions, interpolations (and the 2-D code space, as aae.py)
# ---------------------------------------------------------------------------------------------


def save_interpolations(model, x_val, path, pairs=10, steps=8):
    """The paper's latent-space interpolations (its CelebA figure): pairs of validation images
    (first and last column), and G_x of the codes on the line between their encodings."""
    x1, x2 = x_val[:pairs], x_val[pairs:2 * pairs]
    z1, z2 = model.encode(x1), model.encode(x2)
    t = torch.linspace(0, 1, steps, device=z1.device)[None, :, None]
    between = model.decode((z1[:, None] + t * (z2 - z1)[:, None]).flatten(0, 1)).unflatten(0, (pairs, steps))
    common.save_grid(torch.cat([x1[:, None], between, x2[:, None]], 1).flatten(0, 1), path, nrow=steps + 2)


def save_pictures(model, run, fixed_z, epoch):
    """samples.png; reconstructions.png (test images, G_x(mu(x)) below); every tenth interpolations.png, 2-D codes."""
    out, data, device = run.out, run.data, run.device
    if toy.is_points(run.config["image_shape"]):
        return toy.save_pictures(model, run, epoch, {"samples G_x(z)": model.sample(2000)})
    samples = model.decode(fixed_z)
    common.save_grid(samples, out / "samples" / f"epoch_{epoch:03d}.png")
    common.save_grid(samples, out / "samples.png")
    x = common.float_images(data.x_test[:50].to(device))
    aae.save_reconstructions([x, model.decode(model.encode(x))], ["test images", "G_x(G_z(x))"],
                             out / "reconstructions.png")
    if run.every_tenth(epoch):
        if len(data.x_val) >= 20:
            save_interpolations(model, common.float_images(data.x_val[:20].to(device)), out / "interpolations.png")
        if model.latent_dim == 2:
            common.save_code_space(model, data.x_test, data.y_test, out / "code_space.png")
            common.save_manifold(model, out / "manifold.png")


# ---------------------------------------------------------------------------------------------
# Training, flags and main
# ---------------------------------------------------------------------------------------------


def train(run):
    config, data = run.config, run.data
    machinery.check_networks_fit(build_model, config, run.device)
    model = build_model(config).to(run.device)
    if not toy.is_points(data.image_shape):  # points: their mean is the origin, where G_x starts
        model.start_at_the_mean_image(data.x_train)
    optimizers = make_optimizers(model, config["lr"])
    run.track(model, optimizers)
    fixed_z = model.sample_prior(100)

    for epoch in run.epochs():
        for x, _ in run.batches(data.x_train, data.y_train):
            with common.autocast(run):
                losses = train_step(model, optimizers, x)
            run.record(losses)
        if run.saving(epoch):
            with common.drawing(model):
                save_pictures(model, run, fixed_z, epoch)
            run.save_checkpoint()
    run.done()
    return model


def parse_args(argv):
    return machinery.describe_defaults(machinery.model_parser("ali", __doc__), DEFAULTS).parse_args(argv)


def fill_settings(config, data):
    """The paper's networks take one image size (Tables 3-5), checked before config.json is written."""
    network, size = config["network"], CONV_NETWORKS.get(config["network"], {}).get("image_size")  # None: mlp
    if size and config["image_shape"][1:] != [size, size]:
        raise machinery.CLIError(f"the paper's {network} networks take {size}x{size} images; use --image-size {size}")


def main(argv=None):
    train(common.start_run("ali", parse_args(argv), DEFAULTS, fill=fill_settings))


if __name__ == "__main__":
    machinery.cli(main)
