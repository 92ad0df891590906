"""How fast this project trains and evaluates, measured against the usual way and the machine.

One run on the current machine measures:

1. Training the DAAE at the paper's MNIST size (784-1000-1000-10, decoder 10-1000-1000-784,
   discriminator 10-1000-1000-1, batch 64, three Adam updates per batch), in images/s:
   (a) the usual PyTorch loop, written below: a Dataset that builds each image as a PIL image
       and applies ToTensor, a shuffling DataLoader, .to(device) per batch, torch.optim.Adam
       with its defaults, a separate encoder forward pass per phase; the same math as (b);
   (b) this project: daae.py's loop (common.Run) around daae.train_step (on-device tensors, batches are slices,
       fused Adam), as daae.py runs it, without the pictures and checkpoints between epochs.
   Both against the ceiling that the machine's batch-64 matmul speed sets for the step's
   multiply-adds (counted with torch.utils.flop_counter).
2. The Parzen bandwidth search of eval.py (logspace(-1, 0, 10), 2,000 samples, 500 points,
   784 dimensions): common.select_bandwidth against scikit-learn's KernelDensity, both
   compared with a brute-force float64 logsumexp.
3. The Omniglot iDAAE at the paper's size (105 x 105, M = 5): seconds per step and per epoch,
   and whether the step grows from M = 1 to M = 5 as its counted multiply-adds predict.
4. Where a DAAE step's time goes (torch.profiler).
5. Whole processes on the same .npz, start to end: the usual program (the loop of 1(a), with
   save_image and torch.save after every epoch) against daae.py in fp32 and --precision bf16
   (forced on, and labelled emulated, where the hardware has no bfloat16). 1(b) is also timed
   in bf16.
6. The epoch outside the step at the paper's MNIST and Omniglot epochs: the loop's own work per
   step, pictures, checkpoint, log (each part timed once, added up).
7. Peak memory of loading a .npz, its splits kept as uint8 against converted to float32.
8. On CUDA, ms per training step, eager, fp32 (TF32 matmuls, as the scripts allow them) against
   bf16 autocast: the DAAE at the paper's MNIST size, and the DAAE and the iDAAE (M = 5) at
   Omniglot's 105 x 105, batch 64 (skipped without a GPU; `--cuda` runs this section alone).

Synthetic data only (scikit-learn's digits, enlarged): no network, no downloads.
Timings are medians of interleaved repeats; the load average is printed with them, since
the machine may be shared.

    python benchmarks/benchmark.py              # a few minutes on 2 idle CPU cores
    python benchmarks/benchmark.py --quick      # fewer repeats and smaller processes
    python benchmarks/benchmark.py --threads 1  # on a busy machine (see the warning it prints)
    python benchmarks/benchmark.py --tiny       # tiny networks, no processes: checks that the script runs
    python benchmarks/benchmark.py --celeba-memory  # only: loading a CelebA-sized .npz (2.5 GB, deleted after)
    python benchmarks/benchmark.py --cuda       # only: section 8, on a GPU (--cuda --tiny: on the CPU, tiny)
"""

import argparse
import contextlib
import io
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.neighbors import KernelDensity
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import ToTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import daae  # noqa: E402
import idaae  # noqa: E402
import machinery  # noqa: E402

OMNIGLOT_TRAIN_IMAGES = 18316  # the paper's training set (drawers 1-19 of the background set)

# How much each run measures: MNIST steps per timed epoch, repeats, Omniglot steps per repeat,
# steps profiled, and the bandwidths scikit-learn is timed on (the rest are scaled from them).
SIZES = {
    "full": dict(steps=30, repeats=5, omniglot_steps=2, profile_steps=20, sklearn_bandwidths=10,
                 process_images=2000, process_repeats=2, memory_images=70000, cuda_steps=100),
    "quick": dict(steps=12, repeats=2, omniglot_steps=1, profile_steps=5, sklearn_bandwidths=1,
                  process_images=1000, process_repeats=1, memory_images=10000, cuda_steps=50),
    "tiny": dict(steps=3, repeats=1, omniglot_steps=1, profile_steps=2, sklearn_bandwidths=10,
                 process_images=0, process_repeats=0, memory_images=1000, cuda_steps=3),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Seconds one call of fn takes (waiting for the device)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def flops_of(fn):
    """The matmul FLOPs (2 per multiply-add) one call of fn performs."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def digit_images(n, size, seed=0):
    """n synthetic size x size images in [0, 1]: scikit-learn's 8x8 digits enlarged, plus noise."""
    digits = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(digits), (n,), generator=generator)
    images = F.interpolate(digits[pick], size=(size, size), mode="bilinear", align_corners=False)
    return (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# 1. Training: the usual PyTorch loop next to this project's
# ---------------------------------------------------------------------------------------------


class PILImages(torch.utils.data.Dataset):
    """The usual Dataset: uint8 arrays kept as numpy, each item a PIL image through ToTensor."""

    def __init__(self, images, labels):
        self.images, self.labels, self.to_tensor = images, labels, ToTensor()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.to_tensor(Image.fromarray(self.images[i])), int(self.labels[i])


def usual_optimizers(model, lr):
    """torch.optim.Adam with its defaults, one per phase, as the paper's algorithm has."""
    return {"reconstruction": torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=lr),
            "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=lr),
            "encoder": torch.optim.Adam(model.encoder.parameters(), lr=lr)}


