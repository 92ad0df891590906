"""The DAAE and the iDAAE: the corruption, the iDAAE's Monte-Carlo average, which networks each of
the three optimisers moves, the Markov chain, and both command lines end to end (with resume)."""

import copy
import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import daae
import eval as evaluation
import idaae
from helpers import assert_training_progresses
from helpers import run_script as cli

ROOT = Path(__file__).resolve().parents[1]


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def tiny_model(sigma=0.5):
    torch.manual_seed(0)
    return daae.DAAE((1, 8, 8), 4, sigma, encoder_hidden=[64], decoder_hidden=[64], discriminator_hidden=[64])


def tiny_optimizers(model, lr=1e-3, **phase_lr):
    """torch.optim.Adam per update; phase_lr sets one update's rate (0 switches it off)."""
    params = {"reconstruction": [*model.encoder.parameters(), *model.decoder.parameters()],
              "discriminator": model.discriminator.parameters(), "encoder_adversarial": model.encoder.parameters()}
    return {name: torch.optim.Adam(p, lr=phase_lr.get(name, lr)) for name, p in params.items()}


def integrated(M):
    return lambda encoder, x, sigma: idaae.integrated_codes(encoder, x, sigma, M)


# ---------------------------------------------------------------------------------------------
# The corruption and the iDAAE's average
# ---------------------------------------------------------------------------------------------


def test_corrupted_codes_see_additive_unclipped_gaussian_noise():
    torch.manual_seed(0)
    x = torch.rand(500, 1, 8, 8)
    noise = daae.corrupted_codes(nn.Flatten(), x, 0.5) - x.flatten(1)  # identity encoder: z = x~
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)
    assert (x.flatten(1) + noise).min() < 0 and (x.flatten(1) + noise).max() > 1  # not clipped


def test_integrated_codes_use_m_independent_corruptions():
    # With an identity encoder the mean of M codes is x plus the mean of M independent noises,
    # whose std is sigma / sqrt(M): the smaller noise level that averaging the INPUTS amounts to.
    torch.manual_seed(0)
    x = torch.rand(500, 1, 8, 8)
    for M in (1, 4, 16):
        noise = idaae.integrated_codes(nn.Flatten(), x, 0.5, M) - x.flatten(1)
        assert noise.std().item() == pytest.approx(0.5 / M**0.5, rel=0.03), M


def test_integrated_codes_are_the_mean_of_m_encodings_not_the_encoding_of_the_mean():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))  # non-linear
    x, sigma, M = torch.rand(10, 1, 8, 8), 0.5, 5
    torch.manual_seed(1)
    got = idaae.integrated_codes(encoder, x, sigma, M)
    torch.manual_seed(1)
    noise = torch.randn(M, *x.shape)  # the same draws, one corruption per row j
    mean_of_codes = torch.stack([encoder(x + sigma * noise[j]) for j in range(M)]).mean(0)
    code_of_mean = encoder(x + sigma * noise.mean(0))  # the authors' later PyTorch code
    torch.testing.assert_close(got, mean_of_codes)
    assert (got - code_of_mean).abs().max() > 1e-2


def test_the_average_of_a_curved_encoder_differs_as_expected():
    # enc(x) = x^2: the mean of M codes is about x^2 + sigma^2, the code of the mean x^2 + sigma^2 / M.
    torch.manual_seed(0)
    x, sigma, M = torch.rand(4000, 1, 2, 2), 0.5, 8
    got = idaae.integrated_codes(lambda t: t.flatten(1) ** 2, x, sigma, M) - x.flatten(1) ** 2
    assert got.mean().item() == pytest.approx(sigma**2, abs=0.01)


def test_the_idaae_step_feeds_the_discriminator_the_integrated_codes():
    model, sigma, M = tiny_model(), 0.5, 5
    optimizers = tiny_optimizers(model, reconstruction=0.0)  # the encoder keeps its weights until the last update
    encoder_before = copy.deepcopy(model.encoder)
    seen, forward = [], model.discriminator.forward

    def spy(z, onehot=None):
        seen.append(z.detach().clone())
        return forward(z, onehot)

    model.discriminator.forward = spy
    x = torch.rand(16, 1, 8, 8)
    torch.manual_seed(3)
    daae.train_step(model, optimizers, x, sigma, integrated(M))
    torch.manual_seed(3)  # the notebooks' order: the discriminator's update draws first, then the encoder's
    expected_for_d = idaae.integrated_codes(encoder_before, x, sigma, M)
    model.sample_prior(len(x))
    expected_for_encoder = idaae.integrated_codes(encoder_before, x, sigma, M)  # fresh corruptions
    real_then_fake, z_fake_for_encoder = seen  # D scores real and fake codes in one call, then the encoder's
    torch.testing.assert_close(real_then_fake[len(x):], expected_for_d.detach())
    torch.testing.assert_close(z_fake_for_encoder, expected_for_encoder.detach())


