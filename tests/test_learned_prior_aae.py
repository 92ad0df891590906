"""Learned-prior AAE: the networks' shapes, which networks each phase of Algorithm 1 updates,
the perceptual loss (Eq. 6), where the label goes in each setting, losses on tiny data, and
the command line end to end with its errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import common
import conv_networks
import machinery
import learned_prior_aae as lp
from helpers import run_script, tiny_npz

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(hidden=(32, 32), image_discriminator_hidden=32, code_discriminator_hidden=(32, 32))


def cli(argv):
    """Run `python learned_prior_aae.py ARGV` in-process; return its exit status."""
    return run_script(lp.main, argv)


def tiny_model(setting="unsupervised", learned_prior=True, latent_dim=6, noise_dim=None, **kwargs):
    torch.manual_seed(0)
    labels = 0 if setting == "unsupervised" else 10
    if noise_dim is None:
        noise_dim = latent_dim - (labels if not learned_prior else 0)
    return lp.LearnedPriorAAE((1, 8, 8), latent_dim, noise_dim, setting, labels, learned_prior, **{**SMALL, **kwargs})


def parameters_by_network(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_networks(before, model):
    return {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(before[name], p)}


def batch(n=16):
    return torch.rand(n, 1, 8, 8), torch.arange(n) % 10


def aae_phase(model, optimizers, x, y):
    """Algorithm 1's AAE phase: the first three updates of lp.train_step."""
    lp.reconstruction_update(model, optimizers["reconstruction"], x)
    lp.code_discriminator_update(model, optimizers["code_discriminator"], x, y)
    lp.encoder_adversarial_update(model, optimizers["encoder_adversarial"], x, y)


def prior_improvement_phase(model, optimizers, x, y, decoder_in_prior_phase=True):
    """Algorithm 1's prior-improvement phase: the last updates of lp.train_step, on one draw of s and z."""
    s, z = model.labels_for(y), model.sample_noise(len(x))
    losses = lp.image_discriminator_update(model, optimizers["image_discriminator"], x, z, s)
    if "code_generator" in optimizers:
        losses.update(lp.code_generator_update(model, optimizers["code_generator"], x, z, s, decoder_in_prior_phase))
    return losses


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conv, shape", [(False, (1, 8, 8)), (True, (1, 28, 28)), (True, (3, 32, 32))])
@pytest.mark.parametrize("setting", lp.SETTINGS)
def test_network_shapes(conv, shape, setting):
    torch.manual_seed(0)
    k = 0 if setting == "unsupervised" else 10
    model = lp.LearnedPriorAAE(shape, 12, 7, setting, k, conv=conv, channels=4, **SMALL)
    x, labels = torch.rand(5, *shape), torch.arange(5)
    z = model.encode(x)
    assert z.shape == (5, 12)
    x_hat = model.decode(z)
    assert x_hat.shape == (5, *shape) and 0 <= x_hat.min() and x_hat.max() <= 1
    onehot = model.onehot(labels if k else None)
    z_c = model.code_generator(torch.randn(5, 7), onehot)
    assert z_c.shape == (5, 12)
    dc_onehot = onehot if setting == "supervised" else None
    assert model.code_discriminator(z_c, dc_onehot).shape == (5,)
    logits, hidden = model.image_discriminator(x)
    assert logits.shape == (5,) and hidden.shape == (5, 32)
    features = model.image_discriminator.features(x)
    assert features.shape == ((5, 4 * 4, 4, 4) if conv else (5, 32))  # conv: 4 x channels, 4x4 map
    if k:
        assert model.classifier(hidden).shape == (5, k)
    else:
        assert model.classifier is None
    model.eval()
    assert model.sample(3).shape == (3, *shape)


def test_conv_networks_pad_mnist_to_32_and_crop_back():
    model = lp.LearnedPriorAAE((1, 28, 28), 8, 8, conv=True, channels=4, **SMALL)
    assert model.decoder.net(torch.randn(2, 8)).shape == (2, 1, 32, 32)  # the paper's 32x32 output
    padded = conv_networks.pad_to(torch.ones(1, 1, 28, 28), 32)
    assert padded.sum() == 28 * 28 and padded[..., :2, :].sum() == 0 and padded[..., :, -2:].sum() == 0
    torch.testing.assert_close(conv_networks.crop_to(padded, 28, 28), torch.ones(1, 1, 28, 28))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def test_perceptual_loss_compares_image_discriminator_features_and_is_zero_for_identical_images():
    model = tiny_model()
    x, _ = batch()
    assert lp.perceptual_loss(model, x, x.clone()).item() == 0
    x_rec = torch.rand_like(x)
    loss = lp.perceptual_loss(model, x, x_rec)
    features = model.image_discriminator.features(torch.cat([x, x_rec])).flatten(1)
    torch.testing.assert_close(loss, ((features[16:] - features[:16]) ** 2).mean())  # Eq. 6, as a mean
    assert loss > 0
    with torch.no_grad():  # D_I's real/fake output is not part of F; its feature layers are
        model.image_discriminator.real_or_fake.weight.mul_(3)
        model.image_discriminator.hidden[1].weight.mul_(3)
    assert lp.perceptual_loss(model, x, x_rec).item() == loss.item()
    with torch.no_grad():
        model.image_discriminator.features[1][0].weight.mul_(3)
    assert lp.perceptual_loss(model, x, x_rec).item() != pytest.approx(loss.item())


