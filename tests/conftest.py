"""Every test: one thread (the tests' networks are tiny, and two OpenMP threads that wait for
each other on a busy machine make a step several times slower, not faster), and no network."""

import os
import urllib.error
import urllib.request

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"  # for the scripts the tests start as subprocesses
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download (torchvision's included) fails at once, as on a machine without internet."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
