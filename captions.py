"""Sentences for text_to_image.py (the learned-prior paper's Section V) on data every machine has,
their 200-D embeddings without a download, the embeddings a user brings, and whether generated
images say what their sentence says.

The paper trains on Flowers-102 with sentence embeddings from a pre-trained char-CNN-RNN; neither
can be downloaded here. So (ours, not the paper's):
- captions: each digit gets SENTENCES_PER_IMAGE sentences made from what its pixels show, its
  class and three attributes measured on it (stroke thickness, slant, width; `measure`), each
  binned into thirds within its class, in varied wordings ("a bold 7, slanted to the right").
  One combination of words never occurs in training (HELD_OUT: "thin" with "eight"), as the
  paper's green and black flowers are in no image of its data.
- the text encoder: TF-IDF over words and character n-grams, then a truncated SVD to the paper's
  200 dimensions (scikit-learn), fitted on the training sentences before the model trains, as the
  paper's encoder is pre-trained. Deterministic: the same sentences give the same encoder.
- brought embeddings: a .npz with x_train, y_train, x_test, y_test and sentences_<split> (N x k
  strings), embeddings_<split> (N x k x D floats); `python captions.py convert` writes one from
  the char-CNN-RNN files that the public text-to-image code distributes for Flowers-102 and CUB.
- the agreement measure: `python captions.py agreement RUN...` (see `agreement`), and `python
  captions.py compare RUN... --against RUN...`, its shares paired by seed.

    python captions.py convert --embeddings flowers/train --text flowers/text_c10 --images jpg \\
        --test-embeddings flowers/test --image-size 32 --out flowers32.npz
    python captions.py agreement runs/text_to_image-npz-mnist10k
"""

import argparse
import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.sparse import hstack
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

import common
import machinery

EMBEDDING_DIM = 200  # Section V: "the sentence's embedding (which is a 200-D vector)"
SENTENCES_PER_IMAGE = 5  # ours (Flowers-102 and CUB have 10 per image)
CAPTION_SEED = 0  # every run sees the same sentences, whatever its --seed
ATTRIBUTES = ("thickness", "slant", "width")
HELD_OUT = {"class": 8, "thickness": 0}  # "thin" never beside "eight" in training
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Each attribute's three bins (lowest third, middle, highest third of its class) as an adjective
# before the digit or as a phrase after it.
ADJECTIVES = {"thickness": (("thin", "light", "fine"), ("regular", "medium-weight"), ("thick", "bold", "heavy")),
              "slant": (("left-leaning", "backward-slanted"), ("upright", "straight"),
                        ("right-leaning", "forward-slanted")),
              "width": (("narrow", "slim"), ("medium-width",), ("wide", "broad"))}
PHRASES = {"thickness": (("with thin strokes", "drawn with a fine pen"), ("with strokes of medium weight",),
                         ("with thick strokes", "drawn with a heavy pen")),
           "slant": (("leaning left", "slanted to the left", "tilted left"), ("standing upright", "not slanted"),
                     ("leaning right", "slanted to the right", "tilted right")),
           "width": (("narrow in shape", "squeezed narrow"), ("of ordinary width",), ("wide in shape", "stretched wide"))}
OPENINGS = ("a", "this is a", "an image of a", "a handwritten", "here is a")


# ---------------------------------------------------------------------------------------------
# Attributes measured from pixels
# ---------------------------------------------------------------------------------------------


def measure(x):
    """(N, 3) float: stroke thickness, slant and width of images x (N x 1 x H x W in [0, 1]).
    thickness: 2 x ink area / boundary pixels (a stroke w pixels wide and L long: about w);
    slant: the shear -cov(column, row) / var(row) of the ink (> 0: the top leans right);
    width: the spread (sd) of the ink's columns once the slant is sheared out, over the height."""
    x = common.float_images(x).float()
    ink = (x > 0.5).float()
    boundary = ink * (F.max_pool2d(1 - ink, 3, 1, 1) > 0).float()  # ink with a blank neighbour
    thickness = 2 * ink.sum((1, 2, 3)) / boundary.sum((1, 2, 3)).clamp(min=1)
    height, width = x.shape[-2:]
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, -1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, -1)
    mass = x.sum((1, 2, 3)).clamp(min=1e-6).view(-1, 1, 1, 1)

    def mean(v):
        return (x * v).sum((1, 2, 3), keepdim=True) / mass

    r, c = rows - mean(rows), cols - mean(cols)
    slant = -mean(r * c) / mean(r * r).clamp(min=1e-6)
    spread = mean((c + slant * r) ** 2).sqrt() / height
    return torch.stack([thickness, slant.flatten(), spread.flatten()], 1)


