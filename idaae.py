"""Denoising Adversarial Autoencoders (Creswell & Bharath, 2017), arXiv:1703.01220: the integrating
DAAE, iDAAE.

The networks, the corruption x~ = x + sigma * eps and the three updates per mini-batch are the
DAAE's (daae.py). What the discriminator matches to the prior differs (Section III-A): not
q(z|x~), the codes of corrupted images, but the integrated posterior

    q~(z|x) = integral of q(z|x~) c(x~|x) dx~

which has no closed form. The paper estimates it by Monte-Carlo integration over M independent
corruptions of the same image, and that estimate is the discriminator's fake sample:

    z_fake = (1/M) sum_{j=1..M} enc(x + sigma * eps_j),      eps_j ~ N(0, I)

The reconstruction term still uses a single corruption, BCE(x, dec(enc(x~))). Since q~(z|x),
not q(z|x~), is matched to p(z), the iDAAE samples straight from the prior, x = dec(z), z ~ p(z);
the DAAE's Markov chain is there too (markov_chain_sample, chain.png). A step costs M encoder
passes for the fake sample, done as one batched call on M x batch images.

    python idaae.py                                  # digits, offline, about a minute on a CPU
    python idaae.py --dataset mnist                  # the paper's MNIST settings, M = 5
    python idaae.py --dataset celeba --gpu           # M = 10, as the paper
"""

import math

import common
import daae
import machinery

# The DAAE's table, plus the number of corruptions: 5 in the paper, 10 for CelebA.
DEFAULTS = {name: {**row, "M": 10 if name == "celeba" else 5} for name, row in daae.DEFAULTS.items()}


def integrated_codes(encoder, x, sigma, M):
    """(1/M) sum_j enc(x + sigma * eps_j): the iDAAE's fake sample, a Monte-Carlo estimate over M
    independent corruptions of each image, encoded in one call on an (M * batch) batch.

    The authors' later PyTorch code instead averages the M corrupted INPUTS and encodes once:
    enc((1/M) sum_j (x + sigma eps_j)) = enc(x + (sigma / sqrt(M)) eps), a single corruption at a
    smaller noise level, i.e. a DAAE with sigma / sqrt(M), not the paper's model: for a non-linear
    encoder the mean of the codes is not the code of the mean."""
    x_tilde = common.corrupt(x.expand(M, *x.shape), sigma)  # M x batch x C x H x W, fresh noise in each
    return encoder(x_tilde.flatten(0, 1)).view(M, len(x), -1).mean(0)


def build_model(config):
    """The DAAE's networks; its samples are dec(z), z ~ p(z) (eval.py rebuilds runs with this)."""
    return daae.build_model(config, sample_steps=0)


def check_corruptions_fit(config, device):
    """Refuse an --M whose M x batch encoder pass cannot fit, before training starts. Per image,
    the fully connected encoder keeps its input and hidden layers for the backward pass; the
    convolutional one (CelebA) about 64 floats per pixel over its feature maps."""
    shape = config["image_shape"]
    per_image = 64 * math.prod(shape[1:]) if config["conv"] else math.prod(shape) + sum(config["encoder_hidden"])
    nbytes = 2 * 4 * config["M"] * config["batch_size"] * per_image  # float32 activations and their gradients
    machinery.check_memory(nbytes, f"the encoder pass on --M {config['M']} x --batch-size {config['batch_size']} "
                           "images", ["--M", "--batch-size"], device)


def parse_args(argv):
    parser = daae.add_flags(machinery.model_parser("idaae", __doc__))
    parser.add_argument("--M", type=machinery.positive_int,
                        help="corruptions averaged per image for the discriminator's fake sample (paper: 5; CelebA 10)")
    return daae.check_args(machinery.describe_defaults(parser, DEFAULTS).parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    run = common.start_run("idaae", args, DEFAULTS, variant=args.prior if args.prior != "gaussian" else None)
    check_corruptions_fit(run.config, run.device)
    M = run.config["M"]
    daae.train(run, fake_codes=lambda encoder, x, sigma: integrated_codes(encoder, x, sigma, M), build=build_model)


if __name__ == "__main__":
    machinery.cli(main)
