"""The AAE paper's three encoders (aae.py --encoder, encoders.py): shapes and gradients, training
on tiny data, the command line with resume, and the choices refused in one line."""

import json

import pytest
import torch

import aae
import common
import encoders
import machinery
from helpers import assert_training_progresses, run_script


def cli(argv):
    return run_script(aae.main, argv)


def tiny_aae(encoder, conv=False, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return aae.AAE(shape, 4, conv=conv, encoder_hidden=[32], decoder_hidden=[32], discriminator_hidden=[32],
                   encoder=encoder)


@pytest.mark.parametrize("kind", aae.ENCODERS)
def test_each_encoder_gives_codes_and_gradients(kind):
    model, x = tiny_aae(kind), torch.rand(6, 1, 8, 8)
    z = model.encoder(x)  # what training decodes and D sees: a sample of q(z|x)
    assert z.shape == (6, 4)
    z.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    with torch.no_grad():
        codes = model.encode(x)
    assert codes.shape == (6, 4) and model.decode(codes).shape == (6, 1, 8, 8)
    if kind == "deterministic":
        assert torch.equal(model.encoder(x), model.encoder(x)) and not model.stochastic
    else:
        assert not torch.equal(model.encoder(x), model.encoder(x)) and model.stochastic  # noise in q(z|x)


def test_the_gaussian_encoder_is_reparametrised_around_its_mean():
    model, x = tiny_aae("gaussian"), torch.rand(3, 1, 8, 8)
    assert isinstance(model.encoder, encoders.GaussianEncoder)
    assert model.encoder.net.net[-1][-1].out_features == 8  # [mu, log sigma^2]
    mean, log_var = model.encoder.posterior(x)
    torch.manual_seed(5)
    z = model.encoder(x)
    torch.manual_seed(5)
    torch.testing.assert_close(z, mean + (log_var / 2).exp() * torch.randn(3, 4))
    torch.testing.assert_close(model.encode(x), mean)  # the code eval.py sees: the posterior mean


def test_the_universal_encoder_sees_noise_beside_the_pixels():
    model = tiny_aae("universal")
    assert model.encoder.net.net[1][0].in_features == 64 + 4  # 8x8 pixels + a code-sized eta
    x = torch.rand(1, 1, 8, 8).expand(2000, 1, 8, 8)
    z = model.encoder(x)
    assert z.std(0).min() > 0  # one image, many codes: q(z|x) is a distribution
    torch.testing.assert_close(model.encoder.mean(x[:1]), z.mean(0, keepdim=True), atol=0.15, rtol=0)


def test_the_gaussian_encoder_works_with_the_convolutional_networks():
    model = tiny_aae("gaussian", conv=True, shape=(3, 32, 32))
    model.eval()
    assert model.encode(torch.rand(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("kind", ["gaussian", "universal"])
def test_losses_fall_on_tiny_data(kind):
    data = common.load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    model = tiny_aae(kind)
    optimizers = aae.make_optimizers(model, 1e-3)
    history = [aae.train_step(model, optimizers, common.float_images(x[i:i + 32]), y[i:i + 32], 0.0, 0)
               for _ in range(40) for i in range(0, 256, 32)]
    assert_training_progresses(history)


def test_cli_trains_resumes_exactly_and_is_rebuilt(tmp_path, capsys):
    assert cli(["--epochs", "2", "--encoder", "gaussian", "--seed", "1", "--out", str(tmp_path / "straight")]) == 0
    assert cli(["--epochs", "1", "--encoder", "gaussian", "--seed", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert cli(["--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight = torch.load(tmp_path / "straight/checkpoint.pt", weights_only=True)["model_state"]
    resumed = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=True)["model_state"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    run = machinery.load_run(tmp_path / "straight")
    assert run.config["encoder"] == "gaussian" and isinstance(run.model.encoder, encoders.GaussianEncoder)


def test_universal_gets_its_own_run_folder_and_old_runs_read_as_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["--epochs", "1", "--encoder", "universal", "--prior", "mixture"]) == 0
    config = json.loads((tmp_path / "runs/aae-digits-mixture-universal/config.json").read_text())
    assert config["encoder"] == "universal"
    del config["encoder"]  # a run from before --encoder
    assert machinery.upgrade_config(config)["encoder"] == "deterministic"


def test_bad_choices_are_one_line(capsys):
    for argv, message in {("--encoder", "universal", "--dataset", "celeba"): "use gaussian",
                          ("--encoder", "nosuch"): "--encoder"}.items():
        assert cli(["--epochs", "1", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
