"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013), arXiv:1312.6114: the variational
autoencoder, the baseline the AAE paper (arXiv:1511.05644, Section 2.1, Figure 2) argues against.

The same encoder and decoder as aae.py, with a Gaussian posterior q(z|x) = N(mu(x), diag sigma^2(x))
(encoders.GaussianEncoder) and no discriminator. Both networks minimise the negative evidence
lower bound, an upper bound on -log p(x), which the AAE paper's Eq. (2) splits in three:

  E_x[-log p(x)] <= E_x[ E_{q(z|x)}[-log p(x|z)] ] + E_x[ KL(q(z|x) || p(z)) ]
                  = E_x[ E_{q(z|x)}[-log p(x|z)] ] - E_x[ H(q(z|x)) ] + E_{q(z)}[-log p(z)]   (Eq. 2)
                    reconstruction                 posterior entropy   cross-entropy to the prior

The AAE keeps the first term and replaces the other two with its adversarial game, which matches
the aggregated posterior q(z) to the whole of p(z); the KL, the paper says, makes q(z) pick the
modes of p(z). The expectation over q(z|x) is one reparametrised sample z = mu + sigma * eps (L = 1
in Kingma & Welling's SGVB estimators). The KL term:

  p(z) = N(0, I):       closed form 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)  (Appendix B; estimator B, Eq. 7)
  mixture, swiss roll:  the Monte-Carlo estimate log q(z|x) - log p(z) at the same sample z   (estimator A, Eq. 6)

-log p(x|z): Bernoulli pixels (the BCE of aae.py's decoder logits, summed over pixels); for points
in the plane (toy.py) a Gaussian of the toy's own component std around dec(z). Losses are in nats
per example. The priors are aae.py's.

    python vae.py                                   # digits, offline, about a minute on a CPU
    python vae.py --dataset digits --prior mixture  # 2-D codes, the KL to 10 Gaussians (Figure 2 d)
    python vae.py --dataset mnist                   # the DAAE paper's MNIST networks and settings
"""

import math

import torch
import torch.nn as nn

import aae
import common
import conv_networks
import machinery
import toy

# Every setting, per dataset: aae.py's networks, lr, batch size and epochs (the DAAE paper's, which the AAE
# paper's "same architecture" comparison asks for), no discriminator. decoder_std: the Gaussian p(x|z) of
# points in the plane, the toy mixture's component std; None: Bernoulli pixels.
DEFAULTS = {name: {**{key: value for key, value in row.items() if key != "discriminator_hidden"},
                   "prior": "gaussian", "decoder_std": toy.MIXTURES[name][1] if name in toy.MIXTURES else None}
            for name, row in aae.NETWORKS.items()}


# ---------------------------------------------------------------------------------------------
# The model: aae.py's encoder (with twice the outputs: mu and log sigma^2) and decoder
# ---------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """The encoder q(z|x), the decoder p(x|z) and the prior p(z), and what eval.py uses: encode
    (the posterior mean), decode, sample, sigma (0: no input corruption)."""

    def __init__(self, image_shape, latent_dim, prior="gaussian", conv=False, encoder_hidden=(), decoder_hidden=(),
                 decoder_std=None):
        super().__init__()
        self.prior, self.latent_dim, self.decoder_std = prior, latent_dim, decoder_std
        self.sigma, self.decoder_labels = 0.0, 0  # what aae.save_pictures and eval.py ask of an AAE
        self.encoder = aae.make_encoder("gaussian", image_shape, encoder_hidden, latent_dim, conv)
        self.decoder = conv_networks.CelebADecoder(image_shape, latent_dim) if conv \
            else aae.Decoder(image_shape, decoder_hidden, latent_dim)
        if not conv:
            aae.init_weights(self)

    def encode(self, x):
        return self.encoder.mean(x)

    def decode(self, z, labels=None):  # labels: aae.py's signature; a VAE's decoder has none
        return self.decoder(z)

    def sample_prior(self, n, labels=None):
        return aae.sample_prior(self.prior, n, self.latent_dim, self.device(), labels)

    def sample(self, n):
        """x = dec(z), z ~ p(z): the decoder's mean image (pixel probabilities), as aae.py draws."""
        return self.decode(self.sample_prior(n))

    def device(self):
        return next(self.parameters()).device


def build_model(config):
    """The model a run's config.json describes (eval.py rebuilds runs with this)."""
    return VAE(config["image_shape"], config["latent_dim"], config["prior"], config["conv"], config["encoder_hidden"],
               config["decoder_hidden"], config["decoder_std"])


# ---------------------------------------------------------------------------------------------
# The bound: reconstruction and KL, per example, in nats
# ---------------------------------------------------------------------------------------------


def log_normal(z, mean, log_var):
    """log N(z; mean, diag exp(log_var)), summed over the last dimension."""
    return -0.5 * ((z - mean).pow(2) / log_var.exp() + log_var + math.log(2 * math.pi)).sum(-1)


def log_prior(prior, z, quadrature=2000):
    """log p(z) of aae.sample_prior's priors. The swiss roll, a Gaussian around a point u ~ U(0, 1)
    along the spiral, has no closed form: a midpoint rule over u, 2,000 points 0.01 apart along
    a spiral of length 19 under a Gaussian of std 0.1, where the spacing is well below the width."""
    if prior == "gaussian":
        return log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    if prior == "mixture":
        means, std = aae.mixture_means(z.device), aae.MIXTURE_STD
    else:
        u = (torch.arange(quadrature, device=z.device) + 0.5) / quadrature
        means, std = aae.swissroll_mean(u), aae.SWISSROLL_STD
    log_var = torch.full_like(means, 2 * math.log(std))
    return torch.logsumexp(log_normal(z[:, None], means, log_var), 1) - math.log(len(means))


def kl_divergence(prior, z, mean, log_var):
    """KL(q(z|x) || p(z)) per example: in closed form for N(0, I) (Kingma & Welling, Appendix B),
    else the one-sample Monte-Carlo estimate log q(z|x) - log p(z) at the sample z."""
    if prior == "gaussian":
        return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(1)
    return log_normal(z, mean, log_var) - log_prior(prior, z)


def reconstruction_nats(decoder_output, x, decoder_std=None):
    """-log p(x|z) per example: Bernoulli pixels from the decoder's logits (the BCE aae.py
    minimises, summed over pixels instead of averaged); for points, a Gaussian of std decoder_std."""
    if decoder_std is None:
        return nn.functional.binary_cross_entropy_with_logits(decoder_output, x, reduction="none").flatten(1).sum(1)
    squared = (x - decoder_output).pow(2).sum(1)
    return squared / (2 * decoder_std**2) + x.shape[1] / 2 * math.log(2 * math.pi * decoder_std**2)


def negative_elbo(model, x):
    """The two terms of the bound, each a mean over the batch: (reconstruction, KL)."""
    mean, log_var = model.encoder.posterior(x)
    z = aae.encoders.reparametrise(mean, log_var)
    return (reconstruction_nats(model.decoder.logits(z), x, model.decoder_std).mean(),
            kl_divergence(model.prior, z, mean, log_var).mean())


# ---------------------------------------------------------------------------------------------
# The update: one gradient step of the bound on both networks (Kingma & Welling, Algorithm 1)
# ---------------------------------------------------------------------------------------------


def elbo_update(model, optimizer, x):
    reconstruction, kl = negative_elbo(model, x)
    loss = reconstruction + kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"reconstruction_nats": reconstruction.detach(), "kl": kl.detach(), "negative_elbo": loss.detach()}


