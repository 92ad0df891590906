"""The convolutional networks of the colour datasets, one section per paper; a reader of the fully
connected runs (digits, MNIST, Omniglot, the 2-D toy) may skip this file.

aae.py and daae.py take the DAAE authors' CelebA networks here; learned_prior_aae.py its appendix's
32x32 residual networks (on MNIST too, as its paper). ali.py keeps its convolutional networks in
its own file: they are its paper's main networks.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CONV_SIZE = 32  # the learned-prior appendix networks are for 32x32 images


# ---------------------------------------------------------------------------------------------
# aae.py and daae.py: the DAAE authors' CelebA networks, from their PyTorch code (cifar10 and svhn,
# which neither paper trains an AAE on, reuse them)
# ---------------------------------------------------------------------------------------------


class CelebAEncoder(nn.Module):
    """The DAAE authors' CelebA encoder: 5x5 stride-2 convolutions 3-64-128-256-512, then a linear
    layer to z. BatchNorm after each hidden convolution, as in the DCGAN-style code it follows."""

    def __init__(self, image_shape, latent_dim):
        super().__init__()
        channels, size = image_shape[0], image_shape[1]
        layers = []
        for n_in, n_out in zip([channels, 64, 128, 256], [64, 128, 256, 512]):
            layers += [nn.Conv2d(n_in, n_out, 5, stride=2, padding=2), nn.BatchNorm2d(n_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * (size // 16) ** 2, latent_dim))

    def forward(self, x):
        return self.net(x)


class CelebADecoder(nn.Module):
    """The DAAE authors' CelebA decoder: a linear layer to 512 x (size/16)^2, then 3x3 stride-2
    transposed convolutions 512-256-128-64-channels, sigmoid output."""

    def __init__(self, image_shape, latent_dim):
        super().__init__()
        self.start = (512, image_shape[1] // 16, image_shape[2] // 16)
        layers = []
        for n_in, n_out in zip([512, 256, 128], [256, 128, 64]):
            layers += [nn.ConvTranspose2d(n_in, n_out, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(n_out), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(64, image_shape[0], 3, stride=2, padding=1, output_padding=1))
        self.linear = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), nn.ReLU())
        self.net = nn.Sequential(*layers)

    def logits(self, z):
        return self.net(self.linear(z).view(-1, *self.start))

    def forward(self, z):
        return torch.sigmoid(self.logits(z))


# ---------------------------------------------------------------------------------------------
# learned_prior_aae.py: the 32x32 networks of Learning Priors for AAEs (MNIST, CIFAR-10, SVHN), Tables
# A1 and A3 as the reproduction report transcribes them. Images are in [0, 1] outside them, on the
# paper's [-1, 1] scale inside
# ---------------------------------------------------------------------------------------------


def pad_to(x, size):
    """Pad H x W images with background (0) to size x size, centred (MNIST 28 -> 32)."""
    dh, dw = size - x.shape[-2], size - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)) if dh or dw else x


def crop_to(x, height, width):
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class ToConvScale(nn.Module):
    """[0, 1] images of any size up to 32x32 -> the paper's [-1, 1] images at 32x32."""

    def forward(self, x):
        return 2 * pad_to(x, CONV_SIZE) - 1


class ResidualBlock(nn.Module):
    """The tables name residual blocks without their insides: ours are He et al.'s, two 3x3
    convolutions with BatchNorm, a 1x1 projection on the shortcut when the shape changes. Stride 2
    halves the size (a "down-sampling" block); `up` doubles it, the first convolution then a 4x4
    stride-2 transposed one (an "up-sampling" block)."""

    def __init__(self, n_in, n_out, stride=1, up=False):
        super().__init__()
        first = nn.ConvTranspose2d(n_in, n_out, 4, 2, 1, bias=False) if up else \
            nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False)
        self.residual = nn.Sequential(first, nn.BatchNorm2d(n_out), nn.ReLU(),
                                      nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False), nn.BatchNorm2d(n_out))
        if up:
            self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(n_in, n_out, 1, bias=False),
                                          nn.BatchNorm2d(n_out))
        else:
            self.shortcut = nn.Identity() if n_in == n_out and stride == 1 else nn.Sequential(
                nn.Conv2d(n_in, n_out, 1, stride, bias=False), nn.BatchNorm2d(n_out))

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class ResidualEncoder(nn.Module):
    """Table A1: 3x3 conv 64 stride 2; residual block 64; down-sampling residual blocks 128, 256,
    512; average pool; FC 2 x code + BN + ReLU; FC code (linear). `channels` = 64 is the paper's
    width; smaller values scale every layer (for CPU runs)."""

    def __init__(self, image_shape, latent_dim, channels=64):
        super().__init__()
        c, self.scale = channels, ToConvScale()
        # With the transcribed strides a 32x32 image is 2x2 after the last block, where the table
        # says "4x4 average pooling": we average over whatever is left (the same on a 4x4 map).
        self.net = nn.Sequential(
            nn.Conv2d(image_shape[0], c, 3, 2, 1), nn.ReLU(), ResidualBlock(c, c), ResidualBlock(c, 2 * c, 2),
            ResidualBlock(2 * c, 4 * c, 2), ResidualBlock(4 * c, 8 * c, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8 * c, 2 * latent_dim), nn.BatchNorm1d(2 * latent_dim), nn.ReLU(),
            nn.Linear(2 * latent_dim, latent_dim))

    def forward(self, x):
        return self.net(self.scale(x))


class ResidualDecoder(nn.Module):
    """Table A1: 4x4 transposed conv 512 + BN + ReLU (1x1 -> 4x4); up-sampling residual blocks 256,
    128, 64 (8, 16, 32); 3x3 conv to the image channels, tanh. Returns [0, 1] images of image_shape
    ((tanh + 1) / 2, the centre of the 32x32 output)."""

    def __init__(self, image_shape, latent_dim, channels=64):
        super().__init__()
        c, self.image_shape = channels, tuple(image_shape)
        self.net = nn.Sequential(
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, 8 * c, 4, 1, 0, bias=False), nn.BatchNorm2d(8 * c), nn.ReLU(),
            ResidualBlock(8 * c, 4 * c, up=True), ResidualBlock(4 * c, 2 * c, up=True),
            ResidualBlock(2 * c, c, up=True),
            nn.Conv2d(c, image_shape[0], 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return crop_to((self.net(z) + 1) / 2, *self.image_shape[1:])


def image_discriminator_features(image_shape, channels, activation):
    """Table A3, D_I's convolutional layers: 4x4 stride-2 convs 64, 128 and 256 (BN after all but the
    first), each followed by activation() (the paper's LeakyReLU). Their output is F of the perceptual
    loss (Eq. 6). Returns (layers, output size)."""
    c, layers = channels, []
    for i, (n_in, n_out) in enumerate([(image_shape[0], c), (c, 2 * c), (2 * c, 4 * c)]):
        norm = i > 0  # BatchNorm after all but the first
        layers += [nn.Conv2d(n_in, n_out, 4, 2, 1, bias=not norm), *([nn.BatchNorm2d(n_out)] if norm else []),
                   activation()]
    return nn.Sequential(ToConvScale(), nn.Sequential(*layers)), 4 * c * (CONV_SIZE // 8) ** 2
