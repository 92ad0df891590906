"""The shared plumbing: corruption, the Parzen estimator against a brute-force reference,
bandwidth selection, checkpoints, and the error paths every script shares."""

import math
import os
import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import common
import eval as evaluation
import machinery


def brute_force_parzen(samples, data, sigma):
    """log (1/N) sum_i N(x; mu_i, sigma^2 I), term by term in float64 (no |a|^2+|b|^2-2ab trick)."""
    samples, data = samples.reshape(len(samples), -1), data.reshape(len(data), -1)
    dims = samples.shape[1]
    sq = ((data[:, None, :] - samples[None, :, :]) ** 2).sum(-1)
    log_kernel = -sq / (2 * sigma**2) - dims / 2 * np.log(2 * np.pi * sigma**2)
    return logsumexp(log_kernel, axis=1) - np.log(len(samples))


def test_corrupt_adds_gaussian_noise_of_the_given_std():
    torch.manual_seed(0)
    x = torch.full((200, 1, 28, 28), 0.5)
    noise = common.corrupt(x, 0.3) - x
    assert abs(noise.mean().item()) < 0.005
    assert noise.std().item() == pytest.approx(0.3, rel=0.01)
    assert common.corrupt(x, 0.3).min() < 0 < 1 < common.corrupt(x, 0.3).max()  # not clipped


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1.0])
def test_parzen_matches_brute_force(sigma):
    rng = np.random.default_rng(0)
    samples, data = rng.random((300, 1, 8, 8)), rng.random((70, 1, 8, 8))
    got = common.parzen_log_likelihoods(torch.tensor(samples, dtype=torch.float32),
                                        torch.tensor(data, dtype=torch.float32), [sigma])[0]
    expected = brute_force_parzen(samples.astype(np.float32).astype(np.float64),
                                  data.astype(np.float32).astype(np.float64), sigma)
    assert got.shape == (70,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-6)


def test_parzen_is_exact_far_from_the_samples_where_naive_code_underflows():
    rng = np.random.default_rng(1)
    samples = rng.random((50, 784))
    data = rng.random((10, 784)) + 3.0  # |x - mu|^2 ~ 7000: exp(-7000 / 0.02) is 0 in float64
    sigma = 0.1
    with np.errstate(divide="ignore"):
        naive = np.log(np.exp(-((data[:, None] - samples[None]) ** 2).sum(-1) / (2 * sigma**2)).mean(1))
    assert np.isneginf(naive).all()
    got = common.parzen_log_likelihoods(torch.tensor(samples), torch.tensor(data), [sigma])[0].numpy()
    np.testing.assert_allclose(got, brute_force_parzen(samples, data, sigma), rtol=1e-10)
    assert np.isfinite(got).all()


def test_parzen_chunks_agree_with_one_pass():
    torch.manual_seed(0)
    samples, data = torch.rand(40, 30), torch.rand(33, 30)
    sigmas = [0.1, 0.3]
    whole = common.parzen_log_likelihoods(samples, data, sigmas)
    chunked = common.parzen_log_likelihoods(samples, data, sigmas, max_entries=40 * 4)  # 4 rows a chunk
    assert whole.shape == (2, 33)
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-12)


def test_select_bandwidth_recovers_the_bandwidth_of_a_known_parzen_model():
    torch.manual_seed(0)
    centres = torch.rand(40, 5) * 4
    true_sigma = 0.3
    data = centres[torch.randint(40, (4000,))] + true_sigma * torch.randn(4000, 5)
    sigmas = np.logspace(-1, 0, 10)
    best, means = common.select_bandwidth(centres, data, sigmas)
    assert best == sigmas[np.abs(np.log(sigmas / true_sigma)).argmin()]
    assert means.shape == (10,) and int(means.argmax()) == list(sigmas).index(best)


def test_mean_and_standard_error():
    mean, se = evaluation.mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    path = tmp_path / "checkpoint.pt"
    machinery.save_checkpoint(path, {"model": "aae", "epoch": 3, "weights": torch.arange(4.0)})
    loaded = machinery.load_checkpoint(path, "aae")
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))
    with pytest.raises(machinery.CLIError, match="daae.py|not daae"):
        machinery.load_checkpoint(path, "daae")

    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(machinery.CLIError, match="not a valid checkpoint"):
        machinery.load_checkpoint(path, "aae")

    torch.save({"format": "something else"}, path)
    with pytest.raises(machinery.CLIError, match="not a checkpoint written by these scripts"):
        machinery.load_checkpoint(path, "aae")

    with pytest.raises(machinery.CLIError, match="no checkpoint"):
        machinery.load_checkpoint(tmp_path / "missing.pt", "aae")