# ---------------------------------------------------------------------------------------------
# The three updates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fake_codes", [daae.corrupted_codes, integrated(3)], ids=["daae", "idaae"])
@pytest.mark.parametrize("phase, networks", [("reconstruction", {"encoder", "decoder"}),
                                             ("discriminator", {"discriminator"}), ("encoder_adversarial", {"encoder"})])
def test_each_optimiser_moves_exactly_its_networks(fake_codes, phase, networks):
    model = tiny_model()
    optimizers = tiny_optimizers(model, lr=0.0, **{phase: 1e-3})  # only this update has a learning rate
    before = {k: v.clone() for k, v in model.state_dict().items()}
    daae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), 0.5, fake_codes)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == networks


@pytest.mark.parametrize("update_order, expected", [
    ("adversarial-first", ["discriminator", "encoder_adversarial", "reconstruction"]),
    ("reconstruction-first", ["reconstruction", "discriminator", "encoder_adversarial"])])
def test_the_updates_run_in_the_chosen_order_each_on_its_own_corruption(update_order, expected):
    model = tiny_model()
    optimizers = tiny_optimizers(model)
    steps, encoder_inputs = [], []
    for name, optimizer in optimizers.items():
        optimizer.register_step_pre_hook(lambda optimizer, args, kwargs, name=name: steps.append(name))
    model.encoder.register_forward_pre_hook(lambda module, inputs: encoder_inputs.append(inputs[0].clone()))
    daae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), 0.5, update_order=update_order)
    assert steps == expected
    assert len(encoder_inputs) == 3  # one corrupted batch per update, none shared
    assert all(not torch.equal(a, b) for i, a in enumerate(encoder_inputs) for b in encoder_inputs[i + 1:])


def test_clipped_logits_give_the_notebooks_clipped_probabilities_and_their_gradient():
    logits = torch.linspace(-12, 12, 97, requires_grad=True)
    target = (torch.arange(97) % 2).float()
    ours = F.binary_cross_entropy_with_logits(daae.clip_logits(logits, 0.001, 0.99), target, reduction="none")
    (ours_grad,) = torch.autograd.grad(ours.sum(), logits)
    probabilities = logits.sigmoid()
    clipped = probabilities.clamp(0.001, 0.99)  # the notebooks' T.clip(p, 0.001, 0.99), then BCE
    theirs = -(target * clipped.log() + (1 - target) * (1 - clipped).log())
    (theirs_grad,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-3, atol=1e-6)
    active = (probabilities < 0.001) | (probabilities > 0.99)
    assert active.any() and (ours_grad[active] == 0).all() and (ours_grad[~active] != 0).all()


@pytest.mark.parametrize("clip", [True, False])
def test_a_certain_discriminator_stops_the_encoders_adversarial_push_only_when_clipped(clip):
    model = tiny_model()
    optimizers = tiny_optimizers(model)
    nn.init.constant_(model.discriminator.net[-1].bias, -20.0)  # D is sure that every code is fake
    before = copy.deepcopy(model.encoder.state_dict())
    loss = daae.encoder_adversarial_update(model, optimizers["encoder_adversarial"], torch.rand(16, 1, 8, 8), 0.5,
                                           daae.corrupted_codes, clip)
    unchanged = all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in before.items())
    assert unchanged == clip
    assert loss.item() == pytest.approx(-math.log(0.001), rel=1e-4) if clip else loss.item() > 19


def test_the_adversarial_updates_leave_the_decoder_unchanged():
    model = tiny_model()
    optimizers = tiny_optimizers(model, reconstruction=0.0)
    decoder = copy.deepcopy(model.decoder.state_dict())
    for _ in range(3):
        daae.train_step(model, optimizers, torch.rand(16, 1, 8, 8), 0.5)
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder.items())


@pytest.mark.parametrize("fake_codes", [daae.corrupted_codes, integrated(5)], ids=["daae", "idaae"])
def test_losses_fall_on_tiny_data(fake_codes):
    data = common.load_dataset("digits")
    x = data.x_train[:256]
    model = tiny_model()
    optimizers = tiny_optimizers(model)
    history = [daae.train_step(model, optimizers, x[i:i + 32], 0.25, fake_codes)
               for _ in range(30) for i in range(0, 256, 32)]
    assert_training_progresses(history)


