"""Text-to-image (the learned-prior paper's Section V): the captions say what the pixels show,
the sentence encoder is fixed and 200-D, brought embeddings and the char-CNN-RNN converter, where
the sentence goes in the model, losses on tiny data, resume, the command line end to end with the
agreement measure, and bad input."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import captions
import common
import machinery
import text_to_image as t2i
from helpers import run_script

SMALL = dict(hidden=(32, 32), image_discriminator_hidden=32, code_discriminator_hidden=(32, 32))


def cli(argv):
    return run_script(t2i.main, argv)


def digits_npz(path, n_train=300, n_test=60, **extra):
    """A .npz of the first real 8x8 digits (uint8), small enough for a quick encoder."""
    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8) * 255 / 16).round().astype(np.uint8)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:n_train + n_test],
             y_test=y[n_train:n_train + n_test], **extra)
    return str(path)


# ---------------------------------------------------------------------------------------------
# Captions: attributes measured from pixels
# ---------------------------------------------------------------------------------------------


def stroke(width, shear=0.0, size=28, length=16, gap=0):
    """A vertical stroke `width` pixels wide (two, `gap` apart, when gap > 0), sheared so that
    its top moves right by shear x its height."""
    image, top = torch.zeros(1, size, size), (size - length) // 2
    for row in range(top, top + length):
        centre = size // 2 + round(shear * (top + length / 2 - row))
        for c in ([centre] if not gap else [centre - gap // 2, centre + gap // 2]):
            image[0, row, c - width // 2:c - width // 2 + width] = 1
    return image


def test_measured_attributes_of_hand_made_strokes():
    thin, thick = captions.measure(torch.stack([stroke(2), stroke(5)]))[:, 0]
    assert thin < 2.6 and thick > 4 and thick > thin
    left, upright, right = captions.measure(torch.stack([stroke(3, -0.4), stroke(3), stroke(3, 0.4)]))[:, 1]
    assert left < -0.3 and abs(upright) < 0.05 and right > 0.3  # > 0: the top leans right
    narrow, wide = captions.measure(torch.stack([stroke(3), stroke(3, gap=12)]))[:, 2]
    assert wide > 3 * narrow


def said_words(sentence, name, level):
    return any(word in sentence for word in (*captions.ADJECTIVES[name][level], *captions.PHRASES[name][level]))


def test_captions_say_the_measured_thirds_of_hand_made_images():
    # per class: a thin, a medium and a thick stroke; then left, upright and right ones
    images = torch.stack([stroke(2), stroke(3), stroke(5), stroke(3, -0.4), stroke(3), stroke(3, 0.4)])
    labels = torch.tensor([1, 1, 1, 7, 7, 7])
    values = captions.measure(images)
    thresholds = captions.class_thresholds(values, labels, 10)
    levels = captions.bins(values, labels, thresholds)
    assert levels[:3, 0].tolist() == [0, 1, 2] and levels[3:, 1].tolist() == [0, 1, 2]
    sentences, said = captions.captions_for(labels, levels, np.random.default_rng(0), mention=1.0, held_out=False)
    assert sentences.shape == (6, captions.SENTENCES_PER_IMAGE) and said.shape == (6, captions.SENTENCES_PER_IMAGE, 4)
    for i in range(6):
        for sentence, what in zip(sentences[i], said[i]):
            assert what[0] == labels[i] and ("one" in sentence or "1" in sentence) == (labels[i] == 1)
            for a, name in enumerate(captions.ATTRIBUTES):
                assert said_words(sentence, name, int(levels[i, a])), (sentence, name)
                assert not any(said_words(sentence, name, other) for other in range(3) if other != levels[i, a])


def test_thin_is_never_said_of_an_eight_in_training():
    data = common.load_dataset("digits")
    sentences, embeddings, said, encoder = captions.described(data)
    eights = said[..., 0] == captions.HELD_OUT["class"]
    assert eights.any() and not (eights & (said[..., 1] == captions.HELD_OUT["thickness"])).any()
    thin_words = (*captions.ADJECTIVES["thickness"][0], *captions.PHRASES["thickness"][0])
    assert not any(w in s for s in sentences[eights.numpy()] for w in thin_words)
    # ... though the test's thin eights are described so, for the agreement measure
    thresholds = captions.class_thresholds(captions.measure(data.x_train), data.y_train, 10)
    test_sentences, test_said = captions.test_sentences(data, thresholds)
    held = (test_said[:, 0] == 8) & (test_said[:, 1] == 0)
    assert held.any() and all(any(w in s for w in thin_words) for s in test_sentences[held.numpy()])


# ---------------------------------------------------------------------------------------------
# The sentence encoder
# ---------------------------------------------------------------------------------------------


def test_the_encoder_is_deterministic_200_dimensional_and_ignores_the_order_of_its_sentences():
    data = common.load_dataset("digits")
    levels = captions.bins(captions.measure(data.x_train), data.y_train,
                           captions.class_thresholds(captions.measure(data.x_train), data.y_train, 10))
    sentences, _ = captions.captions_for(data.y_train[:600], levels[:600], np.random.default_rng(0))
    a = captions.SentenceEncoder(sentences)
    b = captions.SentenceEncoder(sentences[::-1])
    queries = ["a thin eight", "a bold seven, slanted to the right", "an unseen sentence"]
    assert a(queries).shape == (3, captions.EMBEDDING_DIM)
    np.testing.assert_array_equal(a(queries), b(queries))
    assert a(sentences).shape == (*sentences.shape, 200) and abs(float((a(sentences) ** 2).mean()) - 1) < 0.1
    far = np.linalg.norm(a(["a bold seven"]) - a(["a thin two"]))
    assert np.linalg.norm(a(["a bold seven"]) - a(["a heavy seven"])) < far  # words of one bin are near


# ---------------------------------------------------------------------------------------------
# The model: where the sentence goes, the updates, losses on tiny data
# ---------------------------------------------------------------------------------------------


def tiny_model(embedding_dim=12, **kwargs):
    torch.manual_seed(0)
    return t2i.TextToImageAAE((1, 8, 8), 6, 10, embedding_dim, **{**SMALL, **kwargs})


def test_the_sentence_goes_to_cg_d_c_and_d_i():
    model = tiny_model()
    assert model.code_generator.net[0].in_features == 10 + 12
    assert model.code_discriminator.net[0].in_features == 6 + 12  # Eq. 8, s for the label
    assert model.image_discriminator.hidden[1].in_features == 32 + 12 and model.classifier is None
    seen = []
    model.image_discriminator.register_forward_hook(lambda m, args, out: seen.append(m.sentences))
    x, s = torch.rand(16, 1, 8, 8), torch.randn(16, 12)
    t2i.train_step(model, t2i.lp.make_optimizers(model, 1e-3), x, s)
    assert seen and all(torch.equal(v, s) for v in seen)
    assert model.image_discriminator.sentences is None
    with pytest.raises(RuntimeError, match="sentences"):
        model.image_discriminator(x)


def test_losses_move_sensibly_on_tiny_data():
    data = common.load_dataset("digits")
    x = data.x_train[:256]
    s = torch.nn.functional.one_hot(data.y_train[:256], 12).float() + 0.1 * torch.randn(256, 12)
    model = t2i.TextToImageAAE((1, 8, 8), 16, 10, 12, **SMALL)
    optimizers = t2i.lp.make_optimizers(model, 1e-3)

    def pixel_error():
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model.decode(model.encode(x)), x).item()

    start, history = pixel_error(), []
    for _ in range(10):
        for i in range(0, 256, 32):
            history.append(t2i.train_step(model, optimizers, x[i:i + 32], s[i:i + 32]))
    assert pixel_error() < 0.7 * start

    def late(key):
        return sum(float(h[key]) for h in history[-20:]) / 20

    assert 0.3 < late("code_discriminator") < 2.5 and 0.3 < late("image_discriminator") < 3.5
    assert late("encoder_adversarial") < 5 and late("code_generator_adversarial") < 6


# ---------------------------------------------------------------------------------------------
# The command line: a run, its figures, resume, the agreement measure, brought embeddings
# ---------------------------------------------------------------------------------------------


def test_cli_trains_draws_the_figures_and_is_measured(tmp_path, capsys):
    path = digits_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    assert cli(["--dataset", path, "--epochs", "2", "--batch-size", "50", "--out", str(out), "--channels", "4"]) == 0
    for name in ("config.json", "checkpoint.pt", "log.csv", "figure14.png", "figure15.png", "reconstructions.png",
                 "samples/figure15_epoch_002.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["noise_dim"], config["embedding_dim"], config["latent_dim"]) == \
        ("text_to_image", 100, 200, 64)
    assert run_script(captions.main, ["agreement", str(out), "--samples-per-sentence", "2"]) == 0
    result = json.loads((out / "eval.json").read_text())["agreement"]
    assert result["samples"] == 2 * result["sentences"] == 120 and result["conditioned_on"] == "sentence"
    for key in ("class", "thickness", "slant", "width", "all"):
        assert 0 <= result[key] <= 1 and result["real"][key] >= 0
    assert result["real"]["thickness"] == 1 and result["all"] <= result["class"]  # real: said from its pixels
    assert result["fid"] > 0 and said_words(result["held_out_example"], "thickness", 0)
    capsys.readouterr()
    assert run_script(captions.main, ["compare", str(out), "--against", str(out)]) == 0
    assert "class: " in capsys.readouterr().out


def test_resume_equals_an_uninterrupted_run(tmp_path):
    path = digits_npz(tmp_path / "d.npz", n_train=250)
    argv = ["--dataset", path, "--batch-size", "50", "--channels", "4"]
    assert cli([*argv, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert cli([*argv, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert cli(["--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0

    def weights(run):
        return torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model_state"]

    straight, resumed = weights("straight"), weights("resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def flowers_layout(root, n=3, k=10, dim=16):
    """A tiny copy of the char-CNN-RNN files' layout: train/ with the two pickles (protocol 2, as
    Python 2 wrote them), text_c10/class_*/image_*.txt, and jpg/image_*.jpg."""
    rng = np.random.default_rng(0)
    names = [f"class_{1 + i % 2:05d}/image_{i:05d}" for i in range(n)]
    (root / "train").mkdir(parents=True)
    embeddings = rng.normal(size=(n, k, dim)).astype(np.float32)
    (root / "train/char-CNN-RNN-embeddings.pickle").write_bytes(pickle.dumps(embeddings, protocol=2))
    (root / "train/filenames.pickle").write_bytes(pickle.dumps(names, protocol=2))
    (root / "jpg").mkdir()
    for i, name in enumerate(names):
        (root / "text_c10" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "text_c10" / f"{name}.txt").write_text("".join(f"flower {i} sentence {j}\n" for j in range(k)))
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "jpg" / f"image_{i:05d}.jpg")
    return embeddings


def test_converter_reads_the_char_cnn_rnn_layout_and_the_model_trains_on_it(tmp_path, capsys):
    embeddings = flowers_layout(tmp_path)
    out = tmp_path / "flowers.npz"
    assert run_script(captions.main, ["convert", "--embeddings", str(tmp_path / "train"), "--text",
                                      str(tmp_path / "text_c10"), "--images", str(tmp_path / "jpg"),
                                      "--image-size", "8", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert f["x_train"].shape == (3, 3, 8, 8) and f["x_train"].dtype == np.uint8
        assert f["y_train"].tolist() == [0, 1, 0]
        assert f["sentences_train"].shape == (3, 10) and f["sentences_train"][2, 4] == "flower 2 sentence 4"
        np.testing.assert_array_equal(f["embeddings_train"], embeddings)
    run = tmp_path / "run"
    assert cli(["--dataset", str(out), "--embedding-dim", "16", "--epochs", "1", "--batch-size", "2",
                "--channels", "4", "--out", str(run)]) == 0
    assert (run / "figure14.png").is_file() and not (run / "figure15.png").exists()


def test_bad_input_is_one_line(tmp_path, capsys):
    good = dict(sentences_train=np.array([["a digit"] * 2] * 300), embeddings_train=np.zeros((300, 2, 200), "f4"))
    cases = {
        (digits_npz(tmp_path / "short.npz", sentences_train=good["sentences_train"][:100],
                    embeddings_train=good["embeddings_train"][:100]),): "do not match x_train",
        (digits_npz(tmp_path / "wide.npz", sentences_train=good["sentences_train"],
                    embeddings_train=np.zeros((300, 2, 50), "f4")),): "--embedding-dim 50",
        (digits_npz(tmp_path / "mute.npz", embeddings_train=good["embeddings_train"]),): "no sentences_train",
    }
    for (path,), message in cases.items():
        assert cli(["--dataset", path, "--epochs", "1", "--channels", "4", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()
    assert cli(["--channels", "4", "--out", str(tmp_path / "run")]) == 2
    assert "drop --channels" in capsys.readouterr().err
    flowers_layout(tmp_path / "evil")
    (tmp_path / "evil/train/filenames.pickle").write_bytes(pickle.dumps(machinery.CLIError("x"), protocol=2))
    assert run_script(captions.main, ["convert", "--embeddings", str(tmp_path / "evil/train"), "--text", "t",
                                      "--images", "i", "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a pickle of arrays" in err and len(err.splitlines()) == 1
    assert run_script(captions.main, ["agreement", str(tmp_path / "nothing")]) == 2