def class_thresholds(values, y, num_classes):
    """(num_classes, 3 attributes, 2): each class's tertiles of each attribute (of the training images;
    of all of them for a class that has none)."""
    thirds = torch.tensor([1 / 3, 2 / 3])
    return torch.stack([(values[y == k] if (y == k).any() else values).quantile(thirds, dim=0).T
                        for k in range(num_classes)])


def bins(values, classes, thresholds):
    """(N, 3) in {0, 1, 2}: each attribute's third within the image's class."""
    t = thresholds[classes]
    return (values > t[..., 0]).long() + (values > t[..., 1]).long()


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def caption(rng, digit, attributes):
    """One sentence naming `digit` and the binned attributes given (a dict; None: not mentioned)."""
    def choice(options):
        return options[rng.integers(len(options))]

    noun = NUMBERS[digit] if rng.random() < 0.6 else str(digit)
    before, after = [], []
    for name in ATTRIBUTES:
        level = attributes.get(name)
        if level is None:
            continue
        if rng.random() < 0.5:
            before.append(choice(ADJECTIVES[name][level]))
        else:
            after.append(choice(PHRASES[name][level]))
    opening = choice(OPENINGS)
    if opening.split()[-1] == "a" and (before or [noun])[0][0] in "aeiou8":  # "an eight", "an 8"
        opening += "n"
    words = [opening, *before, noun]
    return " ".join(words) + (", " + " and ".join(after) if after else "")


def captions_for(labels, levels, rng, mention=2 / 3, held_out=True):
    """SENTENCES_PER_IMAGE sentences per image and what each says: (N x k strings, N x k x 4 ints:
    class, then each attribute's bin or -1 where not mentioned). Each attribute is mentioned with
    probability `mention`; with held_out, "thin" is never said of an eight."""
    sentences, said = [], []
    for digit, level in zip(labels.tolist(), levels.tolist()):
        row, row_said = [], []
        for _ in range(SENTENCES_PER_IMAGE):
            attributes = {name: lv if rng.random() < mention else None for name, lv in zip(ATTRIBUTES, level)}
            if held_out and is_held_out(digit, attributes):
                attributes["thickness"] = None
            row.append(caption(rng, digit, attributes))
            row_said.append([digit] + [-1 if attributes[name] is None else attributes[name] for name in ATTRIBUTES])
        sentences.append(row)
        said.append(row_said)
    return np.array(sentences), np.array(said)


def is_held_out(digit, attributes):
    return digit == HELD_OUT["class"] and attributes.get("thickness") == HELD_OUT["thickness"]


# ---------------------------------------------------------------------------------------------
# The text encoder: TF-IDF of words and character n-grams -> truncated SVD to 200-D
# ---------------------------------------------------------------------------------------------


class SentenceEncoder:
    """Fitted once on the training sentences (sorted and deduplicated, so their order does not
    matter) and fixed after, as the paper's pre-trained encoder is. Embeddings are scaled to unit
    mean square over the training sentences."""

    def __init__(self, sentences, dim=EMBEDDING_DIM):
        distinct = sorted(set(np.asarray(sentences).ravel().tolist()))
        self.words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"[\w-]+", sublinear_tf=True)
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        features = hstack([self.words.fit_transform(distinct), self.chars.fit_transform(distinct)]).tocsr()
        if min(features[::4].shape) <= dim:
            raise machinery.CLIError(f"{len(distinct)} distinct training sentences with {features.shape[1]} word and "
                                     f"character features are too few for a {dim}-D embedding: give more sentences")
        # fitted on every fourth distinct sentence, two power iterations: a fifth of the default's time
        self.svd = TruncatedSVD(dim, n_iter=2, random_state=0).fit(features[::4])
        self.scale = 1.0
        self.scale = 1 / float(np.sqrt((self(distinct) ** 2).mean()))

    def __call__(self, sentences):
        """float32 array (..., 200) of an array of sentences of any shape."""
        sentences = np.asarray(sentences)
        flat = sentences.ravel().tolist()
        features = hstack([self.words.transform(flat), self.chars.transform(flat)]).tocsr()
        embedded = self.svd.transform(features) * self.scale
        return embedded.astype(np.float32).reshape(*sentences.shape, -1)


