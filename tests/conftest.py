"""Every test: one thread (the tests' networks are tiny, and two OpenMP threads that wait for
each other on a busy machine make a step several times slower, not faster), no network, its
own empty working folder (a script's default runs/ and data/ are never the user's), and a
short training of eval.py's quality classifier."""

import os
import urllib.error
import urllib.request

import pytest
import torch

import feature_networks

os.environ["OMP_NUM_THREADS"] = "1"  # for the scripts the tests start as subprocesses
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download (torchvision's, and torch.hub's of the Inception-v3 weights, included) fails
    at once, as on a machine without internet."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)  # torch.hub imported its own name for it


@pytest.fixture(autouse=True)
def own_working_folder(tmp_path, monkeypatch):
    """Run every test in an empty folder of its own: `python aae.py` run by the user before the
    tests (the README's quick start) must not meet a test's default runs/aae-digits, nor a test
    write into the user's runs/ or data/."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def short_classifier_training(monkeypatch):
    """eval.py's quality study (and `all`, which includes it) trains its classifier a few hundred
    steps: the tests check what the classifier is for, not how good it gets."""
    monkeypatch.setattr(feature_networks, "CLASSIFIER_STEPS", 200)