def test_discriminator_and_adversarial_losses_at_equilibrium():
    half = torch.zeros(8)  # logit 0 = probability 1/2
    assert lp.discriminator_loss(half, half).item() == pytest.approx(2 * 0.6931472)
    assert lp.discriminator_loss(half, half, half).item() == pytest.approx(3 * 0.6931472)
    assert lp.encoder_adversarial_loss(half).item() == pytest.approx(0.6931472)
    assert lp.code_generator_adversarial_loss(half).item() == pytest.approx(0.6931472)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: which networks each phase updates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", lp.SETTINGS)
@pytest.mark.parametrize("decoder_in_prior_phase", [True, False])
def test_each_phase_updates_exactly_the_papers_networks(setting, decoder_in_prior_phase):
    model = tiny_model(setting)
    optimizers = lp.make_optimizers(model, 1e-3, decoder_in_prior_phase)
    x, y = batch()
    before = parameters_by_network(model)
    aae_phase(model, optimizers, x, y)  # Figure 3(b): the code generator is fixed
    assert changed_networks(before, model) == {"encoder", "decoder", "code_discriminator"}

    before = parameters_by_network(model)
    losses = prior_improvement_phase(model, optimizers, x, y, decoder_in_prior_phase)
    expected = {"image_discriminator", "code_generator"}  # Figure 3(a): the encoder is fixed
    expected |= {"decoder"} if decoder_in_prior_phase else set()  # footnote 2, ablation "C"
    expected |= {"classifier"} if setting != "unsupervised" else set()  # Q
    assert changed_networks(before, model) == expected
    assert ("information" in losses) == (setting != "unsupervised")


@pytest.mark.parametrize("decoder_in_prior_phase", [True, False])
def test_without_a_learned_prior_the_codes_come_from_the_simple_prior(decoder_in_prior_phase):
    model = tiny_model("supervised", learned_prior=False, latent_dim=13)
    assert model.code_generator is None and model.noise_dim == 3
    z, labels = torch.randn(4, 3), torch.tensor([0, 3, 9, 3])
    torch.testing.assert_close(model.prior_code(z, labels), torch.cat([F.one_hot(labels, 10).float(), z], 1))
    optimizers = lp.make_optimizers(model, 1e-3, decoder_in_prior_phase)
    x, y = batch()
    before = parameters_by_network(model)
    prior_improvement_phase(model, optimizers, x, y, decoder_in_prior_phase)
    expected = {"image_discriminator", "classifier"} | ({"decoder"} if decoder_in_prior_phase else set())
    assert changed_networks(before, model) == expected


# ---------------------------------------------------------------------------------------------
# Where the label goes (Eqs. 7-8, Figures 4-5)
# ---------------------------------------------------------------------------------------------


def record_label_inputs(model):
    """Hooks that record the one-hot argument each call of CG and D_C receives."""
    seen = {"code_generator": [], "code_discriminator": []}
    for name, calls in seen.items():
        getattr(model, name).register_forward_pre_hook(lambda module, args, calls=calls: calls.append(args[1]))
    return seen