def usual_step(model, optimizers, x, sigma):
    """daae.train_step as a tutorial writes it: one forward pass of its own per update, in the
    authors' order (discriminator, encoder, reconstruction), each on a corruption of its own."""
    encoder, decoder, discriminator = model.encoder, model.decoder, model.discriminator
    ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)

    z_fake = encoder(x + sigma * torch.randn_like(x))
    z_real = torch.randn(len(x), model.latent_dim, device=x.device)
    d_loss = (F.binary_cross_entropy_with_logits(discriminator(z_real), ones)
              + F.binary_cross_entropy_with_logits(discriminator(z_fake.detach()), zeros))
    optimizers["discriminator"].zero_grad()
    d_loss.backward()
    optimizers["discriminator"].step()

    z_fake = encoder(x + sigma * torch.randn_like(x))
    g_loss = F.binary_cross_entropy_with_logits(discriminator(z_fake), ones)
    optimizers["encoder"].zero_grad()
    g_loss.backward()
    optimizers["encoder"].step()

    x_noisy = x + sigma * torch.randn_like(x)
    reconstruction_loss = F.binary_cross_entropy(decoder(encoder(x_noisy)), x)
    optimizers["reconstruction"].zero_grad()
    reconstruction_loss.backward()
    optimizers["reconstruction"].step()
    return reconstruction_loss.detach(), d_loss.detach(), g_loss.detach()


