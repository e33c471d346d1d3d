"""How a chapter's compute slows on a busy machine, with OpenMP's default and passive waiting.

The workload is a slice of chapter 08, torch on its default thread count: Lanczos on per-sample
Hessians (:func:`lhlib.hessian.per_sample_hessian_norms`, 32 MNIST-sized inputs, the MLP h = 64,
num_layers = 5) and one epoch of a four-seed CNN ensemble (:func:`lhlib.ensemble.train_ensemble`).
Each run is a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when it starts), first on an idle
machine and then beside ``--busy`` processes that keep two torch threads each on matrix products, as
another build on the same machine would. The runs alternate between the two policies, so both see
the same conditions. ``lhlib.book`` starts its kernels with passive waiting.

Usage: ``python benchmarks/bench_load.py [--repeats N] [--busy B]``. Prints each run, then per policy
the slowdown under load (loaded time over idle time) and the ratio of the two policies' times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKLOAD = """
import time, torch
from lhlib.architectures import build_network
from lhlib.ensemble import train_ensemble
from lhlib.hessian import per_sample_hessian_norms
g = torch.Generator().manual_seed(0)
x, y = torch.rand(2048, 784, generator=g) * 2 - 1, torch.randint(0, 10, (2048,), generator=g)
mlp = build_network("mlp", (1, 28, 28), 64, 5, 10, 0)
cnns = [build_network("cnn", (1, 28, 28), 16, 2, 10, seed) for seed in range(4)]
start = time.perf_counter()
per_sample_hessian_norms(mlp, x[:32], y[:32], tol=1e-4, max_iter=40)
train_ensemble(cnns, x, y, seeds=list(range(4)), epochs=1)
print(time.perf_counter() - start)
"""

BUSY = """
import torch
torch.set_num_threads(2)
a = torch.randn(800, 800)
while True:
    a = torch.tanh(a @ a)
"""

POLICIES = {"default": None, "passive": "PASSIVE"}


def run_workload(policy: str | None) -> float:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        environment["OMP_WAIT_POLICY"] = policy
    output = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=environment, capture_output=True, text=True, check=True
    ).stdout
    return float(output.split()[-1])


def measure(condition: str, repeats: int) -> dict[str, float]:
    times = {name: [] for name in POLICIES}
    for _ in range(repeats):
        for name, policy in POLICIES.items():
            times[name].append(run_workload(policy))
            print(f"{condition:>6} {name:>8}: {times[name][-1]:6.2f} s (load average {os.getloadavg()[0]:.2f})")
    return {name: min(values) for name, values in times.items()}


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
    for name in POLICIES:
        slowdown = loaded[name] / idle[name]
        print(f"{name}: idle {idle[name]:.2f} s, loaded {loaded[name]:.2f} s, slowdown {slowdown:.2f}x")
    print(
        f"passive / default: idle {idle['passive'] / idle['default']:.2f}, "
        f"loaded {loaded['passive'] / loaded['default']:.2f} ({args.busy} competing process(es) of 2 threads, "
        f"{os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
