"""The benchmark script runs end to end on tiny networks (its timings are not checked: they
depend on the machine and its load), and what it checks besides speed holds."""

import importlib.util
from pathlib import Path

import pytest
import torch

import machinery

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_tiny_benchmark_prints_the_table_and_its_checks_hold(capsys):
    benchmark = load_benchmark()
    threads = torch.get_num_threads()
    results = benchmark.main(["--tiny"])
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    for row in ("| speed-up over the usual loop |", "| Parzen speed-up", "| Omniglot iDAAE epoch",
                "| matmuls (mm, addmm)", "The most any loop doing this math could gain here",
                "| DAAE MNIST training, this project in bf16", "| MNIST epoch outside the step",
                "| Omniglot epoch outside the step", "| peak memory of loading", "| CUDA ms per step, eager"):
        assert row in out

    train, parzen, omniglot = results["training"], results["parzen"], results["omniglot"]
    assert train["loss_diff"] < 1e-6 and train["weight_diff"] < 1e-5  # the usual loop is the same math
    assert parzen["error"] < 1e-8  # common's Parzen estimate is exact against the brute force
    assert parzen["ours_best_sigma"] == parzen["best_sigma"]
    # per step: the discriminator's and the encoder's fake codes (M corruptions in one batched call), then
    # the reconstruction's
    assert omniglot["encoder_batches"] == {1: [64, 64, 64], 5: [320, 320, 64]}
    # the epoch's parts outside the step were all timed, and the dataset was measured (on Linux)
    assert set(results["outside"]["mnist"]["parts"]) == set(results["outside"]["omniglot"]["parts"])
    assert results["memory"] is None or results["memory"]["uint8"] < results["memory"]["float"]


def test_the_cuda_section_runs_alone_and_on_the_cpu_with_tiny_networks(capsys):
    benchmark = load_benchmark()
    results = benchmark.main(["--cuda", "--tiny"])  # the code a GPU runs with --cuda, on tiny networks
    out = capsys.readouterr().out
    assert list(results["cuda"]) == ["DAAE, MNIST 28x28", "DAAE, Omniglot 105x105", "iDAAE, Omniglot 105x105, M = 5"]
    assert all(ms["fp32"] > 0 and ms["bf16"] > 0 and ms["batch_size"] == 64 for ms in results["cuda"].values())
    assert out.count("ms per step, eager:") == 3
    if not torch.cuda.is_available():
        with pytest.raises(machinery.CLIError, match="no CUDA device"):
            benchmark.main(["--cuda"])