def test_weight_penalty_is_on_the_encoders_output_layer_only():
    model = tiny_model()
    daae.weight_penalty(model.encoder, 0.1, 1e-4).backward()
    with_grad = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad == ["encoder.net.1.2.weight"]


def test_celeba_optimisers_are_rmsprop_with_momentum_in_the_discriminator_only():
    optimizers = daae.make_optimizers(tiny_model(), daae.DEFAULTS["celeba"])
    assert all(isinstance(o, torch.optim.RMSprop) for o in optimizers.values())
    momentum = {name: o.param_groups[0]["momentum"] for name, o in optimizers.items()}
    assert momentum == {"reconstruction": 0.0, "discriminator": 0.9, "encoder_adversarial": 0.0}
    assert optimizers["encoder_adversarial"].param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_adversarial_lr_sets_the_discriminator_and_encoder_rates_only(optimizer):
    config = {**daae.DEFAULTS["omniglot"], "optimizer": optimizer, "lr": 1e-4}
    rates = lambda optimizers: {name: o.param_groups[0]["lr"] for name, o in optimizers.items()}
    assert rates(daae.make_optimizers(tiny_model(), config)) == \
        {"reconstruction": 1e-4, "discriminator": 1e-4, "encoder_adversarial": 1e-4}
    assert rates(daae.make_optimizers(tiny_model(), {**config, "adversarial_lr": 1e-5})) == \
        {"reconstruction": 1e-4, "discriminator": 1e-5, "encoder_adversarial": 1e-5}


def test_he_init_keeps_a_relu_signal_that_glorot_shrinks():
    # Omniglot's 7-layer decoder at init: the image logits' scale with each initialisation.
    torch.manual_seed(0)
    scale = {}
    for init in ("glorot", "he"):
        model = daae.DAAE((1, 8, 8), 20, 0.5, encoder_hidden=[1000] * 3, decoder_hidden=[1000] * 6, init=init)
        layers = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
        assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in layers)
        h = torch.randn(256, 20)
        for layer in layers[:-1]:
            h = layer(h).relu()
        scale[init] = h.pow(2).mean().item()
    assert 0.5 < scale["he"] < 2 and scale["glorot"] < scale["he"] / 20  # 2 per layer: 2^6 = 64


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def test_markov_chain_returns_t_plus_one_batches_in_the_unit_interval():
    model = tiny_model().eval()
    z = torch.randn(6, 4)
    chain = model.markov_chain_sample(6, 5, z)
    assert len(chain) == 6
    assert all(x.shape == (6, 1, 8, 8) and 0 <= x.min() and x.max() <= 1 for x in chain)
    torch.testing.assert_close(chain[0], model.decode(z))  # x_0 = dec(z_0)
    assert not torch.equal(chain[1], chain[2])  # every step corrupts afresh
    torch.manual_seed(5)
    last = model.markov_chain_sample(6, 5)[-1]
    torch.manual_seed(5)
    torch.testing.assert_close(model.sample(6, steps=5), last)  # sample() keeps only the last batch
    torch.manual_seed(5)
    from_prior = model.sample(6)
    torch.manual_seed(5)
    torch.testing.assert_close(from_prior, model.decode(torch.randn(6, 4)))  # steps=0: x = dec(z), z ~ p(z)


def test_a_chain_without_noise_is_plain_reconstruction():
    model = tiny_model(sigma=0.0).eval()
    chain = model.markov_chain_sample(3, 2)
    torch.testing.assert_close(chain[1], model.decode(model.encode(chain[0])))


# ---------------------------------------------------------------------------------------------
# The command lines, run folders and resume
# ---------------------------------------------------------------------------------------------

RUN_FILES = ("config.json", "checkpoint.pt", "log.csv", "losses.png", "samples.png", "samples/epoch_001.png",
             "samples/epoch_002.png", "reconstructions.png", "chain.png", "chain_samples.png", "code_histogram.png")


@pytest.mark.parametrize("module, extra", [(daae, []), (idaae, ["--M", "2"]),
                                           (daae, ["--init", "he", "--adversarial-lr", "1e-4", "--clip",
                                                   "--update-order", "reconstruction-first"])],
                         ids=["daae", "idaae", "daae-he-init-adversarial-lr-clip-order"])
