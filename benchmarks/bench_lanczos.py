"""Benchmark: lhlib.engine.spectral.lanczos_extremes against scipy's eigsh(which="BE") on the lemma's operator.

    python benchmarks/bench_lanczos.py [--hidden-size 16] [--num-layers 5] [--k 1000] [--repeats 3]
                                       [--threads N]

Chapter 03's lemma term needs both extreme eigenvalues of the indefinite operator
``H_{k+1} - (1/k) sum_{i<=k} H_i``, given only by Hessian-vector products
(``lhlib.engine.tangents.mean_matvec``). ``lanczos_extremes`` (full reorthogonalisation, stopped on the
relative residual ``tol``) and ``scipy.sparse.linalg.eigsh(k=2, which="BE")`` (ARPACK's implicitly
restarted Lanczos, same tolerance) are run side by side, alternating, on the same operator of a
network trained with the paper's settings (from the results store when it is there) on the first
``--k + 1`` MNIST images. Prints, per method, the median wall time, the number of operator products,
the extreme eigenvalues, and the ratio of the times; ``lanczos_extremes``'s docstring quotes the
conclusion. Not a test: the numbers depend on the machine and its load, which is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lhlib.engine.data import load_dataset
from lhlib.engine.experiment import trained_network
from lhlib.engine.spectral import lanczos_extremes
from lhlib.engine.tangents import mean_matvec


def counted(matvec):
    """``matvec`` that counts its calls in ``.calls``."""

    def wrapped(v):
        wrapped.calls += 1
        return matvec(v)

    wrapped.calls = 0
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", 10000)
    network = trained_network(
        data.x, data.y, num_classes=10, hidden_size=args.hidden_size, num_layers=args.num_layers, seed=0, device="cpu"
    )
    model = network.model.double()
    x, y = data.x[: args.k + 1].double(), data.y[: args.k + 1]
    new = mean_matvec(model, x[args.k : args.k + 1], y[args.k : args.k + 1])
    old = mean_matvec(model, x[: args.k], y[: args.k])
    size = sum(p.numel() for p in model.parameters())

    def operator(v: torch.Tensor) -> torch.Tensor:
        return new(v) - old(v)

    def with_lhlib():
        matvec = counted(operator)
        low, high, converged = lanczos_extremes(matvec, size, tol=args.tol, seed=0)
        return low, high, converged, matvec.calls

    def with_scipy():
        matvec = counted(lambda v: operator(torch.from_numpy(np.ascontiguousarray(v).ravel())).numpy())
        start = np.random.default_rng(0).standard_normal(size)
        values = eigsh(LinearOperator((size, size), matvec=matvec, dtype=np.float64), k=2, which="BE", tol=args.tol,
                       v0=start, return_eigenvectors=False)  # fmt: skip
        return float(values.min()), float(values.max()), True, matvec.calls

    methods = {"lhlib.engine.spectral.lanczos_extremes": with_lhlib, "scipy eigsh(which='BE')": with_scipy}
    times = {name: [] for name in methods}
    results = {}
    for _ in range(args.repeats):
        for name, method in methods.items():  # alternating, so both see the same load
            start = time.perf_counter()
            results[name] = method()
            times[name].append(time.perf_counter() - start)
    load = os.getloadavg()[0]
    print(f"h = {args.hidden_size}, num_layers = {args.num_layers}: P = {size} parameters, k = {args.k}, "
          f"tol = {args.tol}; torch threads {torch.get_num_threads()}, load average {load:.2f}")  # fmt: skip
    for name in methods:
        low, high, converged, calls = results[name]
        print(f"{name:>32}: median {statistics.median(times[name]):7.2f} s over {args.repeats} runs, "
              f"{calls:4d} products, lambda in [{low:.6g}, {high:.6g}], converged {converged}")  # fmt: skip
    lhlib_time, scipy_time = (statistics.median(times[name]) for name in methods)
    print(f"ratio eigsh / lanczos_extremes: {scipy_time / lhlib_time:.2f} (above 1: lanczos_extremes is faster)")


if __name__ == "__main__":
    main()
