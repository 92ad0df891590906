"""The VAE: its bound against a hand computation, the KL in closed form against its Monte-Carlo
estimate, the priors' densities, the reparametrised gradient, losses falling on tiny data, and the
command line end to end (eval.py included), resume and bad input."""

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import aae
import common
import vae
from helpers import run_eval, run_script


def cli(argv):
    return run_script(vae.main, argv)


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def tiny_vae(prior="gaussian", latent_dim=3, shape=(1, 4, 4), decoder_std=None):
    torch.manual_seed(0)
    return vae.VAE(shape, latent_dim, prior, encoder_hidden=[16], decoder_hidden=[16], decoder_std=decoder_std)


# ---------------------------------------------------------------------------------------------
# The bound
# ---------------------------------------------------------------------------------------------


def test_negative_elbo_equals_a_hand_computation():
    model, x = tiny_vae(), torch.rand(5, 1, 4, 4)
    torch.manual_seed(1)
    reconstruction, kl = vae.negative_elbo(model, x)
    # By hand: the encoder's outputs, the same eps, Bernoulli log-likelihood and torch's Normal KL.
    out = model.encoder.net(x)
    mean, log_var = out[:, :3], out[:, 3:]
    torch.manual_seed(1)
    z = mean + torch.exp(log_var / 2) * torch.randn(5, 3)
    p = torch.sigmoid(model.decoder.net(z)).view(5, 1, 4, 4)
    by_hand = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean()
    torch.testing.assert_close(reconstruction, by_hand, rtol=1e-5, atol=1e-5)
    expected_kl = kl_divergence(Normal(mean, torch.exp(log_var / 2)), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-6)


def test_points_use_a_gaussian_decoder_of_the_toys_std():
    x, mean = torch.randn(7, 2), torch.randn(7, 2)
    expected = -Normal(mean, 0.05).log_prob(x).sum(1)
    torch.testing.assert_close(vae.reconstruction_nats(mean, x, 0.05), expected)
    assert vae.DEFAULTS["toy25"]["decoder_std"] == 0.05 and vae.DEFAULTS["mnist"]["decoder_std"] is None


def test_closed_form_kl_matches_its_monte_carlo_estimate():
    torch.manual_seed(0)
    mean, log_var = torch.randn(4, 2), torch.randn(4, 2) * 0.5
    closed = vae.kl_divergence("gaussian", None, mean, log_var)
    n = 200_000
    z = mean + torch.exp(log_var / 2) * torch.randn(n, 4, 2)
    estimate = (vae.log_normal(z, mean, log_var) - vae.log_prior("gaussian", z.view(-1, 2)).view(n, 4)).mean(0)
    torch.testing.assert_close(estimate, closed, atol=0.02, rtol=0)
    # The estimator the mixture and the swiss roll use is this one, on their log p(z).
    single = vae.kl_divergence("mixture", z[0], mean, log_var)
    torch.testing.assert_close(single, vae.log_normal(z[0], mean, log_var) - vae.log_prior("mixture", z[0]))


def test_mixture_density_is_the_mixtures_and_both_densities_integrate_to_one():
    z = torch.randn(50, 2) * 3
    components = torch.distributions.Independent(Normal(aae.mixture_means("cpu"), aae.MIXTURE_STD), 1)
    mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(10)), components)
    torch.testing.assert_close(vae.log_prior("mixture", z), mixture.log_prob(z))
    axis = torch.linspace(-6, 6, 241)  # a 0.05 grid: the sums are within 1e-5 of 1
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).view(-1, 2)
    cell = (axis[1] - axis[0]) ** 2
    for prior in ("mixture", "swissroll"):
        total = float(torch.cat([vae.log_prior(prior, g).exp() for g in grid.split(20000)]).sum() * cell)
        assert total == pytest.approx(1.0, abs=0.01), prior


def test_swissroll_density_is_high_where_its_samples_are():
    torch.manual_seed(0)
    on_roll = aae.sample_prior("swissroll", 500, 2, "cpu")
    off_roll = torch.rand(500, 2) * 6 - 3
    assert vae.log_prior("swissroll", on_roll).mean() > vae.log_prior("swissroll", off_roll).mean() + 3


