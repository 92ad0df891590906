"""One thread per test process: the tests' networks are tiny, and two OpenMP threads that
wait for each other on a busy machine make a step several times slower, not faster."""

import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"  # for the scripts the tests start as subprocesses
torch.set_num_threads(1)