def usual_epoch(model, optimizers, loader, sigma, device):
    """One epoch of the usual loop: (wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    running = [0.0, 0.0, 0.0]
    for x, _ in loader:
        x = x.to(device)
        losses = usual_step(model, optimizers, x, sigma)
        running = [total + loss.item() for total, loss in zip(running, losses)]
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def project_epoch(model, optimizers, config, x, y, device, precision="fp32"):
    """One epoch of daae.py's loop (common.Run's epochs and batches around daae.train_step, in
    common.autocast): (wall seconds by the run's own clock, which stops before pictures, checkpoint
    and log; CPU seconds from the first step to the end of the last; wall seconds inside the steps)."""
    cpu, in_step = {}, []
    run = common.Run("daae", {**config, "epochs": 1, "precision": precision, "save_every": 1}, None, device, None)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        run.out = Path(out)
        for _ in run.epochs():
            for xb, _ in run.batches(x, y):
                cpu.setdefault("first", time.process_time())
                sync(device)
                start = time.perf_counter()
                with common.autocast(run):
                    losses = daae.train_step(model, optimizers, xb, config["sigma"])
                sync(device)
                in_step.append(time.perf_counter() - start)
                cpu["last"] = time.process_time()
                run.record(losses)
    return run.history[-1]["seconds"], cpu["last"] - cpu["first"], sum(in_step)


def matmul_gflops(device, seconds=0.25):
    """GFLOP/s of nn.Linear's matmul at batch 64, 1000 x 1000 (the step's typical shape)."""
    x, weight, bias = (torch.randn(shape, device=device) for shape in ((64, 1000), (1000, 1000), (1000,)))
    F.linear(x, weight, bias)
    calls, start = 0, time.perf_counter()
    sync(device)
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            F.linear(x, weight, bias)
        sync(device)
        calls += 10
    return 2 * 64 * 1000 * 1000 * calls / (time.perf_counter() - start) / 1e9


def same_math(config, device, x):
    """One step of each loop from the same weights, batch and seed: the largest difference of a
    loss and of a weight afterwards (only the rounding of fused vs per-tensor Adam differ)."""
    torch.manual_seed(1)
    ours, theirs = daae.build_model(config).to(device), daae.build_model(config).to(device)
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(2)
    losses = daae.train_step(ours, daae.make_optimizers(ours, config), x, config["sigma"])
    torch.manual_seed(2)
    usual_losses = usual_step(theirs, usual_optimizers(theirs, config["lr"]), x, config["sigma"])
    loss_diff = max(abs(float(a) - float(b)) for a, b in zip(losses.values(), usual_losses))
    weight_diff = max(float((a - b).abs().max())
                      for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    return loss_diff, weight_diff


def cuda_host_syncs(config, device, x):
    """On CUDA: "none" if the inner loop (shuffle, slices, daae.train_step, loss sums) runs a few
    steps without the host waiting for the device, else the first sync found."""
    if device.type != "cuda":
        return "not checked (no CUDA device)"
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)
    x = machinery.on_device((x * 255).round().to(torch.uint8), device)  # stored as uint8, as common.load_dataset keeps it
    perm, sums, batch_size = torch.randperm(len(x), device=x.device), {}, config["batch_size"]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for precision in ("fp32", "bf16"):
            run = common.Run("daae", {**config, "precision": precision}, None, device, None)
            for i in range(3):
                batch = common.float_images(x[perm[i * batch_size:(i + 1) * batch_size]].to(device))
                with common.autocast(run):
                    losses = daae.train_step(model, optimizers, batch, config["sigma"])
                sums = {k: sums[k] + v if k in sums else v.clone() for k, v in losses.items()}
    except RuntimeError as error:
        return f"found: {str(error).splitlines()[0][:100]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "none (torch.cuda.set_sync_debug_mode('error') over 3 steps in fp32 and 3 in bf16)"


def benchmark_training(config, sizes, device):
    n = sizes["steps"] * config["batch_size"]
    x = digit_images(n, 28)
    y = torch.randint(10, (n,))
    images_uint8 = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    x_project = torch.from_numpy(images_uint8).unsqueeze(1).float().div_(255)  # common's uint8 -> float
    loader = torch.utils.data.DataLoader(PILImages(images_uint8, y.numpy()), batch_size=config["batch_size"],
                                         shuffle=True, drop_last=True)

    torch.manual_seed(0)
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)
    usual_model = daae.build_model(config).to(device)
    optimizers_usual = usual_optimizers(usual_model, config["lr"])

    batch = x_project[:config["batch_size"]].to(device)
    step_flops = flops_of(lambda: daae.train_step(model, optimizers, batch, config["sigma"]))
    usual_flops = flops_of(lambda: usual_step(usual_model, optimizers_usual, batch, config["sigma"]))
    loss_diff, weight_diff = same_math(config, device, batch)
    syncs = cuda_host_syncs(config, device, x_project[:3 * config["batch_size"]])

    bf16_model = daae.build_model(config).to(device)
    bf16_optimizers = daae.make_optimizers(bf16_model, config)
    project, bf16, usual, peak = [], [], [], []  # (wall, CPU[, in the steps]) seconds per epoch
    sides = ("usual", "project", "bf16")
    for repeat in range(sizes["repeats"]):  # interleaved (ABC, CBA), so that all see the same load
        peak.append(matmul_gflops(device))
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            if side == "usual":
                usual.append(usual_epoch(usual_model, optimizers_usual, loader, config["sigma"], device))
            elif side == "project":
                project.append(project_epoch(model, optimizers, config, x_project, y, device))
            else:
                bf16.append(project_epoch(bf16_model, bf16_optimizers, config, x_project, y, device, "bf16"))
    flops_per_image = step_flops / config["batch_size"]
    gflops = statistics.median(peak)

    def median(times, i):
        return statistics.median(t[i] for t in times)

    return {
        "images": n, "batch_size": config["batch_size"], "project_ips": n / median(project, 0), "usual_ips": n / median(usual, 0),
        "bf16_ips": n / median(bf16, 0), "bf16_native": machinery.native_bf16(device),
        "step_seconds": median(project, 2) / (n // config["batch_size"]),
        "cpu_ratio": median(usual, 1) / median(project, 1),
        "peak_gflops": gflops, "peak_best": max(peak), "flops_per_image": flops_per_image,
        "usual_flops_per_image": usual_flops / config["batch_size"],
        "ceiling_ips": gflops * 1e9 / flops_per_image, "loss_diff": loss_diff, "weight_diff": weight_diff,
        "cuda_syncs": syncs, "project_times": project, "usual_times": usual,
    }


# ---------------------------------------------------------------------------------------------
# 2. Parzen: choosing the bandwidth
# ---------------------------------------------------------------------------------------------


def brute_force_parzen(samples, points, sigmas):
    """log p(x) term by term in float64, each squared distance summed from its differences
    (cdist without the |x|^2 + |mu|^2 - 2 x.mu shortcut that common uses)."""
    mu, x = samples.flatten(1).double(), points.flatten(1).double()
    sq_dist = torch.cdist(x, mu, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    n, dims = mu.shape
    return torch.stack([torch.logsumexp(-sq_dist / (2 * s * s), 1) - math.log(n)
                        - dims * math.log(s * math.sqrt(2 * math.pi)) for s in sigmas])


def benchmark_parzen(n_samples, n_points, sizes, device):
    sigmas = np.logspace(-1, 0, 10)
    samples, points = digit_images(n_samples, 28, seed=1), digit_images(n_points, 28, seed=2)
    exact = brute_force_parzen(samples, points, sigmas)

    ours = common.parzen_log_likelihoods(samples.to(device), points.to(device), sigmas).cpu()
    times = [timed(lambda: common.select_bandwidth(samples.to(device), points.to(device), sigmas), device)
             for _ in range(max(3, sizes["repeats"]))]

    samples_np, points_np = samples.flatten(1).double().numpy(), points.flatten(1).double().numpy()
    timed_sigmas = sigmas[np.linspace(0, len(sigmas) - 1, sizes["sklearn_bandwidths"]).round().astype(int)]
    sklearn, sklearn_seconds = {}, 0.0
    for s in timed_sigmas:
        start = time.perf_counter()
        sklearn[s] = KernelDensity(kernel="gaussian", bandwidth=s).fit(samples_np).score_samples(points_np)
        sklearn_seconds += time.perf_counter() - start
    rows = [i for i, s in enumerate(sigmas) if s in sklearn]
    sklearn_error = max(np.abs(sklearn[sigmas[i]] - exact[i].numpy()).max() for i in rows)
    sklearn_total = sklearn_seconds * len(sigmas) / len(timed_sigmas)
    ours_seconds = statistics.median(times)
    return {"seconds": ours_seconds, "sklearn_seconds": sklearn_total, "sklearn_timed": len(timed_sigmas),
            "speedup": sklearn_total / ours_seconds, "error": float((ours - exact).abs().max()),
            "sklearn_error": float(sklearn_error), "n_samples": n_samples, "n_points": n_points,
            "best_sigma": float(sigmas[int(exact.mean(1).argmax())]),
            "ours_best_sigma": common.select_bandwidth(samples, points, sigmas)[0],
            "sklearn_best_sigma": float(max(sklearn, key=lambda s: sklearn[s].mean()))}


# ---------------------------------------------------------------------------------------------
# 3. The Omniglot iDAAE at the paper's size
# ---------------------------------------------------------------------------------------------


def benchmark_omniglot(config, sizes, device):
    x = digit_images(config["batch_size"], 105).to(device)
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)

    def step(M):
        return daae.train_step(model, optimizers, x, config["sigma"],
                               lambda encoder, x, sigma: idaae.integrated_codes(encoder, x, sigma, M))

    encoder_batches = []
    hook = model.encoder.register_forward_hook(lambda module, inputs, output: encoder_batches.append(len(inputs[0])))
    calls, flops = {}, {}
    for M in (1, config["M"]):
        encoder_batches.clear()
        flops[M] = flops_of(lambda: step(M))
        calls[M] = list(encoder_batches)
    hook.remove()

    times = {1: [], config["M"]: []}
    for _ in range(sizes["omniglot_steps"]):
        for M in times:
            times[M].append(timed(lambda: step(M), device))
    seconds = {M: statistics.median(t) for M, t in times.items()}
    M = config["M"]
    state = {"model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}
    with tempfile.TemporaryDirectory() as out:
        checkpoint_seconds = timed(lambda: machinery.save_checkpoint(Path(out) / "checkpoint.pt", state), device)
    steps = OMNIGLOT_TRAIN_IMAGES // config["batch_size"]
    return {"M": M, "step": seconds[M], "step_m1": seconds[1], "steps": steps, "epoch": steps * seconds[M],
            "checkpoint": checkpoint_seconds, "measured_ratio": seconds[M] / seconds[1],
            "predicted_ratio": flops[M] / flops[1], "flops": flops[M], "gflops": flops[M] / seconds[M] / 1e9,
            "encoder_batches": calls, "one_batched_call": len(calls[1]) == len(calls[M])}


# ---------------------------------------------------------------------------------------------
# 4. Where a DAAE step's time goes
# ---------------------------------------------------------------------------------------------

MATMULS, OPTIMISER = "matmuls (mm, addmm)", "optimiser (fused Adam)"
CATEGORIES = {  # profiler op name -> what it is; other ops are elementwise (ReLU, losses, gradient sums)
    "aten::mm": MATMULS, "aten::addmm": MATMULS, "aten::_fused_adam_": OPTIMISER,
    "aten::randperm": "data (shuffle, batch slices)", "aten::index": "data (shuffle, batch slices)",
    "aten::normal_": "random numbers (corruption, prior)",
}


@contextlib.contextmanager
def quiet_native_stderr(quiet):
    """With `quiet`, the C++ profiler's own log lines go nowhere: without a GPU, a CUDA build of
    torch logs "profiler_start" and "ERROR: gpuGetDeviceCount failed", which is no error of ours.
    They are written to file descriptor 2 directly, past sys.stderr, so that is what is redirected."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_step(config, sizes, device):
    n_steps, batch_size = sizes["profile_steps"], config["batch_size"]
    x = digit_images(n_steps * batch_size, 28).to(device)
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)

    def steps():  # the loop's inner part: a shuffle, then batches as slices of the on-device tensor
        perm = torch.randperm(len(x), device=device)
        for i in range(n_steps):
            daae.train_step(model, optimizers, x[perm[i * batch_size:(i + 1) * batch_size]], config["sigma"])

    steps()
    unprofiled = statistics.median(timed(steps, device) for _ in range(2)) / n_steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with quiet_native_stderr(device.type != "cuda"), profile(activities=activities) as prof:
        wall = timed(steps, device) / n_steps
    spent = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            category = CATEGORIES.get(event.key, "elementwise (ReLU, losses, gradient sums, copies)")
            self_time = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
            spent[category] = spent.get(category, 0.0) + self_time / 1e6 / n_steps
    spent["Python, autograd, dispatch, profiler (the rest)"] = max(0.0, wall - sum(spent.values()))
    return {"wall": wall, "unprofiled": unprofiled, "spent": spent}