def test_supervised_feeds_the_true_label_to_the_code_generator_and_the_code_discriminator():
    model = tiny_model("supervised")
    assert model.code_generator.net[0].in_features == model.noise_dim + 10
    assert model.code_discriminator.net[0].in_features == model.latent_dim + 10  # Eq. 8
    seen = record_label_inputs(model)
    optimizers = lp.make_optimizers(model, 1e-3)
    x, y = batch()
    lp.train_step(model, optimizers, x, y)
    truth = F.one_hot(y, 10).float()
    assert seen["code_generator"] and all(torch.equal(s, truth) for s in seen["code_generator"])
    # D_C scores prior codes and encodings in one call, each with its row's label
    assert seen["code_discriminator"] and all(torch.equal(s, truth.repeat(len(s) // len(truth), 1))
                                              for s in seen["code_discriminator"])


def test_categorical_draws_the_label_for_the_code_generator_and_keeps_it_from_the_code_discriminator():
    model = tiny_model("categorical")
    assert model.code_generator.net[0].in_features == model.noise_dim + 10
    assert model.code_discriminator.net[0].in_features == model.latent_dim  # class-agnostic D_C
    seen = record_label_inputs(model)
    optimizers = lp.make_optimizers(model, 1e-3)
    x, y = batch(64)
    lp.train_step(model, optimizers, x, y)
    assert all(s is None for s in seen["code_discriminator"])
    drawn = [s.argmax(1) for s in seen["code_generator"]]
    assert drawn and all(not torch.equal(s, y) for s in drawn)  # uniform draws, not the images' labels
    assert len(torch.cat(drawn).unique()) == 10


def test_unsupervised_has_no_label_anywhere():
    model = tiny_model("unsupervised")
    assert model.code_generator.net[0].in_features == model.noise_dim and model.classifier is None
    seen = record_label_inputs(model)
    lp.train_step(model, lp.make_optimizers(model, 1e-3), *batch())
    assert all(s is None for calls in seen.values() for s in calls)


def test_information_loss_reaches_the_code_generator_the_decoder_and_q_not_the_encoder():
    model = tiny_model("supervised")
    s = torch.arange(16) % 10
    x_prior = model.decoder(model.prior_code(model.sample_noise(16), s))
    lp.information_loss(model, model.image_discriminator(x_prior)[1], s).backward()  # Eq. 7
    for name in ("code_generator", "decoder", "classifier"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, name).parameters()), name
    assert all(p.grad is None for p in model.encoder.parameters())


def test_losses_move_sensibly_on_tiny_data():
    data = common.load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    model = tiny_model("supervised", latent_dim=16)
    optimizers = lp.make_optimizers(model, 1e-3)

    def pixel_error():
        with torch.no_grad():
            return F.mse_loss(model.decode(model.encode(x)), x).item()

    start, history = pixel_error(), []
    for _ in range(10):
        for i in range(0, 256, 32):
            history.append(lp.train_step(model, optimizers, x[i:i + 32], y[i:i + 32]))
    assert pixel_error() < 0.7 * start  # the perceptual loss brings the pixels closer too

    def late(key):
        return sum(float(h[key]) for h in history[-20:]) / 20

    assert 0.3 < late("code_discriminator") < 2.5 and 0.3 < late("image_discriminator") < 3.5  # no collapse
    assert late("encoder_adversarial") < 5 and late("code_generator_adversarial") < 6
    assert late("information") < 2.33  # at most ln 10 (s unknown): Q's L_I never runs away


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, latent_dim, noise_dim", [
    (["--setting", "unsupervised"], 8, 8),
    (["--setting", "supervised"], 64, 54),
    (["--setting", "categorical"], 100, 90),
    (["--setting", "categorical", "--categories", "4", "--no-learned-prior", "--pixel-loss",
      "--no-decoder-in-prior-phase"], 100, 96),
])
def test_cli_writes_the_run_folder_that_eval_loads(tmp_path, argv, latent_dim, noise_dim):
    out = tmp_path / "run"
    assert cli(["--epochs", "2", "--batch-size", "256", "--out", str(out), *argv]) == 0
    for name in ("config.json", "checkpoint.pt", "log.csv", "losses.png", "samples.png", "reconstructions.png",
                 "samples/epoch_001.png", "samples/epoch_002.png", "code_space.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "learned_prior_aae"
    assert (config["latent_dim"], config["noise_dim"]) == (latent_dim, noise_dim)
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    header = (out / "log.csv").read_text().splitlines()[0].split(",")  # the loss L_rec is, by name
    assert ("pixel_reconstruction" if "--pixel-loss" in argv else "perceptual_reconstruction") in header
    model = lp.build_model(config)  # what eval.py does
    model.load_state_dict(machinery.load_checkpoint(out / "checkpoint.pt", "learned_prior_aae")["model_state"])
    model.eval()
    with torch.no_grad():
        assert model.encode(torch.rand(3, 1, 8, 8)).shape == (3, model.latent_dim)
        samples = model.sample(4)
    assert samples.shape == (4, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert model.sigma == 0.0
    assert (model.code_generator is None) == ("--no-learned-prior" in argv)


def test_pictures_work_with_a_tiny_test_split(tmp_path):
    path = tiny_npz(tmp_path / "tiny.npz")
    assert cli(["--dataset", str(path), "--setting", "supervised", "--channels", "4", "--epochs", "1",
                "--batch-size", "16", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run/reconstructions.png").is_file() and (tmp_path / "run/code_space.png").is_file()


def test_bad_input_is_one_line(tmp_path, capsys):
    cases = {
        ("--setting", "semi"): "--setting",
        ("--setting", "supervised", "--categories", "5"): "--categories is for --setting categorical",
        ("--setting", "categorical", "--categories", "1"): "at least 2",
        ("--no-learned-prior", "--noise-dim", "4"): "--latent-dim",
        ("--setting", "supervised", "--no-learned-prior", "--latent-dim", "10"): "no room for noise",
        ("--channels", "0"): "--channels",
    }
    for argv, message in cases.items():
        assert cli(["--epochs", "1", "--out", str(tmp_path / "run"), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (argv, err)


def test_the_real_command_prints_one_line_not_a_traceback():
    result = subprocess.run([sys.executable, "learned_prior_aae.py", "--setting", "nosuch"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
