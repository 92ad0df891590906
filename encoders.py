"""The AAE paper's stochastic choices of the encoder q(z|x) (Makhzani et al., Section 2), used by
aae.py --encoder gaussian|universal and by vae.py. The first choice, a deterministic enc(x), is
aae.py's Encoder. Each wraps a network `net` that aae.make_encoder builds, and gives:

    forward(x)  a sample z ~ q(z|x), through which gradients flow (what D sees, what is decoded
                in training)
    mean(x)     the code of x that eval.py and the pictures use: E[z|x]

Gaussian posterior:   q(z|x) = N(mu(x), diag sigma^2(x)),  z = mu(x) + sigma(x) * eps,  eps ~ N(0, I)
Universal posterior:  z = f(x, eta),  eta ~ N(0, I): q(z|x) = integral of delta(z - f(x, eta)) p(eta) d eta
"""

import torch
import torch.nn as nn


def reparametrise(mean, log_var):
    """z = mu + sigma * eps, eps ~ N(0, I): the reparametrisation trick (Kingma & Welling, Section 2.4),
    a sample of N(mu, diag sigma^2) that is a differentiable function of mu and log sigma^2."""
    return mean + (0.5 * log_var).exp() * torch.randn_like(mean)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag exp(log_var(x))): `net` maps x to [mu, log sigma^2] (2 x the code size)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def posterior(self, x):
        """(mu, log sigma^2) of q(z|x)."""
        return self.net(x).chunk(2, 1)

    def forward(self, x):
        return reparametrise(*self.posterior(x))

    def mean(self, x):
        return self.posterior(x)[0]


class UniversalEncoder(nn.Module):
    """z = f(x, eta): `net` sees the image's pixels with noise eta ~ N(0, I) of `noise_dim` beside them,
    so q(z|x) can be any distribution f pushes the noise to. The paper gives no size for eta; the
    code's size. There is no closed form for E[z|x]: mean(x) averages `draws` samples."""

    def __init__(self, net, noise_dim, draws=16):
        super().__init__()
        self.net, self.noise_dim, self.draws = net, noise_dim, draws

    def forward(self, x):
        x = x.flatten(1)
        return self.net(torch.cat([x, torch.randn(len(x), self.noise_dim, device=x.device, dtype=x.dtype)], 1))

    def mean(self, x):
        return torch.stack([self(x) for _ in range(self.draws)]).mean(0)
