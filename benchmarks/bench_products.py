"""Benchmark: per-sample curvature products of the paper's MLP, structured recursions against torch.func.

    python benchmarks/bench_products.py [--sizes 16x5,64x5,16x10] [--samples 144] [--repeats 3] [--threads N]

``lhlib.engine.tangents.per_sample_matvec`` has two paths for a bias-free MLP: ``"generic"`` (``vmap`` over samples
of ``jvp(grad(functional_call))``, any model) and ``"structured"`` (the tangent of the forward and backward
recursions as batched matrix products). For networks trained with the paper's settings on the first 10 000
MNIST images (from the results store when there; ``--sizes`` lists ``hidden_size x num_layers``), and for
their initialisations, it times, side by side and alternating so both see the same load:

1. one product with every operator (``hessian``, ``ggn``, ``hterm``) on ``--samples`` samples;
2. chapter 03's batched Lanczos (``per_sample_hessian_norms``, 80 steps at most, tolerance 1e-3) on the
   full Hessian and on the H-term of the same samples,

and prints the medians, their ratios and each path's largest relative error over the samples against float64
(the product of the float64 network; for Lanczos, 300 steps at tolerance 1e-9 on it). Both paths round in
float32. The float64 reference is the structured path's, which the tests check against dense Hessians and
against the generic path (they agree to about 1e-11 in float64 here).
Not a test: the numbers depend on the machine and its load, which is printed with them.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lhlib.engine.data import load_dataset
from lhlib.engine.experiment import trained_network
from lhlib.engine.models import build_mlp
from lhlib.engine.spectral import per_sample_hessian_norms
from lhlib.engine.tangents import OPERATORS, per_sample_matvec

METHODS = ("generic", "structured")


def side_by_side(calls: dict[str, object], repeats: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The median wall time of each zero-argument call and its last result, the calls alternating every round."""
    times, results = {name: [] for name in calls}, {}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            results[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, results


def lanczos_norms(model, x, y, operator: str, method: str) -> torch.Tensor:
    """Chapter 03's per-sample Lanczos norms (80 steps at most, tolerance 1e-3) by one path of the products."""
    return per_sample_hessian_norms(model, x, y, operator=operator, max_iter=80, tol=1e-3, seed=0, method=method).norms


def report(network: str, what: str, seconds: dict[str, float], errors: dict[str, float], digits: int) -> None:
    """One row: both times, their ratio and each path's largest relative error."""
    ratio = seconds["generic"] / seconds["structured"]
    print(
        f"{network:<18} {what:<18} {seconds['generic']:11.{digits}f} {seconds['structured']:14.{digits}f}"
        f" {ratio:6.1f}  {errors['generic']:9.1e} {errors['structured']:10.1e}"
    )


def row_errors(results: dict[str, torch.Tensor], reference: torch.Tensor) -> dict[str, float]:
    """Each path's largest relative error over the samples, ``||row - reference row|| / ||reference row||``."""
    reference = reference.double()
    scale = (reference.norm(dim=-1) if reference.ndim > 1 else reference.abs()).clamp_min(
        torch.finfo(torch.float64).tiny
    )
    return {
        method: float(((result.double() - reference).norm(dim=-1) if reference.ndim > 1 else
                       (result.double() - reference).abs()).div(scale).max())
        for method, result in results.items()
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16x5,64x5,16x10")
    parser.add_argument("--samples", type=int, default=144)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", 10000)
    x, y = data.x[: args.samples], data.y[: args.samples]
    print(f"{args.samples} samples, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"{'network':<18} {'what':<18} {'generic (s)':>11} {'structured (s)':>14} {'ratio':>6}  largest relative error"
    )
    print(f"{'':<72}{'generic':>9} {'structured':>10}")
    for size in args.sizes.split(","):
        h, depth = (int(part) for part in size.split("x"))
        trained = trained_network(data.x, data.y, num_classes=10, hidden_size=h, num_layers=depth, seed=0, device="cpu")
        for label, model in (("trained", trained.model), ("initial", build_mlp(784, h, depth, 10, 0))):
            network, exact = f"h {h}, L {depth}, {label[:4]}", copy.deepcopy(model).double()
            vectors = torch.randn(args.samples, sum(p.numel() for p in model.parameters()))
            for operator in OPERATORS:
                products = {method: per_sample_matvec(model, operator, method=method) for method in METHODS}
                calls = {method: functools.partial(product, vectors, x, y) for method, product in products.items()}
                seconds, results = side_by_side(calls, args.repeats)
                reference = per_sample_matvec(exact, operator)(vectors.double(), x.double(), y)
                report(network, f"product, {operator}", seconds, row_errors(results, reference), digits=4)
            for operator in ("hessian", "hterm"):
                calls = {method: functools.partial(lanczos_norms, model, x, y, operator, method) for method in METHODS}
                seconds, results = side_by_side(calls, args.repeats)
                reference = per_sample_hessian_norms(
                    exact, x.double(), y, operator=operator, max_iter=300, tol=1e-9, seed=0
                ).norms
                report(network, f"Lanczos, {operator}", seconds, row_errors(results, reference), digits=3)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