def train_step(model, optimizers, x):
    return elbo_update(model, optimizers["elbo"], x)


def make_optimizers(model, lr):
    return {"elbo": common.adam(model.parameters(), lr)}


# ---------------------------------------------------------------------------------------------
# Training (pictures: aae.save_pictures, the same samples, reconstructions, code space, manifold)
# ---------------------------------------------------------------------------------------------


def train(run):
    config, data = run.config, run.data
    machinery.check_networks_fit(build_model, config, run.device)
    model = build_model(config).to(run.device)
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
                aae.save_pictures(model, run, fixed_z, epoch)
            run.save_checkpoint()
    run.done()
    return model


# ---------------------------------------------------------------------------------------------
# Flags and main
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = machinery.model_parser("vae", __doc__)
    parser.add_argument("--prior", choices=aae.PRIORS, help="p(z) (default gaussian; mixture and swissroll are 2-D, "
                        "their KL a Monte-Carlo estimate)")
    args = machinery.describe_defaults(parser, DEFAULTS).parse_args(argv)
    if args.prior in ("mixture", "swissroll"):
        if args.latent_dim not in (None, 2):
            raise machinery.CLIError(f"the {args.prior} prior is 2-D; drop --latent-dim or set it to 2")
        args.latent_dim = 2
    return args


def main(argv=None):
    args = parse_args(argv)
    run = common.start_run("vae", args, DEFAULTS, variant=args.prior if args.prior not in (None, "gaussian") else None)
    train(run)


if __name__ == "__main__":
    machinery.cli(main)
