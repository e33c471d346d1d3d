"""How a chapter's compute slows on a busy machine, with three ways for OpenMP's threads to wait.

The workload is a slice of the book, torch on its default thread count: Lanczos on per-sample
Hessians (:func:`lhlib.engine.spectral.per_sample_hessian_norms`, 32 MNIST-sized inputs, the MLP h = 64,
num_layers = 5), one epoch of a four-seed CNN ensemble (:func:`lhlib.engine.ensemble.train_ensemble`), both
from chapter 08, and chapter 02's batched eigenvalues of softmax Hessians (2000 of them, K = 100),
timed apart: thousands of small LAPACK calls, each waking the threads several times. The policies:

* ``default``: OpenMP's own (libgomp spins 300 000 rounds before it sleeps);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE``, threads sleep at once;
* ``brief spin``: passive, but libgomp spins 10 000 rounds first (``GOMP_SPINCOUNT=10000``), what
  ``lhlib.build.book`` starts its kernels with.

Each run is a fresh process (OpenMP reads its environment when it starts), first on an idle machine
and then beside ``--busy`` processes that keep two torch threads each on matrix products, as another
build on the same machine would. The runs alternate between the policies, so all see the same
conditions.

Usage: ``python benchmarks/bench_load.py [--repeats N] [--busy B]``. Prints each run, then per policy
and part the slowdown under load (loaded time over idle time) and each policy's times over the default's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKLOAD = """
import time, torch
from lhlib.engine.architectures import build_network
from lhlib.engine.ensemble import train_ensemble
from lhlib.engine.spectral import per_sample_hessian_norms
g = torch.Generator().manual_seed(0)
x, y = torch.rand(2048, 784, generator=g) * 2 - 1, torch.randint(0, 10, (2048,), generator=g)
mlp = build_network("mlp", (1, 28, 28), 64, 5, 10, 0)
cnns = [build_network("cnn", (1, 28, 28), 16, 2, 10, seed) for seed in range(4)]
start = time.perf_counter()
per_sample_hessian_norms(mlp, x[:32], y[:32], tol=1e-4, max_iter=40)
train_ensemble(cnns, x, y, seeds=list(range(4)), epochs=1)
chapter08 = time.perf_counter() - start
z = torch.randn(2000, 100, generator=g, dtype=torch.float64) * 5
p = torch.softmax(z, 1)
start = time.perf_counter()
torch.linalg.eigvalsh(torch.diag_embed(p) - p[:, :, None] * p[:, None, :])
print(chapter08, time.perf_counter() - start)
"""

BUSY = """
import torch
torch.set_num_threads(2)
a = torch.randn(800, 800)
while True:
    a = torch.tanh(a @ a)
"""

POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "brief spin": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
}
PARTS = ("chapter 08 slice", "eigenvalues")


def run_workload(policy: dict[str, str]) -> tuple[float, float]:
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    output = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=environment | policy, capture_output=True, text=True, check=True
    ).stdout
    chapter08, eigenvalues = (float(value) for value in output.split()[-2:])
    return chapter08, eigenvalues


def measure(condition: str, repeats: int) -> dict[str, tuple[float, ...]]:
    times = {name: [] for name in POLICIES}
    for _ in range(repeats):
        for name, policy in POLICIES.items():
            times[name].append(run_workload(policy))
            chapter08, eigenvalues = times[name][-1]
            print(
                f"{condition:>6} {name:>10}: chapter 08 slice {chapter08:6.2f} s, eigenvalues {eigenvalues:6.2f} s"
                f" (load average {os.getloadavg()[0]:.2f})"
            )
    return {name: tuple(min(part) for part in zip(*values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per policy and condition (the minimum is kept)")
    parser.add_argument("--busy", type=int, default=1, help="competing processes of two threads each")
    args = parser.parse_args()
    idle = measure("idle", args.repeats)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    try:
        time.sleep(3)  # let the competitors start
        loaded = measure("loaded", args.repeats)
    finally:
        for process in busy:
            process.kill()
    print(f"\n{args.busy} competing process(es) of 2 threads, {os.cpu_count()} cores")
    for part, label in enumerate(PARTS):
        for name in POLICIES:
            idle_s, loaded_s, default = idle[name][part], loaded[name][part], idle["default"][part]
            print(
                f"{label:<16} {name:>10}: idle {idle_s:6.2f} s, loaded {loaded_s:6.2f} s, "
                f"slowdown {loaded_s / idle_s:5.2f}x; over default: idle {idle_s / default:5.2f}, "
                f"loaded {loaded_s / loaded['default'][part]:5.2f}"
            )


if __name__ == "__main__":
    main()
