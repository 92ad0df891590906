"""ALI: the networks and their shapes, the joint discriminator, the reparametrised encoder, the
paper's losses against a hand computation, the two phases of a training step, and the command
line end to end with its error paths."""

import json
import math

import pytest
import torch

import ali
import common
import machinery


def tiny_model(seed=0, latent_dim=4):
    torch.manual_seed(seed)
    return ali.ALI((1, 8, 8), latent_dim, "mlp", [32], [32], [32])


def optimizers_for(model, lr=1e-3):
    return {"discriminator": torch.optim.Adam(model.discriminator.parameters(), lr, betas=(0.5, 0.999)),
            "generator": torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr,
                                          betas=(0.5, 0.999))}


def parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_networks(before, model):
    """The networks (encoder, decoder, discriminator) whose weights differ from `before`. (The
    generators' batch-norm statistics also move when they sample in D's phase; they are not weights.)"""
    return {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(before[name], p)}


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("network, shape, latent_dim", [
    ("mlp", (1, 28, 28), 10), ("cifar10", (3, 32, 32), 64), ("svhn", (3, 32, 32), 16), ("celeba", (3, 64, 64), 16)])
def test_network_shapes(network, shape, latent_dim):
    torch.manual_seed(0)
    model = ali.ALI(shape, latent_dim, network, [32, 32], [32, 32], [32, 32]).eval()
    x = torch.rand(3, *shape)
    mu, log_std = model.posterior(x)
    assert mu.shape == log_std.shape == (3, latent_dim)
    assert torch.equal(model.encode(x), mu)
    x_tilde = model.decode(mu)
    assert x_tilde.shape == (3, *shape) and 0 <= x_tilde.min() and x_tilde.max() <= 1
    assert model.discriminator(x, mu).shape == (3,)
    assert model.sample(2).shape == (2, *shape)
    assert model.sigma == 0.0 and model.latent_dim == latent_dim


def test_conv_networks_follow_the_papers_tables():
    torch.manual_seed(0)
    model = ali.ALI((3, 32, 32), 64, "cifar10")
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert weights.std().item() == pytest.approx(0.01, rel=0.05)  # N(0, 0.01) initialisation
    assert sum(isinstance(m, ali.Maxout) for m in model.discriminator.modules()) == 9  # Table 3: maxout in D
    dropouts = [m.p for m in model.discriminator.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts[0] == 0.2 and set(dropouts) == {0.2, 0.5}
    assert model.discriminator.joint_net[1].in_features == 1024  # D(x) and D(z), 512 maps each
    assert not any(isinstance(m, torch.nn.Dropout) for m in [*model.encoder.modules(), *model.decoder.modules()])


def test_the_discriminator_sees_joint_pairs():
    model = tiny_model().eval()  # no dropout: D is a function of (x, z)
    x, z = torch.rand(4, 1, 8, 8), torch.randn(4, 4)
    logits = model.discriminator(x, z)
    assert (model.discriminator(x, torch.randn(4, 4)) != logits).all()  # same x, other z: every logit moves
    assert (model.discriminator(torch.rand(4, 1, 8, 8), z) != logits).all()  # same z, other x
    torch.testing.assert_close(model.discriminator(x[:2], z[:2]), logits[:2])  # each row is one pair


def test_the_encoder_samples_by_reparametrisation():
    model = tiny_model()
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    z_hat = model.sample_posterior(x)
    mu, log_std = model.posterior(x)
    torch.manual_seed(1)
    torch.testing.assert_close(z_hat, mu + log_std.exp() * torch.randn_like(mu))  # Eq. 2
    # The discriminator's gradient reaches both heads of the encoder: mu and log sigma.
    model.discriminator(x, z_hat).sum().backward()
    head = model.encoder.net[-1][-1]
    assert head.out_features == 2 * 4
    assert head.weight.grad[:4].abs().sum() > 0 and head.weight.grad[4:].abs().sum() > 0


def test_the_decoder_starts_at_the_mean_image():
    model = tiny_model().eval()
    with torch.no_grad():
        model.decoder.net[-1].weight.zero_()
    x = torch.rand(50, 1, 8, 8) * 0.8 + 0.1
    model.start_at_the_mean_image(x)
    torch.testing.assert_close(model.sample(3), x.mean(0).expand(3, -1, -1, -1))


# ---------------------------------------------------------------------------------------------
# Losses and the training step
# ---------------------------------------------------------------------------------------------


def test_losses_match_a_hand_computation():
    data_logits, sample_logits = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.3, -2.0, 1.5])

    def sigmoid(v):
        return 1 / (1 + math.exp(-v))

    d_real, d_fake = [sigmoid(v) for v in data_logits.tolist()], [sigmoid(v) for v in sample_logits.tolist()]
    # Algorithm 1: L_d = -mean log rho_q - mean log(1 - rho_p); L_g = -mean log(1 - rho_q) - mean log rho_p.
    l_d = -sum(map(math.log, d_real)) / 3 - sum(math.log(1 - p) for p in d_fake) / 3
    l_g = -sum(math.log(1 - p) for p in d_real) / 3 - sum(map(math.log, d_fake)) / 3
    assert ali.discriminator_loss(data_logits, sample_logits).item() == pytest.approx(l_d, rel=1e-6)
    assert ali.generator_loss(data_logits, sample_logits).item() == pytest.approx(l_g, rel=1e-6)
    half = torch.zeros(5)
    assert ali.discriminator_loss(half, half).item() == pytest.approx(2 * math.log(2))
    assert ali.generator_loss(half, half).item() == pytest.approx(2 * math.log(2))