def test_the_reparametrised_sample_carries_the_gradient():
    """E[z^2] = mu^2 + sigma^2: its gradient is 2 mu for mu and sigma^2 for log sigma^2, which the
    average over reparametrised samples gives; gradients of a sample reach both encoder outputs."""
    mean, log_var = torch.tensor([0.7, -1.2], requires_grad=True), torch.tensor([0.3, -0.4], requires_grad=True)
    torch.manual_seed(0)
    z = vae.aae.encoders.reparametrise(mean.expand(100_000, 2), log_var.expand(100_000, 2))
    z.pow(2).mean(0).sum().backward()
    torch.testing.assert_close(mean.grad, 2 * mean.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(log_var.grad, log_var.detach().exp(), atol=0.02, rtol=0)
    model = tiny_vae()
    sum(vae.negative_elbo(model, torch.rand(4, 1, 4, 4))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("prior", ["gaussian", "mixture"])
def test_losses_fall_on_tiny_data(prior):
    data = common.load_dataset("digits")
    x = common.float_images(data.x_train[:256])
    torch.manual_seed(0)
    model = vae.VAE((1, 8, 8), 2, prior, encoder_hidden=[64], decoder_hidden=[64])
    optimizers = vae.make_optimizers(model, 1e-3)
    history = [vae.train_step(model, optimizers, x[i:i + 32]) for _ in range(30) for i in range(0, 256, 32)]
    first, last = (sum(h["negative_elbo"] for h in part) / 16 for part in (history[:16], history[-16:]))
    assert last < 0.8 * first
    assert all(h["kl"] > 0 for h in history[-16:])  # the codes carry information: the KL is not 0


def test_model_has_what_eval_and_the_pictures_use():
    model = tiny_vae()
    model.eval()
    x = torch.rand(6, 1, 4, 4)
    z = model.encode(x)
    torch.testing.assert_close(z, model.encode(x))  # the posterior mean: no noise
    assert model.decode(z).shape == (6, 1, 4, 4) and model.sample(3).shape == (3, 1, 4, 4)
    assert model.sigma == 0 and model.decoder_labels == 0


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_end_to_end_with_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["--epochs", "2", "--out", str(out), "--prior", "mixture"]) == 0
    for name in ("config.json", "checkpoint.pt", "log.csv", "samples.png", "reconstructions.png", "code_space.png",
                 "manifold.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["latent_dim"], config["prior"], config["decoder_std"]) == ("vae", 2, "mixture", None)
    assert "discriminator_hidden" not in config
    assert (out / "log.csv").read_text().splitlines()[0] == "epoch,reconstruction_nats,kl,negative_elbo,seconds"
    vae.build_model(config).load_state_dict(weights(out / "checkpoint.pt"))
    status, stdout, _ = run_eval(["all", str(out), "--samples", "200"], capsys)
    assert status == 0
    status, stdout, _ = run_eval(["prior", str(out)], capsys)
    assert status == 0 and "energy distance" in stdout
    stored = json.loads((out / "eval.json").read_text())
    assert {"reconstruction", "classification", "likelihood", "quality", "prior"} <= set(stored)
    assert set(stored["prior"]) >= {"codes", "sampled_codes"}


def test_toy25_joins_the_toy(tmp_path, capsys):
    out = tmp_path / "toy"
    assert cli(["--dataset", "toy25", "--epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["decoder_std"] == 0.05
    status, stdout, _ = run_eval(["all", str(out), "--samples", "1000"], capsys)
    assert status == 0 and "modes covered" in stdout


def test_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    assert cli(["--epochs", "3", "--out", str(tmp_path / "straight"), "--seed", "3", "--prior", "swissroll"]) == 0
    assert cli(["--epochs", "1", "--out", str(tmp_path / "resumed"), "--seed", "3", "--prior", "swissroll"]) == 0
    capsys.readouterr()
    assert cli(["--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    assert "warning" not in capsys.readouterr().err
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_input_is_one_line_and_no_traceback(tmp_path, capsys):
    cases = {
        ("--dataset", "nosuch"): "unknown dataset",
        ("--prior", "mixture", "--latent-dim", "5"): "2-D",
        ("--prior", "nosuch"): "--prior",
        ("--epochs", "0"): "--epochs",
        ("--batch-size", "5000"): "larger than the training set",
        ("--resume", "--out", str(tmp_path / "nothing")): "no checkpoint",
    }
    for argv, message in cases.items():
        assert cli(["--epochs", "1", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (argv, err)


def test_the_prior_study_tells_codes_of_the_prior_from_shifted_ones():
    """eval.py prior: over 10 seeds, codes drawn from p(z) itself get p-values spread over (0, 1] (their
    permutation null is exact) and energy distances like the shuffled ones; codes shifted by half a
    standard deviation get p = 1/(1 + permutations) every time."""
    import types

    import eval as evaluation

    def results(shift):
        for seed in range(10):
            torch.manual_seed(seed)
            model = types.SimpleNamespace(encode=lambda x: torch.randn(len(x), 2) + shift,
                                          encoder=torch.nn.Identity(), sample_prior=lambda n: torch.randn(n, 2))
            result = evaluation.prior_match(model, types.SimpleNamespace(x_test=torch.zeros(400, 1)), "cpu", 99)
            assert set(result) == {"images", "permutations", "codes"}  # no posterior to sample: one row
            yield result["codes"]

    matched, shifted = list(results(0.0)), list(results(0.5))
    assert sum(r["p_value"] < 0.05 for r in matched) <= 2 and sum(r["p_value"] for r in matched) / 10 > 0.3
    assert all(r["energy_distance"] < 4 * r["shuffled_mean"] for r in matched)
    assert all(r["p_value"] == 0.01 and r["energy_distance"] > 4 * r["shuffled_mean"] for r in shifted)
