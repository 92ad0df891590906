"""The semi-supervised AAE (Sections 5-7): each phase updates only its networks, the labelled
batches come from the N labelled images alone and are balanced, no other label reaches
training, the paper's cluster-error rule, losses fall, the command line end to end with exact
resume and one-line errors; and eval.py's new keys."""

import json

import numpy as np
import pytest
import torch

import common
import eval as evaluation
import results
import semi_supervised_aae as ssaae
from helpers import run_script


def cli(argv):
    return run_script(ssaae.main, argv)


def weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def tiny_model(reduce_dim=0, clusters=10):
    torch.manual_seed(0)
    model = ssaae.SemiSupervisedAAE((1, 8, 8), clusters, reduce_dim or 3, [32, 32], [32], reduce_dim, 0.3, 0.0)
    return model, ssaae.make_optimizers(model, 1e-3, 1e-3)


def changed_networks(model, phase):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    phase()
    after = model.state_dict()
    return {k.split(".")[0] if "." in k else k for k in before if not torch.equal(before[k], after[k])}


def regularisation(model, optimizers, x, discriminator_noise=0.0):
    """Phase (2): the discriminators' update, then the encoder's against them, both on the same input."""
    ssaae.discriminator_update(model, optimizers["discriminators"], x, discriminator_noise)
    ssaae.encoder_adversarial_update(model, optimizers["encoder_adversarial"], x, discriminator_noise)


def changed_parameters(model, phase):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    phase()
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


# ---------------------------------------------------------------------------------------------
# The three phases
# ---------------------------------------------------------------------------------------------


def test_each_phase_updates_only_its_networks():
    model, optimizers = tiny_model()
    x, x_l, y_l = torch.rand(16, 1, 8, 8), torch.rand(10, 1, 8, 8), torch.arange(10)
    assert changed_networks(model, lambda: ssaae.reconstruction_update(
        model, optimizers["reconstruction"], x, common.corrupt(x, 0.3))) == {"encoder", "decoder"}
    assert changed_networks(model, lambda: regularisation(
        model, optimizers, common.corrupt(x, 0.3))) == {"encoder", "d_cat", "d_gauss"}
    # The cross-entropy reaches the trunk and the y head, never the style head z.
    changed = changed_parameters(model, lambda: ssaae.classification_update(
        model, optimizers["classification"], common.corrupt(x_l, 0.3), y_l))
    assert {k.rsplit(".", 1)[0].split(".")[1] for k in changed} == {"trunk", "y_head"}


def test_the_discriminators_see_noisy_inputs_only_with_discriminator_noise():
    model, optimizers = tiny_model()
    seen = []
    for network in (model.d_cat, model.d_gauss):
        network.register_forward_pre_hook(lambda module, args: seen.append((module, args[0].detach().clone())))
    x = torch.rand(16, 1, 8, 8)
    regularisation(model, optimizers, x)
    # D's update scores the prior's samples and the encoder's outputs in one call (32 rows); the
    # encoder's update scores its own (16). D_cat sees one-hot samples and the softmax y: rows summing to 1.
    assert [(m, len(v)) for m, v in seen] == [(model.d_cat, 32), (model.d_gauss, 32), (model.d_cat, 16),
                                              (model.d_gauss, 16)]
    assert all(torch.allclose(v.sum(1), torch.ones(len(v))) for m, v in seen if m is model.d_cat)
    seen.clear()
    regularisation(model, optimizers, x, discriminator_noise=0.3)
    assert not any(torch.allclose(v.sum(1), torch.ones(len(v)), atol=1e-2) for m, v in seen if m is model.d_cat)
    plain = model.encoder(x)[1]
    gauss_fake = [v for m, v in seen if m is model.d_gauss][0][16:]  # the encoder's z, as D_gauss saw it
    assert 0.2 < (gauss_fake - plain).std() < 0.4


def test_section7_heads_move_in_the_reconstruction_phase_and_are_pushed_apart():
    model, optimizers = tiny_model(reduce_dim=2)
    assert model.decoder.net[0].in_features == 2  # the decoder sees y W_C + z, 2-D
    x = torch.rand(16, 1, 8, 8)
    changed = changed_networks(model, lambda: ssaae.reconstruction_update(model, optimizers["reconstruction"], x, x))
    assert changed == {"encoder", "decoder", "cluster_heads"}
    heads = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    # pairs (0,1): 4 - 1 = 3; (0,2) and (1,2) are farther than eta = 4: 0
    assert ssaae.head_distance_cost(heads).item() == pytest.approx(3.0)