# ---------------------------------------------------------------------------------------------
# A dataset's sentences and embeddings: made here (digits, MNIST), or brought in its .npz
# ---------------------------------------------------------------------------------------------


def brought(data):
    """Whether the dataset's .npz brings its own sentences and embeddings."""
    return data.name.endswith(".npz") and "embeddings_train" in np.load(data.name, allow_pickle=False).files


def described(data, embedding_dim=EMBEDDING_DIM):
    """The training images' sentences, their embeddings (N x k x D tensors) and what the sentences
    say (N x k x 4, or None for brought ones), and the encoder of new sentences (None: brought)."""
    if brought(data):
        return brought_sentences(data, embedding_dim) + (None, None)
    if data.num_classes != 10 or data.x_train.shape[1] != 1:
        raise machinery.CLIError(f"{data.name} is not a dataset of grey digits, which the captions describe: use "
                                 "digits, mnist or mnist10k.npz, or a .npz with sentences_train and embeddings_train")
    thresholds = class_thresholds(measure(data.x_train), data.y_train, 10)
    levels = bins(measure(data.x_train), data.y_train, thresholds)
    sentences, said = captions_for(data.y_train, levels, np.random.default_rng(CAPTION_SEED))
    encoder = SentenceEncoder(sentences, embedding_dim)
    return sentences, torch.from_numpy(encoder(sentences)), torch.from_numpy(said), encoder


def brought_sentences(data, embedding_dim):
    """sentences_train and embeddings_train of the dataset's .npz, checked against its images."""
    arrays = np.load(data.name, allow_pickle=False)
    if "sentences_train" not in arrays.files:
        raise machinery.CLIError(f"{data.name} has embeddings_train but no sentences_train: save both (N x k)")
    sentences, embeddings = arrays["sentences_train"], arrays["embeddings_train"]
    n_file = len(arrays["x_train"])
    if sentences.ndim != 2 or embeddings.shape[:2] != sentences.shape or len(sentences) != n_file:
        raise machinery.CLIError(f"{data.name}: sentences_train {sentences.shape} and embeddings_train "
                                 f"{embeddings.shape} do not match x_train's {n_file} images: save N x k sentences "
                                 "and N x k x D embeddings, row i describing image i")
    if embeddings.shape[2] != embedding_dim:
        raise machinery.CLIError(f"{data.name}: embeddings_train are {embeddings.shape[2]}-D, the model's are "
                                 f"{embedding_dim}-D: pass --embedding-dim {embeddings.shape[2]}")
    n = len(data.x_train)  # without the validation images split off the end of x_train
    return sentences[:n], torch.from_numpy(embeddings[:n].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# The converter: char-CNN-RNN embeddings as the public text-to-image code distributes them
# ---------------------------------------------------------------------------------------------
# The layout (Reed et al.'s char-CNN-RNN embeddings, as StackGAN and most PyTorch text-to-image
# code distribute them for Flowers-102 and CUB): <split>/char-CNN-RNN-embeddings.pickle, N x 10 x
# 1024 floats; <split>/filenames.pickle, N names such as "class_00001/image_06734"; the ten
# sentences of each in text_c10/<name>.txt; its image in <images>/<last part of name>.jpg. The
# pickles are Python 2's: read with latin1, and only numpy arrays and lists are let through.


class ArraysOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("_codecs", "encode")}  # how Python 3 writes an array's bytes in a protocol-2 pickle

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not an array")
        return super().find_class(module, name)