def test_each_phase_changes_only_its_own_networks():
    model = tiny_model()
    optimizers = optimizers_for(model)
    x = torch.rand(16, 1, 8, 8)
    before = parameters(model)
    ali.discriminator_update(model, optimizers["discriminator"], x)
    assert changed_networks(before, model) == {"discriminator"}
    before, d_grads = parameters(model), [p.grad.clone() for p in model.discriminator.parameters()]
    ali.generator_update(model, optimizers["generator"], x)
    assert changed_networks(before, model) == {"encoder", "decoder"}
    # D was frozen during the generators' backward pass (its gradients are still D's phase's), then thawed.
    assert all(torch.equal(p.grad, g) for p, g in zip(model.discriminator.parameters(), d_grads))
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_train_step_runs_both_phases_and_returns_detached_losses():
    model = tiny_model()
    before = parameters(model)
    losses = ali.train_step(model, optimizers_for(model), torch.rand(16, 1, 8, 8))
    assert set(losses) == {"discriminator", "generator"}
    assert all(v.ndim == 0 and not v.requires_grad and math.isfinite(v) for v in losses.values())
    assert changed_networks(before, model) == {"encoder", "decoder", "discriminator"}


def test_the_game_trains_on_tiny_data():
    data = common.load_dataset("digits")
    x = data.x_train[:200]
    model = tiny_model(latent_dim=8)
    model.start_at_the_mean_image(x)
    optimizers = optimizers_for(model, lr=2e-3)
    history = [ali.train_step(model, optimizers, x[i:i + 50]) for _ in range(60) for i in range(0, 200, 50)]
    d_last = sum(h["discriminator"] for h in history[-40:]) / 40
    assert 0.3 < d_last < 1.39  # D learned something; the game neither stalled nor ran away
    model.eval()
    with torch.no_grad():
        samples = model.sample(200)
    assert samples.std(0).mean() > 0.3 * x.std(0).mean()  # the samples vary with z


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    ali.main(["--epochs", "2", "--out", str(out), "--latent-dim", "2"])
    for name in ("config.json", "checkpoint.pt", "log.csv", "losses.png", "samples.png", "reconstructions.png",
                 "interpolations.png", "samples/epoch_001.png", "samples/epoch_002.png", "code_space.png",
                 "manifold.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ali" and config["network"] == "mlp" and config["latent_dim"] == 2
    assert config["batch_size"] == 100 and config["lr"] == ali.DEFAULTS["digits"]["lr"]
    log = (out / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("epoch,discriminator,generator") and len(log) == 3
    # eval.py's way of loading a run
    model = ali.build_model(machinery.read_config(out))
    model.load_state_dict(machinery.load_checkpoint(out / "checkpoint.pt", "ali")["model_state"])
    model.eval()
    x = common.load_dataset("digits").x_test[:5]
    assert model.encode(x).shape == (5, 2) and model.decode(model.encode(x)).shape == x.shape
    assert model.sample(4).shape == (4, 1, 8, 8) and model.sigma == 0.0


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # Dropout masks, eps and z all come from the global torch RNG, which the checkpoint saves.
    ali.main(["--epochs", "2", "--out", str(tmp_path / "straight")])
    ali.main(["--epochs", "1", "--out", str(tmp_path / "resumed")])
    ali.main(["--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"])
    straight = machinery.load_checkpoint(tmp_path / "straight/checkpoint.pt", "ali")["model_state"]
    resumed = machinery.load_checkpoint(tmp_path / "resumed/checkpoint.pt", "ali")["model_state"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_input_is_one_line(tmp_path, capsys):
    for argv, message in [(["--epochs", "0"], "--epochs"), (["--dataset", "nosuch"], "unknown dataset"),
                          (["--batch-size", "5000"], "larger than the training set"), (["--sigma", "0.5"], "--sigma")]:
        with pytest.raises(machinery.CLIError, match=message):
            ali.main([*argv, "--out", str(tmp_path / "run")])
    # As a command (machinery.cli around main): one "error: ..." line on stderr, exit status 2.
    with pytest.raises(SystemExit) as exit:
        machinery.cli(lambda: ali.main(["--lr", "-1"]))
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "--lr" in err and "Traceback" not in err