# ---------------------------------------------------------------------------------------------
# 5. Whole processes: the usual program against daae.py, start to end
# ---------------------------------------------------------------------------------------------

FORCED_BF16 = "import machinery; machinery.native_bf16 = lambda device: True; import daae; machinery.cli(daae.main)"


def write_npz(path, n, size=28, seed=0):
    """A .npz of n synthetic uint8 training images (and a tenth as many for validation and test)."""
    x = (digit_images(n + n // 5, size, seed) * 255).round().to(torch.uint8)[:, 0].numpy()
    y = np.random.default_rng(seed).integers(0, 10, len(x))
    m = n // 10
    np.savez(path, x_train=x[:n], y_train=y[:n], x_val=x[n:n + m], y_val=y[n:n + m], x_test=x[n + m:],
             y_test=y[n + m:])


def usual_process(npz, epochs, out):
    """The usual program, as a tutorial writes it: the arrays through a PIL Dataset and a shuffling
    DataLoader, the usual step, and after every epoch torch.save of the networks and optimisers
    and a sample grid with torchvision's save_image (run as `benchmark.py --usual-process`)."""
    from torchvision.utils import save_image

    arrays = np.load(npz)
    config = {**daae.DEFAULTS["mnist"], "image_shape": [1, 28, 28]}
    model = daae.build_model(config)
    optimizers = usual_optimizers(model, config["lr"])
    loader = torch.utils.data.DataLoader(PILImages(arrays["x_train"], arrays["y_train"]),
                                         batch_size=config["batch_size"], shuffle=True, drop_last=True)
    device = torch.device("cpu")
    for epoch in range(epochs):
        model.train()
        usual_epoch(model, optimizers, loader, config["sigma"], device)
        model.eval()
        with torch.no_grad():
            save_image(model.decode(torch.randn(100, config["latent_dim"])), Path(out) / f"samples_{epoch}.png",
                       nrow=10)
        torch.save({"model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()}},
                   Path(out) / "checkpoint.pt")


def timed_process(command, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - start


def benchmark_processes(sizes, device):
    """Images/s of whole processes (start-up, data, training, pictures, checkpoints) on the same
    .npz, interleaved: the usual program, `daae.py` (fp32), `daae.py --precision bf16`. Where
    bfloat16 is not native, the bf16 process is forced on (emulated) and labelled so."""
    n, epochs = sizes["process_images"], 2
    if not n:  # --tiny: three processes would take longer than the rest of the run
        return None
    native = machinery.native_bf16(device)
    threads = torch.get_num_threads()
    times = {"usual": [], "fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as folder:
        npz = Path(folder) / "digits.npz"
        write_npz(npz, n)
        script = Path(__file__).resolve()
        for repeat in range(sizes["process_repeats"]):
            sides = list(times) if repeat % 2 == 0 else list(times)[::-1]
            for side in sides:
                out = Path(folder) / f"{side}-{repeat}"
                out.mkdir()
                flags = ["--dataset", str(npz), "--epochs", str(epochs), "--out", str(out), "--device", device.type]
                if side == "usual":
                    command = [sys.executable, str(script), "--usual-process", str(npz), str(epochs), str(out)]
                elif side == "fp32":
                    command = [sys.executable, "daae.py", *flags]
                else:
                    head = [sys.executable, "daae.py"] if native else [sys.executable, "-c", FORCED_BF16]
                    command = [*head, *flags, "--precision", "bf16"]
                times[side].append(timed_process(command, threads))
    return {"images": n * epochs, "epochs": epochs, "native": native,
            **{f"{side}_ips": n * epochs / statistics.median(t) for side, t in times.items()}}


# ---------------------------------------------------------------------------------------------
# 6. The epoch outside the step: pictures, checkpoint, log, and the loop itself
# ---------------------------------------------------------------------------------------------


def loop_seconds(config, device, steps=100):
    """Seconds per step of the loop's own work (common.Run: shuffle, slices, uint8 -> float, loss
    sums), timed around a step that does nothing."""
    batch_size = config["batch_size"]
    x = torch.randint(256, (steps * batch_size, *config["image_shape"]), dtype=torch.uint8)
    x, y, loss = x.to(device), torch.zeros(len(x), dtype=torch.long, device=device), torch.zeros((), device=device)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        run = common.Run("daae", {"batch_size": batch_size, "epochs": 1, "save_every": 1}, Path(out), device, None)
        for _ in run.epochs():
            for _ in run.batches(x, y):
                run.record({"a": loss, "b": loss, "c": loss})
    return run.history[-1]["seconds"] / steps


def epoch_extras(config, step_seconds, steps, device):
    """Seconds per epoch that the loop spends outside the step at the paper's epoch of `steps`
    steps: the loop's own work per step, daae.save_pictures (the chain and code histogram, drawn
    every tenth of the run, counted as a tenth), the checkpoint, log.csv, and losses.png (drawn
    at most once a minute). Each part is timed once; the step comes from sections 1 and 3."""
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)
    x = digit_images(config["batch_size"], config["image_shape"][-1]).to(device)
    daae.train_step(model, optimizers, x, config["sigma"])  # Adam's state exists, as in a checkpoint
    test = (digit_images(2000, config["image_shape"][-1], seed=3) * 255).to(torch.uint8)
    data = common.Dataset("synthetic", None, None, None, None, test, torch.zeros(len(test), dtype=torch.long))
    history = [{"epoch": i + 1, "reconstruction": 0.1, "discriminator": 1.3, "encoder_adversarial": 0.7,
                "seconds": 1.0} for i in range(100)]
    with tempfile.TemporaryDirectory() as out:
        run = common.Run("daae", {**config, "epochs": 100}, Path(out), device, data)
        fixed_z = model.sample_prior(100)
        model.eval()
        with torch.no_grad():
            pictures = timed(lambda: daae.save_pictures(model, run, fixed_z, 3), device)
            tenth = timed(lambda: daae.save_pictures(model, run, fixed_z, 10), device)
        state = {"model_state": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}
        checkpoint = timed(lambda: machinery.save_checkpoint(Path(out) / "checkpoint.pt", state), device)
        log = timed(lambda: machinery.write_log(Path(out), history, plot=False), device)
        plot = timed(lambda: machinery.write_log(Path(out), history, plot=True), device)
    loop = loop_seconds(config, device)
    epoch = steps * (step_seconds + loop)
    parts = {"the loop's own work": steps * loop, "pictures": pictures, "chain and histogram (a tenth)": tenth / 10,
             "checkpoint": checkpoint, "log.csv": log, "losses.png": plot * min(1.0, epoch / 60)}
    outside = sum(parts.values())
    return {"steps": steps, "step": step_seconds, "parts": parts, "outside": outside,
            "share": outside / (steps * step_seconds + outside)}


# ---------------------------------------------------------------------------------------------
# 7. Dataset memory: uint8 splits against float32 ones
# ---------------------------------------------------------------------------------------------

PEAK_RSS = """
import re, sys, torch
sys.path.insert(0, {root!r})
import common

def status(key):  # resident memory now (VmRSS) and at its peak (VmHWM), in bytes
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here: imports do not count
base = status("VmRSS")
data = common.load_dataset({npz!r})
splits = [data.x_train, data.x_val, data.x_test]
if {as_float!r}:
    splits = [common.float_images(x) for x in splits]  # float32 splits, as stored before
print(status("VmHWM") - base)
"""


def peak_dataset_memory(n, size=28, channels=1, with_float=True):
    """Peak resident memory that loading an n-image .npz adds to a process, as a multiple of its
    uint8 size: the splits kept as uint8 (common.load_dataset), and converted to float32. Linux's
    /proc/self counters, the peak reset after the imports; None elsewhere."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    result = {"images": n, "shape": (channels, size, size)}
    with tempfile.TemporaryDirectory() as folder:
        npz = Path(folder) / "data.npz"
        rng = np.random.default_rng(0)
        shape = (size, size) if channels == 1 else (channels, size, size)
        m = n // 10
        np.savez(npz, x_train=rng.integers(0, 256, (n - 2 * m, *shape), dtype=np.uint8),
                 y_train=np.zeros(n - 2 * m, np.int64), x_val=rng.integers(0, 256, (m, *shape), dtype=np.uint8),
                 y_val=np.zeros(m, np.int64), x_test=rng.integers(0, 256, (m, *shape), dtype=np.uint8),
                 y_test=np.zeros(m, np.int64))
        result["uint8_bytes"] = n * channels * size * size
        for as_float in (False, True) if with_float else (False,):
            code = PEAK_RSS.format(root=str(Path(__file__).resolve().parents[1]), npz=str(npz), as_float=as_float)
            peak = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                      text=True).stdout.split()[-1])
            result["float" if as_float else "uint8"] = peak / result["uint8_bytes"]
    return result


# ---------------------------------------------------------------------------------------------
# 8. CUDA: ms per step
# ---------------------------------------------------------------------------------------------


def training_step(config, fake_codes, precision, x, device):
    """One training step on x as daae.py (and idaae.py) runs it, with the run's settings and in
    common.autocast, on networks of its own."""
    model = daae.build_model(config).to(device)
    optimizers = daae.make_optimizers(model, config)
    run = common.Run("daae", {**config, "precision": precision}, None, device, None)

    def step():
        with common.autocast(run):
            daae.train_step(model, optimizers, x, config["sigma"], fake_codes, config["clip"], config["update_order"])

    return step


def cuda_steps(mnist, omniglot, sizes, device, anywhere=False):
    """ms per training step, eager, in fp32 and in bf16 (autocast), for the DAAE at MNIST's size and
    the DAAE and the iDAAE at Omniglot's 105 x 105, each with its script's settings (Omniglot's
    clipping too). The precisions interleaved, each repeat `cuda_steps` steps between two
    synchronisations, after a warm-up. None without CUDA, unless `anywhere` (--cuda --tiny: the
    same code on the CPU, so that it is known to run before a GPU is spent on it)."""
    if device.type != "cuda" and not anywhere:
        return None
    torch.backends.cuda.matmul.allow_tf32 = True  # as machinery.choose_device allows it for every script on CUDA
    M = omniglot["M"]

    def integrated(encoder, x, sigma):
        return idaae.integrated_codes(encoder, x, sigma, M)

    models = {"DAAE, MNIST 28x28": (mnist, daae.corrupted_codes),
              "DAAE, Omniglot 105x105": (omniglot, daae.corrupted_codes),
              f"iDAAE, Omniglot 105x105, M = {M}": (omniglot, integrated)}
    n, result = sizes["cuda_steps"], {}
    for name, (config, fake_codes) in models.items():
        x = digit_images(config["batch_size"], config["image_shape"][-1]).to(device)
        steps = {precision: training_step(config, fake_codes, precision, x, device) for precision in ("fp32", "bf16")}
        for step in steps.values():
            for _ in range(3):  # the first steps create Adam's state and pick the kernels
                step()
        times = {precision: [] for precision in steps}
        for repeat in range(sizes["repeats"]):  # interleaved (fp32 bf16, bf16 fp32), as every comparison here
            for precision in steps if repeat % 2 == 0 else list(steps)[::-1]:
                times[precision].append(timed(lambda: [steps[precision]() for _ in range(n)], device) / n * 1e3)
        result[name] = {**{precision: statistics.median(t) for precision, t in times.items()},
                        "batch_size": config["batch_size"]}
    return result


def cuda_rows(cuda, device_type="cuda"):
    """The report's rows for section 8 (on the CPU only from --cuda --tiny, labelled so)."""
    if cuda is None:
        return ["| CUDA ms per step, eager | skipped: no CUDA device | |"]
    where, fp32 = ("CUDA", "fp32 (TF32)") if device_type == "cuda" else ("CPU, tiny networks,", "fp32")
    return [f"| {where} ms per step, eager: {name}, batch {ms['batch_size']} | {ms['fp32']:.2f} ms {fp32}, "
            f"{ms['bf16']:.2f} ms bf16 ({ms['fp32'] / ms['bf16']:.2f}x) | |" for name, ms in cuda.items()]


def run_cuda(mode):
    """--cuda: section 8 alone, and its rows; on the CPU only with --tiny."""
    device = machinery.choose_device()
    if device.type != "cuda" and mode != "tiny":
        raise machinery.CLIError("--cuda: this PyTorch sees no CUDA device; --cuda --tiny runs the same code on "
                                 "the CPU with tiny networks")
    mnist, omniglot = paper_configs(mode)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU (tiny networks)"
    print(f"{mode} CUDA benchmark on {where}; {machine()}; load average {load_average()}", flush=True)
    start = time.perf_counter()
    cuda = cuda_steps(mnist, omniglot, SIZES[mode], device, anywhere=True)
    emulated = "" if machinery.native_bf16(device) else " (bfloat16 emulated: no native bfloat16 here)"
    print(f"({time.perf_counter() - start:.0f} s){emulated}\n\n| measure | result | target |\n|---|---|---|")
    print("\n".join(cuda_rows(cuda, device.type)))
    return {"cuda": cuda}


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def machine():
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def load_average():
    with contextlib.suppress(OSError, AttributeError):
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "unknown"


def report(results, start_load, device, mode):
    def verdict(ok):
        return "(tiny run: no verdict)" if mode == "tiny" else "**met**" if ok else "**not met**"

    t, p, o, prof = results["training"], results["parzen"], results["omniglot"], results["profile"]
    w, outside, memory, cuda = results["processes"], results["outside"], results["memory"], results["cuda"]
    emulated = "" if t["bf16_native"] else " (bfloat16 emulated: this CPU has no native bfloat16)"
    if w is None:
        processes = ["| whole processes | not measured in a --tiny run | |"]
    else:
        process_ratio = w["bf16_ips"] / w["usual_ips"]
        bf16_verdict = verdict(process_ratio >= 3) if w["native"] else "**not measurable here** (no native bfloat16)"
        processes = [
            f"| whole processes, {w['images']:,} images ({w['epochs']} epochs): the usual program (PIL loader, "
            f"save_image, torch.save every epoch) | {w['usual_ips']:,.0f} images/s | |",
            f"| whole processes: daae.py (fp32) | {w['fp32_ips']:,.0f} images/s, {w['fp32_ips'] / w['usual_ips']:.2f}x "
            f"the usual | |",
            f"| whole processes: daae.py --precision bf16{'' if w['native'] else ' (forced on, emulated)'} | "
            f"{w['bf16_ips']:,.0f} images/s, {process_ratio:.2f}x the usual | >= 3x on native bfloat16 "
            f"{bf16_verdict} |"]
    # With one thread, CPU time measures the work whatever share of the cores the process got.
    one_thread = torch.get_num_threads() == 1 and device.type == "cpu"
    cpu_ratio = f" (in CPU time: {t['cpu_ratio']:.2f}x)" if one_thread else ""
    sklearn_timed = f" ({p['sklearn_timed']} of 10 bandwidths timed, scaled)" if p["sklearn_timed"] < 10 else ""
    # The step may cost a little more than its FLOPs predict (15 %: timing noise, smaller matmuls at M = 1
    # are if anything slower), and the encoder must be called as often for M corruptions as for one.
    scales = o["measured_ratio"] <= 1.15 * o["predicted_ratio"] and o["one_batched_call"]
    ratio = t["project_ips"] / t["usual_ips"]
    mac = t["flops_per_image"] / 2e6
    floor = prof["spent"][MATMULS] + prof["spent"][OPTIMISER]
    usual_step_seconds = t["batch_size"] / t["usual_ips"]
    lines = [
        f"Machine: {machine()}, device {device}.",
        f"Load average (1, 5, 15 min): {start_load} at the start, {load_average()} at the end. Mode: {mode}.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| matmul, batch 64 x 1000 x 1000 (median, best) | {t['peak_gflops']:.0f} GFLOP/s, "
        f"{t['peak_best']:.0f} GFLOP/s | |",
        f"| DAAE MNIST step, counted | {mac:.1f} M multiply-adds per image (the usual loop: "
        f"{t['usual_flops_per_image'] / 2e6:.1f} M) | |",
        f"| ceiling at the median matmul speed | {t['ceiling_ips']:,.0f} images/s | |",
        f"| DAAE MNIST training, the usual PyTorch loop | {t['usual_ips']:,.0f} images/s "
        f"({t['usual_ips'] / t['ceiling_ips']:.0%} of the matmul peak) | |",
        f"| DAAE MNIST training, this project (daae.py's loop + daae.train_step) | {t['project_ips']:,.0f} images/s "
        f"({t['project_ips'] / t['ceiling_ips']:.0%} of the matmul peak) | |",
        f"| speed-up over the usual loop | {ratio:.2f}x{cpu_ratio} | >= 2x {verdict(ratio >= 2)} |",
        f"| DAAE MNIST training, this project in bf16 (autocast){emulated} | {t['bf16_ips']:,.0f} images/s, "
        f"{t['bf16_ips'] / t['usual_ips']:.2f}x the usual loop | |",
        *processes,
        *(f"| {name} epoch outside the step ({e['steps']} steps of {e['step'] * 1e3:,.0f} ms) | "
          f"{e['outside']:.2f} s, {e['share']:.1%} of the epoch ("
          + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in e["parts"].items())
          + f") | < 5% {verdict(e['share'] < 0.05)} |" for name, e in (("MNIST", outside["mnist"]),
                                                                     ("Omniglot", outside["omniglot"]))),
        "| peak memory of loading a .npz | not measured (it reads Linux's /proc/self) | |" if memory is None else
        f"| peak memory of loading a {memory['images']:,}-image .npz ({memory['uint8_bytes'] / 2**20:,.0f} MiB of "
        f"uint8) | {memory['uint8']:.2f}x its uint8 size kept as uint8; {memory['float']:.2f}x converted to float32 "
        f"(the storage before) | <= 1.1x {verdict(memory['uint8'] <= 1.1)} |",
        *cuda_rows(cuda),
        "| CUDA ms per step, graphed | not measured: CUDA graphs of the step are not implemented (untested "
        "without a GPU) | |",
        f"| same math: one step from the same weights, largest difference | losses {t['loss_diff']:.1e}, "
        f"weights {t['weight_diff']:.1e} | |",
        f"| CUDA: host-device syncs in the training steps | {t['cuda_syncs']} | none |",
        f"| Parzen bandwidth search, scikit-learn KernelDensity{sklearn_timed} | {p['sklearn_seconds']:.2f} s, "
        f"max abs error {p['sklearn_error']:.1e} nats | |",
        f"| Parzen bandwidth search, common.select_bandwidth | {p['seconds'] * 1e3:.0f} ms, max abs error "
        f"{p['error']:.1e} nats | exact |",
        f"| Parzen speed-up ({p['n_samples']:,} samples, {p['n_points']} points, 784 dims, 10 bandwidths) | "
        f"{p['speedup']:,.0f}x | >= 100x {verdict(p['speedup'] >= 100)} |",
        f"| best bandwidth: brute force, common, scikit-learn | {p['best_sigma']:.3f}, {p['ours_best_sigma']:.3f}, "
        f"{p['sklearn_best_sigma']:.3f} | |",
        f"| Omniglot iDAAE step (105x105, M = {o['M']}, batch 64) | {o['step']:.2f} s ({o['flops'] / 1e9:.0f} GFLOP "
        f"at {o['gflops']:.0f} GFLOP/s; M = 1: {o['step_m1']:.2f} s) | |",
        f"| Omniglot iDAAE epoch ({o['steps']} steps of 18,316 images) | {o['epoch']:,.0f} s training "
        f"+ {o['checkpoint']:.1f} s checkpoint ({(o['epoch'] + o['checkpoint']) * 1000 / 3600:,.0f} h for the "
        f"paper's 1,000 epochs) | measured |",
        f"| M = 1 -> M = {o['M']}: step time vs counted FLOPs | x{o['measured_ratio']:.2f} measured, "
        f"x{o['predicted_ratio']:.2f} predicted; encoder batches per step {o['encoder_batches'][1]} -> "
        f"{o['encoder_batches'][o['M']]} | no worse than the matmuls {verdict(scales)} |",
        "",
        f"Where a DAAE MNIST step's {prof['wall'] * 1e3:.1f} ms go (torch.profiler, self time of the ops; "
        f"{prof['unprofiled'] * 1e3:.1f} ms without the profiler):",
        "",
        "| part | ms per step | share |",
        "|---|---|---|",
        *(f"| {name} | {seconds * 1e3:.1f} | {seconds / prof['wall']:.0%} |"
          for name, seconds in sorted(prof["spent"].items(), key=lambda item: -item[1])),
        "",
        f"The most any loop doing this math could gain here: a step with nothing but its matmuls and the "
        f"optimiser's memory traffic would take {floor * 1e3:.1f} ms, against the usual loop's "
        f"{usual_step_seconds * 1e3:.1f} ms: {usual_step_seconds / floor:.2f}x.",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repeats, steps and images")
    size.add_argument("--tiny", action="store_true",
                      help="tiny networks and data, a few seconds: checks the script runs, the numbers mean nothing")
    parser.add_argument("--threads", type=machinery.positive_int, help="torch CPU threads (default: torch's choice)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--celeba-memory", action="store_true",
                      help="only the peak memory of loading a CelebA-sized .npz (202,599 x 3 x 64 x 64 uint8, "
                           "2.5 GB, written to the temporary folder and deleted)")
    only.add_argument("--cuda", action="store_true",
                      help="only section 8, on a CUDA device: ms per training step, fp32 (TF32) against bf16, of the "
                           "MNIST DAAE and the 105x105 Omniglot DAAE and iDAAE; with --tiny, the same code on the "
                           "CPU with tiny networks (checks it runs)")
    parser.add_argument("--usual-process", nargs=3, metavar=("NPZ", "EPOCHS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.usual_process:  # section 5 runs the usual program as a process of its own
        npz, epochs, out = args.usual_process
        return usual_process(npz, int(epochs), out)
    if args.celeba_memory:
        memory = peak_dataset_memory(202599, 64, 3, with_float=False)
        print(f"CelebA-sized .npz, {memory['uint8_bytes'] / 2**30:.2f} GiB of uint8: loading adds "
              f"{memory['uint8']:.2f}x that at its peak")
        return memory
    threads = torch.get_num_threads()
    try:
        if args.threads or args.tiny:  # tiny networks are all overhead: one thread keeps them quick on a busy machine
            torch.set_num_threads(args.threads or 1)
        mode = "tiny" if args.tiny else "quick" if args.quick else "full"
        return run_cuda(mode) if args.cuda else run_all(mode)
    finally:
        torch.set_num_threads(threads)


def paper_configs(mode):
    """The DAAE's (and iDAAE's) settings at the paper's MNIST and Omniglot (105 x 105) sizes; --tiny
    keeps the layers but gives each 16 units."""
    mnist = {**daae.DEFAULTS["mnist"], "image_shape": [1, 28, 28]}
    omniglot = {**idaae.DEFAULTS["omniglot"], "image_shape": [1, 105, 105]}
    if mode == "tiny":
        for config in (mnist, omniglot):
            for key in ("encoder_hidden", "decoder_hidden", "discriminator_hidden"):
                config[key] = [16] * len(config[key])
    return mnist, omniglot


def run_all(mode):
    """Every measurement, then the report; returns the results by section."""
    sizes = SIZES[mode]
    start_load = load_average()
    device = machinery.choose_device()
    torch.manual_seed(0)

    mnist, omniglot = paper_configs(mode)
    n_samples, n_points = (100, 20) if mode == "tiny" else (2000, 500)

    print(f"{mode} benchmark on {machine()}; load average {start_load}", flush=True)
    with contextlib.suppress(OSError, AttributeError):
        if os.getloadavg()[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1 and device.type == "cpu":
            print("warning: the machine is busy (load above its number of CPUs); PyTorch's threads then wait for "
                  "each other and every timing suffers: --threads 1 measures better", flush=True)
    results = {}
    sections = [("training", "training: the usual PyTorch loop and this project's", benchmark_training, mnist),
                ("parzen", "Parzen bandwidth search", benchmark_parzen, n_samples, n_points),
                ("omniglot", "Omniglot iDAAE step", benchmark_omniglot, omniglot),
                ("profile", "profile of a DAAE step", profile_step, mnist),
                ("processes", "whole processes: the usual program, daae.py fp32 and bf16", benchmark_processes),
                ("outside", "the epoch outside the step, at the paper's MNIST and Omniglot sizes",
                 lambda sizes, device: {
                     "mnist": epoch_extras(mnist, results["training"]["step_seconds"], 50000 // 64, device),
                     "omniglot": epoch_extras(omniglot, results["omniglot"]["step_m1"],
                                              OMNIGLOT_TRAIN_IMAGES // 64, device)}),
                ("memory", "peak memory of a dataset",
                 lambda sizes, device: peak_dataset_memory(sizes["memory_images"])),
                ("cuda", "CUDA steps", cuda_steps, mnist, omniglot)]
    for i, (key, title, measure, *args) in enumerate(sections):
        print(f"{i + 1}/{len(sections)} {title}", end="", flush=True)
        start = time.perf_counter()
        results[key] = measure(*args, sizes, device)
        print(f" ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(report(results, start_load, device, mode))
    return results


if __name__ == "__main__":
    machinery.cli(main)