def read_pickle(path):
    try:
        return ArraysOnly(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except OSError as error:
        raise machinery.CLIError(f"cannot read {path} ({machinery.first_line(error, 80)})") from None
    except Exception as error:
        raise machinery.CLIError(f"{path} is not a pickle of arrays and names ({machinery.first_line(error, 80)})") \
            from None


def read_split(folder, text_dir, image_dir, image_size):
    """(images N x 3 x S x S uint8, class labels, sentences N x k, embeddings N x k x D) of one split."""
    embeddings = np.asarray(read_pickle(Path(folder) / "char-CNN-RNN-embeddings.pickle"), dtype=np.float32)
    names = [str(name) for name in read_pickle(Path(folder) / "filenames.pickle")]
    if embeddings.ndim != 3 or len(embeddings) != len(names):
        raise machinery.CLIError(f"{folder}: {embeddings.shape} embeddings for {len(names)} file names; expected "
                                 "N x 10 x D for N names")
    images, sentences = [], []
    for name in names:
        text = Path(text_dir) / f"{name}.txt"
        if not text.is_file():
            raise machinery.CLIError(f"no sentences for {name}: {text} is missing (give --text the text_c10 folder)")
        lines = [line.strip() for line in text.read_text().splitlines() if line.strip()]
        if len(lines) < embeddings.shape[1]:
            raise machinery.CLIError(f"{text} has {len(lines)} sentences for {embeddings.shape[1]} embeddings")
        sentences.append(lines[:embeddings.shape[1]])
        path = Path(image_dir) / f"{Path(name).name}.jpg"
        try:
            image = Image.open(path).convert("RGB").resize((image_size, image_size), Image.BICUBIC)
        except OSError as error:
            raise machinery.CLIError(f"cannot read the image {path} ({machinery.first_line(error, 60)})") from None
        images.append(np.asarray(image).transpose(2, 0, 1))
    classes = sorted({Path(name).parts[0] for name in names})
    labels = np.array([classes.index(Path(name).parts[0]) for name in names])
    return np.stack(images), labels, np.array(sentences), embeddings


def convert(args):
    train = read_split(args.embeddings, args.text, args.images, args.image_size)
    test = read_split(args.test_embeddings, args.text, args.images, args.image_size) if args.test_embeddings \
        else tuple(a[-max(1, len(a) // 10):] for a in train)
    arrays = {f"{key}_{split}": value for split, part in (("train", train), ("test", test))
              for key, value in zip(("x", "y", "sentences", "embeddings"), part)}
    with machinery.atomic_path(Path(args.out)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    print(f"wrote {args.out}: {len(train[0])} training and {len(test[0])} test images, "
          f"{train[3].shape[1]} sentences of {train[3].shape[2]}-D each")


# ---------------------------------------------------------------------------------------------
# The agreement measure: does an image say what its sentence says?
# ---------------------------------------------------------------------------------------------
# A generated image agrees with its sentence when eval.py's classifier of the dataset (the one its
# FID is measured on) reads the sentence's class and each attribute the sentence names, measured on
# the image, falls in the sentence's third of that class (thirds of the training images; chance:
# 1/3). The sentences: one per test image, each attribute named with the training sentences'
# probability (2/3); the held-out ones: those of the test's thin eights, their thinness always
# named, a combination no training sentence has. A second set names every attribute.


def test_sentences(data, thresholds, mention=2 / 3):
    """(sentences, what each says: N x 4, -1 where an attribute is not named) for the test images."""
    levels = bins(measure(data.x_test), data.y_test, thresholds)
    rng, sentences, said = np.random.default_rng(CAPTION_SEED + 1), [], []
    for digit, level in zip(data.y_test.tolist(), levels.tolist()):
        attributes = {name: lv if rng.random() < mention else None for name, lv in zip(ATTRIBUTES, level)}
        if digit == HELD_OUT["class"] and level[0] == HELD_OUT["thickness"]:
            attributes["thickness"] = level[0]
        sentences.append(caption(rng, digit, attributes))
        said.append([digit] + [-1 if attributes[name] is None else attributes[name] for name in ATTRIBUTES])
    return np.array(sentences), torch.tensor(said)


def agrees(classifier, images, said, thresholds):
    """(N, 4) bools: the class read by the classifier and each measured attribute agree with `said`
    (an attribute not named agrees)."""
    with torch.no_grad():
        predicted = torch.cat([classifier(common.float_images(images[i:i + 500])).argmax(1)
                               for i in range(0, len(images), 500)])
    levels = bins(measure(images), said[:, 0], thresholds)
    return torch.cat([(predicted == said[:, 0])[:, None], (levels == said[:, 1:]) | (said[:, 1:] < 0)], 1)


def shares(ok, said):
    """Shares of agreeing samples: the class, each attribute (of the samples whose sentence names
    it), the class with the thickness (the held-out pair's words), and everything named at once."""
    named = said[:, 1:] >= 0
    return {"class": float(ok[:, 0].float().mean()),
            **{name: float(ok[named[:, i], i + 1].float().mean()) for i, name in enumerate(ATTRIBUTES)},
            "class_and_thickness": float(ok[:, :2].all(1).float().mean()), "all": float(ok.all(1).float().mean())}


def class_by_words(sentences, class_ok):
    """The class's share for sentences of up to 4 words, 5-8 words, and 9 or more."""
    words = torch.tensor([len(sentence.split()) for sentence in sentences])
    groups = {"up to 4": words <= 4, "5-8": (words > 4) & (words <= 8), "9 or more": words > 8}
    return {name: float(class_ok[group].float().mean()) for name, group in groups.items() if group.any()}


def generate(run, s, per_sentence, seed=0):
    """per_sentence samples dec(CG(z, s)) for each condition s (sentence embeddings, or classes for a
    learned_prior_aae supervised run: given only the class), in that order, repeated."""
    torch.manual_seed(seed)
    model, out = run.model, []
    with torch.no_grad():
        for start in range(0, len(s), 100):
            condition = s[start:start + 100].repeat_interleave(per_sentence, 0)
            out.append(model.decode(model.prior_code(model.sample_noise(len(condition)), condition)))
    return torch.cat(out)


def agreement(run_dir, per_sentence=10, data_dir=None):
    """The agreement measure of one run of text_to_image.py or learned_prior_aae.py --setting
    supervised, stored in its eval.json under "agreement", with the FID of the same samples."""
    import eval as evaluation  # eval.py's classifier, FID and eval.json, loaded only here
    import feature_networks
    import results

    run = common.load_run(run_dir, "cpu")
    results.read_eval_json(run.path)  # a damaged eval.json stops us before the work, not after
    config = run.config
    text = config["model"] == "text_to_image"
    if not text and config.get("setting") != "supervised":
        raise machinery.CLIError(f"{run_dir} is a {config['model']} run: the agreement measure is for text_to_image "
                                 "runs and learned_prior_aae --setting supervised runs")
    data = evaluation.load_data(config, data_dir, {})
    if brought(data):
        raise machinery.CLIError(f"{run_dir} was trained on brought sentences: the agreement measure needs the "
                                 "digits' own captions (their attributes are measured from pixels)")
    thresholds = class_thresholds(measure(data.x_train), data.y_train, 10)
    embed = described(data, config["embedding_dim"])[3] if text else None
    network = feature_networks.classifier_network(data, data_dir or config["data_dir"], torch.device("cpu"))
    classifier, _ = feature_networks.read_classifier(
        *feature_networks.classifier_cache(data, data_dir or config["data_dir"]), data)
    classifier.eval()

    def samples_of(sentences, said):
        condition = torch.from_numpy(embed(sentences)) if text else said[:, 0]
        images = generate(run, condition, per_sentence)
        return images, agrees(classifier, images, said.repeat_interleave(per_sentence, 0), thresholds), \
            said.repeat_interleave(per_sentence, 0)

    sentences, said = test_sentences(data, thresholds)
    held_out = (said[:, 0] == HELD_OUT["class"]) & (said[:, 1] == HELD_OUT["thickness"])
    images, ok, said_each = samples_of(sentences, said)
    held = held_out.repeat_interleave(per_sentence, 0)
    every_sentence, every_said = test_sentences(data, thresholds, mention=1.0)
    _, every_ok, every_said_each = samples_of(every_sentence, every_said)
    fid, inception_score = network.metrics()
    for i in range(0, len(data.x_test), 100):
        fid.update(network.prepare(data.x_test[i:i + 100]), real=True)
    result = {"samples": len(images), "sentences": len(sentences), "held_out_sentences": int(held_out.sum()),
              "example": sentences[0], "held_out_example": sentences[held_out.nonzero()[0, 0]],
              **shares(ok, said_each), "held_out": shares(ok[held], said_each[held]),
              "every_attribute_named": shares(every_ok, every_said_each),
              "class_by_words": class_by_words(sentences, ok[:, 0].view(len(sentences), per_sentence)),
              "real": shares(agrees(classifier, data.x_test, said, thresholds), said),
              "conditioned_on": "sentence" if text else "class only", "epoch": run.epoch,
              **evaluation.quality_scores(images, fid, inception_score, network, torch.device("cpu"))}
    results.merge_results(run.path, "agreement", result)
    print(f"{run_dir}: class {result['class']:.1%}, thickness {result['thickness']:.1%}, slant {result['slant']:.1%}, "
          f"width {result['width']:.1%}, all {result['all']:.1%}; held out ({result['held_out_sentences']} sentences) "
          f"class {result['held_out']['class']:.1%}, thin {result['held_out']['thickness']:.1%}; FID {result['fid']:.1f}")
    return result


def compare(a_dirs, b_dirs):
    """Each share of the agreement measure (and FID), runs a against runs b paired by seed:
    the mean difference and its 95 % paired t interval (compare.py's)."""
    import compare as statistics
    import results

    def stored(dirs):
        runs = sorted((results.read_evaluated(d) for d in dirs), key=lambda run: run.config["seed"])
        missing = [str(run.path) for run in runs if "agreement" not in run.results]
        if missing:
            raise machinery.CLIError(f"{missing[0]} has no agreement measure: python captions.py agreement {missing[0]}")
        return runs

    a, b = stored(a_dirs), stored(b_dirs)
    if [run.config["seed"] for run in a] != [run.config["seed"] for run in b]:
        raise machinery.CLIError("the two groups need runs of the same seeds, to pair them seed by seed")
    rows = []
    for key in ("class", *ATTRIBUTES, "all", "fid"):
        x, y = ([run.results["agreement"][key] * (1 if key == "fid" else 100) for run in runs] for runs in (a, b))
        test = statistics.paired_t(x, y)
        interval = "" if test is None else f", 95 % {test[1][0]:+.1f} to {test[1][1]:+.1f}"
        rows.append(f"{key}: {np.mean(x):.1f} against {np.mean(y):.1f}, {np.mean(x) - np.mean(y):+.1f}{interval}"
                    + ("" if key == "fid" else " points"))
    print(f"{len(a)} pairs by seed, paired t:\n" + "\n".join(rows))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="captions.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure_parser = commands.add_parser("agreement", help="the agreement measure of runs, into their eval.json")
    measure_parser.add_argument("runs", nargs="+")
    measure_parser.add_argument("--samples-per-sentence", type=machinery.positive_int, default=10)
    measure_parser.add_argument("--data-dir", help="where the run's dataset is (default: the run's)")
    pairs = commands.add_parser("compare", help="the agreement of runs against other runs, paired by seed")
    pairs.add_argument("runs", nargs="+")
    pairs.add_argument("--against", nargs="+", required=True)
    converter = commands.add_parser("convert", help="char-CNN-RNN files (Flowers-102, CUB) -> a .npz for "
                                                    "text_to_image.py --dataset")
    converter.add_argument("--embeddings", required=True,
                           help="the training split's folder: char-CNN-RNN-embeddings.pickle, filenames.pickle")
    converter.add_argument("--test-embeddings", help="the test split's folder (default: the last tenth of training)")
    converter.add_argument("--text", required=True, help="the text_c10 folder: <name>.txt, ten sentences each")
    converter.add_argument("--images", required=True, help="the folder of the images, <name>.jpg")
    converter.add_argument("--image-size", type=machinery.positive_int, default=32)
    converter.add_argument("--out", required=True, help="the .npz to write")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "convert":
        convert(args)
    elif args.command == "compare":
        compare(args.runs, args.against)
    else:
        for run_dir in args.runs:
            agreement(run_dir, args.samples_per_sentence, args.data_dir)


if __name__ == "__main__":
    machinery.cli(main)