class RunsCode:
    """A pickle that would create a file when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": machinery.CHECKPOINT_FORMAT, "payload": RunsCode(str(marker))}, f, protocol=2)
    with pytest.raises(machinery.CLIError, match="not a valid checkpoint"):
        machinery.load_checkpoint(path, "aae")
    assert not marker.exists()


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with machinery.atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    with machinery.atomic_path(tmp_path / "new.txt") as tmp:
        open(tmp, "w").write("new")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_parser_errors_are_one_line_cli_errors():
    parser = machinery.model_parser("aae", "test")
    for argv in (["--epochs", "0"], ["--batch-size", "-3"], ["--lr", "nan"], ["--bogus"]):
        with pytest.raises(machinery.CLIError, match="see --help"):
            parser.parse_args(argv)
    assert math.isclose(parser.parse_args(["--lr", "2e-4"]).lr, 2e-4)


def test_device_flag_and_its_gpu_alias():
    parser = machinery.model_parser("aae", "test")
    assert parser.parse_args([]).device is None  # auto: CUDA when there is one, else the CPU
    assert parser.parse_args(["--gpu"]).device == "cuda"
    assert parser.parse_args(["--device", "cpu"]).device == "cpu"
    assert machinery.choose_device("cpu") == torch.device("cpu")  # forced even where CUDA exists
    with pytest.raises(machinery.CLIError, match="--device"):
        parser.parse_args(["--device", "tpu"])


def test_help_lists_every_datasets_defaults(capsys):
    import aae

    with pytest.raises(SystemExit) as exit:
        aae.main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0
    assert "digits    --latent-dim 10, --lr 0.001, --batch-size 64, --epochs 150" in out
    assert "mnist     --latent-dim 10, --lr 0.0002, --batch-size 64, --epochs 100" in out
    assert "images per mini-batch" in out


def test_help_shows_on_off_defaults_as_their_flag(capsys):
    import semi_supervised_aae

    with pytest.raises(SystemExit):
        semi_supervised_aae.main(["--help"])
    out = capsys.readouterr().out
    clustering = next(line for line in out.splitlines() if line.startswith("  mnist with --labels 0:"))
    semi_supervised = next(line for line in out.splitlines() if line.startswith("  mnist     "))
    assert "--batch-norm," in clustering and "--no-batch-norm" in semi_supervised


def test_a_trained_model_in_four_lines(tmp_path):
    import aae
    from helpers import run_script

    assert run_script(aae.main, ["--epochs", "1", "--latent-dim", "3", "--out", str(tmp_path / "run")]) == 0
    run = common.load_run(tmp_path / "run")
    with torch.no_grad():
        z = run.model.encode(torch.rand(5, 1, 8, 8))
        x_rec, x_new = run.model.decode(z), run.model.sample(4)
    assert not run.model.training and z.shape == (5, 3)
    assert x_rec.shape == (5, 1, 8, 8) and x_new.shape == (4, 1, 8, 8) and 0 <= x_new.min() <= x_new.max() <= 1
    assert run.unfinished is None and run.config["model"] == "aae"


def test_grid_row_labels_are_written_in_a_left_margin(tmp_path):
    from PIL import Image
    images = torch.ones(6, 1, 28, 28)  # white images: any black pixel is a label's
    common.save_grid(images, tmp_path / "plain.png", nrow=3)
    common.save_grid(images, tmp_path / "labelled.png", nrow=3, row_labels=["clean", "corrupted"])
    plain, labelled = (np.asarray(Image.open(tmp_path / name)) for name in ("plain.png", "labelled.png"))
    margin = labelled.shape[1] - plain.shape[1]
    assert labelled.shape[0] == plain.shape[0] and margin > 0
    assert np.array_equal(labelled[:, margin:], plain)  # the grid itself is unchanged
    assert (labelled[:30, :margin] < 128).any() and (labelled[30:, :margin] < 128).any()  # a label on each row


class _Codes(torch.nn.Module):
    """A stand-in model with d-D codes: the first d pixels of an image."""

    def __init__(self, d):
        super().__init__()
        self.d, self.weight = d, torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return x.flatten(1)[:, :self.d]

    def sample_prior(self, n):
        return torch.randn(n, self.d)

    def device(self):
        return self.weight.device


def test_code_space_projects_long_codes_and_puts_a_labelled_prior_beside_them(tmp_path, monkeypatch):
    from sklearn.decomposition import PCA
    drawn = []
    monkeypatch.setattr(common, "save_figure", lambda figure, path: drawn.append(figure))
    x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 10
    common.save_code_space(_Codes(2), x, y, tmp_path / "a.png")  # 2-D: drawn as they are, over the prior
    scatter, _colour_bar = drawn[-1].axes
    assert len(scatter.collections) == 2 and np.allclose(scatter.collections[1].get_offsets(), x.flatten(1)[:, :2])
    prior, s = torch.randn(30, 5), torch.arange(30) % 3
    common.save_code_space(_Codes(5), x, y, tmp_path / "b.png", prior=(prior, s))
    test_panel, prior_panel = [axes for axes in drawn[-1].axes if axes.get_title()]
    assert (test_panel.get_title(), prior_panel.get_title()) == ("test codes", "prior codes")
    pca = PCA(2).fit(torch.cat([x.flatten(1)[:, :5], prior]).numpy())  # one projection of both sets
    assert np.allclose(prior_panel.collections[0].get_offsets(), pca.transform(prior.numpy()), atol=1e-5)
    assert np.allclose(test_panel.collections[0].get_offsets(), pca.transform(x.flatten(1)[:, :5].numpy()), atol=1e-5)
    assert np.array_equal(prior_panel.collections[0].get_array(), s.numpy())  # coloured by the prior's labels


def test_losses_png_draws_the_games_equilibrium_for_the_models_that_have_it(tmp_path, monkeypatch):
    import matplotlib.axes
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda self, y, **kwargs: drawn.append(y))
    history = [{"epoch": 1, "reconstruction": 0.3, "discriminator": 1.2, "encoder_adversarial": 0.8, "seconds": 1.0}]
    machinery.write_log(tmp_path, history, plot=True, model="daae")
    assert drawn == pytest.approx([2 * math.log(2), math.log(2)])  # D's loss, then the encoder's
    drawn.clear()
    machinery.write_log(tmp_path, [{"epoch": 1, "discriminator": 1.2, "generator": 1.3, "seconds": 1.0}],
                        plot=True, model="ali")
    assert drawn == []  # ALI's losses are not aae.py's pair