def test_cli_writes_the_run_folder(tmp_path, module, extra):
    out = tmp_path / "run"
    assert cli(module.main, ["--epochs", "2", "--sample-steps", "3", "--out", str(out), *extra]) == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == module.__name__ and config["sigma"] == 0.25 and config["sample_steps"] == 3
    assert config.get("M") == (2 if module is idaae else None)
    assert (config["init"], config["adversarial_lr"]) == (("he", 1e-4) if "--init" in extra else ("glorot", None))
    assert (config["clip"], config["update_order"]) == ((True, "reconstruction-first") if "--clip" in extra
                                                        else (False, "adversarial-first"))
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    model = module.build_model(config)
    model.load_state_dict(weights(out / "checkpoint.pt"))
    assert model.sigma == 0.25 and model.latent_dim == 10
    assert len(model.markov_chain_sample(2, config["sample_steps"])) == 4


def test_the_defaults_are_the_papers_settings():
    assert {k: daae.DEFAULTS["mnist"][k] for k in ("sigma", "sample_steps", "lr", "batch_size", "epochs")} == \
        {"sigma": 0.5, "sample_steps": 10, "lr": 2e-4, "batch_size": 64, "epochs": 100}
    assert daae.DEFAULTS["omniglot"]["sample_steps"] == 50 and daae.DEFAULTS["sprites"]["lr_decay"] == 0.95
    assert idaae.DEFAULTS["mnist"]["M"] == 5 and idaae.DEFAULTS["celeba"]["M"] == 10
    # the notebooks' clipping where they have it, and their update order everywhere
    assert {name: row["clip"] for name, row in daae.DEFAULTS.items() if row["clip"]} == {"omniglot": True,
                                                                                         "sprites": True}
    assert {row["update_order"] for row in idaae.DEFAULTS.values()} == {"adversarial-first"}


def test_resume_equals_an_uninterrupted_run(tmp_path):
    argv = ["--sample-steps", "2"]
    assert cli(daae.main, [*argv, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert cli(daae.main, [*argv, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert cli(daae.main, ["--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoint.pt"), weights(tmp_path / "resumed/checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_input_is_one_line(tmp_path, capsys):
    cases = [(idaae.main, ("--M", "0"), "--M"), (daae.main, ("--sigma", "-1"), "--sigma"),
             (idaae.main, ("--sigma", "-1"), "--sigma"), (daae.main, ("--sample-steps", "0"), "--sample-steps"),
             (daae.main, ("--prior", "mixture", "--latent-dim", "5"), "2-D"),
             (daae.main, ("--prior", "swissroll"), "--prior"), (daae.main, ("--init", "zeros"), "--init"),
             (daae.main, ("--adversarial-lr", "0"), "--adversarial-lr")]
    for main, argv, message in cases:
        assert cli(main, ["--epochs", "1", "--out", str(tmp_path / "x"), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (argv, err)


@pytest.mark.parametrize("argv", [["daae.py", "--sigma", "-1"], ["idaae.py", "--M", "0"]])
def test_the_scripts_main_block_prints_one_line_not_a_traceback(argv, monkeypatch, capsys):
    # runpy runs the file as `python daae.py ...` would (its __main__ block), without a new interpreter.
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err


def test_a_daae_samples_through_its_chain_and_eval_still_scores_x0_as_before():
    model = tiny_model()
    model.sample_steps = 3
    torch.manual_seed(5)
    chain = model.markov_chain_sample(4, 3)
    torch.manual_seed(5)
    torch.testing.assert_close(model.sample(4), chain[-1])  # the model's samples: the chain's last step
    torch.manual_seed(5)
    torch.testing.assert_close(model.sample(4, steps=0), chain[0])  # x_0 = dec(z), as named
    torch.manual_seed(5)
    # eval.py's plain "samples" row stays x_0 (its numbers do not change): the chain rows pass their steps
    torch.testing.assert_close(evaluation.draw_samples(model, 4, torch.device("cpu")), chain[0])
    assert idaae.build_model({**daae.DEFAULTS["digits"], "image_shape": [1, 8, 8], "sample_steps": 3}).sample_steps == 0


def test_an_idaae_of_one_corruption_trains_exactly_as_the_daae():
    # The iDAAE's code differs from the DAAE's only in M: with one corruption its fake codes are the
    # DAAE's, from the same random numbers, so the two runs end bit for bit the same.
    argv = ["--epochs", "2", "--seed", "3"]
    assert cli(daae.main, [*argv, "--out", "daae"]) == 0 and cli(idaae.main, [*argv, "--M", "1", "--out", "idaae"]) == 0
    a, b = (torch.load(Path(run) / "checkpoint.pt", weights_only=True)["model_state"] for run in ("daae", "idaae"))
    assert all(torch.equal(a[key], b[key]) for key in a)