def test_losses_fall_on_tiny_data():
    data = common.load_dataset("digits")
    x = data.x_train[:256]
    index = common.labelled_subset(data.y_train, 50, 10, seed=0)
    labelled = ssaae.labelled_batches(data.x_train[index], data.y_train[index], 10, 32)
    model, optimizers = tiny_model()
    history = [ssaae.train_step(model, optimizers, x[i:i + 32], labelled, 0.3) for _ in range(30)
               for i in range(0, 256, 32)]
    first, last = history[:16], history[-16:]
    for key in ("reconstruction", "cross_entropy"):
        assert sum(h[key] for h in last) < 0.8 * sum(h[key] for h in first), key
    assert 0.3 < sum(h["d_cat"] for h in last) / 16 < 2.5  # the categorical game neither collapsed nor ran away


# ---------------------------------------------------------------------------------------------
# The labelled images
# ---------------------------------------------------------------------------------------------


def test_labelled_subset_is_balanced_reproducible_and_differs_by_seed():
    y = torch.arange(1000) % 10
    index = common.labelled_subset(y, 100, 10, seed=3)
    assert len(index.unique()) == 100 and torch.equal(torch.bincount(y[index]), torch.full((10,), 10))
    assert torch.equal(y[index], torch.arange(10).repeat_interleave(10))  # grouped by class
    assert torch.equal(index, common.labelled_subset(y, 100, 10, seed=3))
    assert not torch.equal(index, common.labelled_subset(y, 100, 10, seed=4))


def test_labelled_batches_are_balanced_and_only_from_the_labelled_images():
    torch.manual_seed(0)
    y = torch.arange(10).repeat_interleave(5)  # 5 labelled images of each class, grouped
    x = torch.arange(50.0).view(50, 1, 1, 1)  # each image's value is its position
    batches = ssaae.labelled_batches(x, y, 10, 32)
    for _ in range(20):
        xb, yb = next(batches)
        assert torch.equal(torch.bincount(yb, minlength=10), torch.full((10,), 3))  # 32 // 10 of each class
        assert torch.equal(y[xb.flatten().long()], yb)  # every image is a labelled one, with its own label


def npz(path, y_train, y_val, y_test, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (120, 6, 6), dtype=np.uint8), y_train=y_train,
             x_val=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), y_val=y_val,
             x_test=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), y_test=y_test)


def test_training_sees_no_label_but_the_n_labelled_ones(tmp_path, monkeypatch):
    """Two datasets that differ only in the labels training must not see (the unlabelled
    training images', the validation and the test labels) train to the same weights. (Which
    images are labelled is drawn from the training labels, as a balanced set must be; here it
    is fixed, so that only the use of the labels is under test.)"""
    y_train = np.arange(120) % 4
    npz(tmp_path / "a.npz", y_train, np.arange(20) % 4, np.arange(20) % 4)
    index = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])  # 2 of each class, grouped by class
    monkeypatch.setattr(common, "labelled_subset", lambda *args: index)
    monkeypatch.setitem(ssaae.SEMI_SUPERVISED, "mnist", {**ssaae.SEMI_SUPERVISED["mnist"],  # small and fast
                                                          "hidden": [16, 16], "discriminator_hidden": [16]})
    shuffled = np.random.default_rng(1).permutation(y_train)
    shuffled[index.numpy()] = y_train[index.numpy()]  # the 8 labelled images keep their labels, others change
    assert (shuffled != y_train).mean() > 0.5
    npz(tmp_path / "b.npz", shuffled, (np.arange(20) + 1) % 4, (np.arange(20) + 2) % 4)
    for name in ("a", "b"):
        assert cli(["--dataset", str(tmp_path / f"{name}.npz"), "--labels", "8", "--epochs", "2", "--batch-size",
                    "20", "--out", str(tmp_path / name)]) == 0
    a, b = weights(tmp_path / "a/checkpoint.pt"), weights(tmp_path / "b/checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# The paper's cluster error (eval.py)
# ---------------------------------------------------------------------------------------------


def test_cluster_error_takes_the_label_of_the_most_confident_validation_image():
    # 3 clusters. Cluster 0's most confident validation image is a 7, cluster 1's a 2, cluster 2's
    # a 2, although most validation images in cluster 2 are 5s: the paper's rule says 2.
    p_val = torch.tensor([[0.9, 0.05, 0.05],   # 7
                          [0.6, 0.2, 0.2],     # 1
                          [0.1, 0.8, 0.1],     # 2
                          [0.1, 0.1, 0.95],    # 2
                          [0.1, 0.1, 0.8],     # 5
                          [0.1, 0.1, 0.8]])    # 5
    y_val = torch.tensor([7, 1, 2, 2, 5, 5])
    p_test = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    y_test = torch.tensor([7, 2, 2, 5])  # the rule labels them 7, 2, 2, 2: one wrong
    assert 1 - evaluation.cluster_correct(p_val, y_val, p_test, y_test).mean() == pytest.approx(0.25)
    # Majority voting gives cluster 2 the label 5 (two 5s against one 2) and cluster 0 a tie of 7
    # and 1, which mode() breaks towards the smaller label: 1, 2, 5, 5 -> two wrong.
    assert 1 - evaluation.majority_cluster_correct(p_val, y_val, p_test, y_test).mean() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# The command line, resume, bad input, eval.py
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Two-epoch digits runs: semi-supervised (100 labels) and Section 7 clustering in 2-D."""
    root = tmp_path_factory.mktemp("ssaae")
    assert cli(["--epochs", "2", "--hidden", "64", "--out", str(root / "semi")]) == 0
    assert cli(["--epochs", "2", "--hidden", "64", "--labels", "0", "--reduce-dim", "2", "--clusters", "5",
                "--out", str(root / "reduce")]) == 0
    return root


def test_cli_writes_the_run_folder(digits_runs):
    for run in ("semi", "reduce"):
        for name in ("config.json", "checkpoint.pt", "log.csv", "losses.png", "samples.png", "clusters.png",
                     "reconstructions.png", "samples/epoch_002.png"):
            assert (digits_runs / run / name).is_file(), (run, name)
    assert (digits_runs / "reduce/code_space.png").is_file()
    config = json.loads((digits_runs / "semi/config.json").read_text())
    assert (config["labels"], config["clusters"], config["style_dim"], config["latent_dim"]) == (100, 10, 10, 20)
    log = (digits_runs / "semi/log.csv").read_text().splitlines()[0].split(",")
    assert {"reconstruction", "d_cat", "d_gauss", "encoder_adversarial", "cross_entropy"} <= set(log)
    reduce = json.loads((digits_runs / "reduce/config.json").read_text())
    assert (reduce["labels"], reduce["clusters"], reduce["style_dim"], reduce["latent_dim"]) == (0, 5, 2, 2)
    assert reduce["batch_norm"] and reduce["input_dropout"] == 0.2 and not config["batch_norm"]  # Section 6's encoder
    assert reduce["discriminator_noise"] == 0.3 and config["discriminator_noise"] == 0  # clustering only
    assert "cross_entropy" not in (digits_runs / "reduce/log.csv").read_text()  # Section 6: no phase (3)


def test_resume_equals_an_uninterrupted_run(tmp_path, digits_runs):
    assert cli(["--epochs", "1", "--hidden", "64", "--out", str(tmp_path)]) == 0
    assert cli(["--epochs", "2", "--out", str(tmp_path), "--resume"]) == 0
    straight, resumed = weights(digits_runs / "semi/checkpoint.pt"), weights(tmp_path / "checkpoint.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_input_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "unlabelled.npz", x_train=rng.integers(0, 256, (50, 6, 6), dtype=np.uint8),
             y_train=np.full(50, -1), x_test=rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), y_test=np.full(10, -1))
    cases = {
        ("--labels", "5000"): "more than the 1257 training images",
        ("--labels", "15"): "multiple of the 10 classes",
        ("--labels", "-1"): "--labels",
        ("--clusters", "1"): "at least 2",
        ("--clusters", "12"): "--clusters must be 10",
        ("--latent-dim", "4"): "--style-dim",
        ("--reduce-dim", "2", "--style-dim", "3"): "drop --style-dim",
        ("--dataset", str(tmp_path / "unlabelled.npz"), "--batch-size", "8"): "use --labels 0",
        ("--dataset", "omniglot"): "no settings for omniglot",
    }
    for argv, message in cases.items():
        assert cli(["--epochs", "1", "--out", str(tmp_path / "run"), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, (argv, err)
    # Clustering needs no labels: the unlabelled dataset trains with --labels 0.
    assert cli(["--epochs", "1", "--labels", "0", "--batch-size", "8", "--hidden", "16",
                "--dataset", str(tmp_path / "unlabelled.npz"), "--out", str(tmp_path / "clusters")]) == 0


def test_eval_reports_the_papers_measures_and_the_baselines(digits_runs, monkeypatch, capsys):
    monkeypatch.setattr(evaluation, "NN_BASELINE_STEPS", 50)
    assert run_script(evaluation.main, ["classification", str(digits_runs / "semi"), str(digits_runs / "reduce")]) == 0
    out = capsys.readouterr().out
    semi = json.loads((digits_runs / "semi/eval.json").read_text())["classification"]
    for key in ("semi_supervised_error", "nn_baseline_error", "svm_pixels_error", "svm_rbf"):
        assert 0 <= semi[key] <= 1, key
    assert semi["labelled_images"] == 100 and "cluster_error" not in semi
    assert any("[q(y|x), z]" in note for note in semi["notes"])
    reduce = json.loads((digits_runs / "reduce/eval.json").read_text())["classification"]
    assert 0 <= reduce["cluster_error"] <= 1 and 0 <= reduce["cluster_error_majority"] <= 1
    right = results.unpack_bits(reduce["cluster_correct"])  # per test image, for eval.py compare
    assert len(right) == reduce["test_images"] and reduce["cluster_error"] == pytest.approx(1 - right.mean())
    assert 1 <= reduce["clusters_used"] <= 5
    assert "semi_supervised_error" not in reduce and reduce["code_dims"] == 2
    assert "the paper's rule" in out and "q(y|x) error" in out  # the table and the comparison table


# ---------------------------------------------------------------------------------------------
# The public re-implementation's clustering settings (musyoku's Chainer AAE), each a flag
# ---------------------------------------------------------------------------------------------


def test_gradient_clipping_bounds_each_network_by_itself():
    model, _ = tiny_model()
    x = torch.rand(16, 1, 8, 8)
    for max_norm, expected in ((0.0, None), (1e-3, 1e-3)):
        model.zero_grad()
        (1e3 * ssaae.common.reconstruction_loss(model.decoder.logits(model.encode(x)), x)).backward()
        before = {name: torch.nn.utils.get_total_norm([p.grad for p in getattr(model, name).parameters()])
                  for name in ("encoder", "decoder")}
        assert min(before.values()) > 1e-2  # far above the bound, so that clipping has work to do
        ssaae.clip_gradients(max_norm, model.encoder, model.decoder)
        for name, norm in before.items():
            after = torch.nn.utils.get_total_norm([p.grad for p in getattr(model, name).parameters()])
            # Each network is scaled to the bound on its own (not the two together), or left alone at 0.
            torch.testing.assert_close(after, torch.tensor(expected) if expected else norm)


def test_musyokus_settings_reach_the_networks_and_optimisers(tmp_path):
    argv = ["--labels", "0", "--epochs", "1", "--hidden", "64", "--no-batch-norm", "--input-dropout", "0",
            "--init", "normal", "--lr", "1e-4", "--adversarial-lr", "1e-4", "--beta1", "0.1", "--grad-clip", "5"]
    assert cli([*argv, "--out", str(tmp_path / "musyoku")]) == 0
    config = json.loads((tmp_path / "musyoku/config.json").read_text())
    assert (config["batch_norm"], config["input_dropout"], config["init"], config["beta1"], config["grad_clip"]) == \
        (False, 0.0, "normal", 0.1, 5.0)
    model = ssaae.build_model(config)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert {g["betas"] for o in ssaae.make_optimizers(model, 1e-4, 1e-4, config["beta1"]).values()
            for g in o.param_groups} == {(0.1, 0.999)}
    torch.manual_seed(0)
    weights = torch.cat([m.weight.flatten() for m in ssaae.build_model(config).modules()
                         if isinstance(m, torch.nn.Linear)])
    assert abs(weights.std().item() - 0.01) < 1e-3 and abs(weights.mean().item()) < 1e-3  # N(0, 0.01^2)
    default = ssaae.build_model({**config, "init": "glorot", "batch_norm": True})
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in default.modules())


def test_a_clustering_run_from_before_the_flags_resumes_with_its_settings(tmp_path):
    out = tmp_path / "old"
    assert cli(["--labels", "0", "--epochs", "1", "--hidden", "32", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    for key in ("init", "beta1", "grad_clip"):
        del config[key]
    (out / "config.json").write_text(json.dumps(config))
    assert cli(["--resume", "--epochs", "2", "--out", str(out)]) == 0
    resumed = json.loads((out / "config.json").read_text())
    assert (resumed["init"], resumed["beta1"], resumed["grad_clip"]) == ("glorot", 0.9, 0.0)


@pytest.mark.parametrize("argv, message", [(("--beta1", "1"), "--beta1"), (("--input-dropout", "-0.1"), "--input-dropout"),
                                           (("--grad-clip", "-5"), "--grad-clip"), (("--init", "zeros"), "--init")])
def test_the_new_flags_refuse_bad_values_in_one_line(tmp_path, capsys, argv, message):
    assert cli(["--labels", "0", "--epochs", "1", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_2d_reduction_of_points_draws_its_code_space_over_the_prior(tmp_path):
    """--reduce-dim 2 on points: toy.py draws the codes over samples of the code's prior, y W_C + z."""
    assert cli(["--dataset", "toy25", "--labels", "0", "--reduce-dim", "2", "--epochs", "1", "--hidden", "16",
                "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run/code_space.png").is_file()
    model, _ = tiny_model(reduce_dim=2, clusters=4)
    torch.manual_seed(0)
    codes = model.sample_prior(4000)
    assert codes.shape == (4000, 2)
    nearest = torch.cdist(codes, model.cluster_heads.detach()).argmin(1)
    assert len(nearest.unique()) == 4  # a Gaussian around each head
