"""Benchmark: exact per-sample G-term norms (lhlib.engine.per_sample) against per-sample power iteration.

    python benchmarks/bench_hessian.py [--family mlp|cnn|vit] [--samples 200] [--hidden-size 64]
                                       [--num-layers 5] [--threads N]

1. Times ``lhlib.engine.per_sample.per_sample_ggn_norms`` on all ``--train-size`` (10000) MNIST training
   samples for a trained network (by default the paper's, h = 64, num_layers = 5; ``--family cnn``
   or ``vit`` with ``--hidden-size`` as the width and ``--num-layers`` as the number of blocks),
   trained with the paper's settings through ``lhlib.engine.experiment.trained_network``, so the result
   store is reused. Targets on a 2-core CPU: under 2 s for the MLP (structured path), under 60 s
   for the CNN (generic ``torch.func`` engine).
   For the MLP it also times the same weights held in a plain ``nn.Sequential`` (as the authors
   build the network), which the structured path must recognise, against the generic engine.
2. On the first ``--samples`` samples, computes the same norms ``||J_i^T A_i J_i||_2`` the way a user
   of a PyHessian-style tool would: one sample at a time, power iteration (at most 100 steps,
   relative tolerance 1e-3, PyHessian's defaults) on Gauss-Newton-vector products from
   ``torch.autograd``; and, for reference, the same power iteration on full Hessian-vector products
   (what PyHessian computes, the top eigenvalue of the full per-sample Hessian). Prints both times
   per sample, the speed-up ratios and the agreement of the norms.

Not a test: the numbers depend on the machine and its load, which is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lhlib.engine.architectures import weight_layers
from lhlib.engine.data import load_dataset
from lhlib.engine.experiment import trained_network
from lhlib.engine.per_sample import per_sample_ggn_norms


def power_iteration(model, x_i, y_i, *, operator: str, max_iter: int = 100, tol: float = 1e-3, seed: int = 0):
    """Top eigenvalue of one sample's G-term (``"ggn"``) or Hessian (``"hessian"``), PyHessian-style.

    Returns ``(eigenvalue, iterations)``. Products come from ``torch.autograd`` on this one sample.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator) for p in params]
    norm = torch.sqrt(sum((u * u).sum() for u in v))
    v = [u / norm for u in v]
    logits = model(x_i[None])
    if operator == "hessian":
        loss = F.cross_entropy(logits, y_i[None])
        grads = torch.autograd.grad(loss, params, create_graph=True)
    else:
        # Gauss-Newton products J^T A J v: Jv by the double-vjp trick, then one vjp.
        dummy = torch.zeros_like(logits, requires_grad=True)
        jt_dummy = torch.autograd.grad(logits, params, grad_outputs=dummy, create_graph=True)
        prob = torch.softmax(logits.detach(), dim=1)
    eigenvalue, previous = 0.0, None
    for iteration in range(1, max_iter + 1):  # noqa: B007 (returned after the loop)
        if operator == "hessian":
            product = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        else:
            jv = torch.autograd.grad(jt_dummy, dummy, grad_outputs=v, retain_graph=True)[0]
            u = prob * jv - prob * (prob * jv).sum(1, keepdim=True)
            product = torch.autograd.grad(logits, params, grad_outputs=u, retain_graph=True)
        eigenvalue = float(sum((a * b).sum() for a, b in zip(product, v)))
        norm = torch.sqrt(sum((a * a).sum() for a in product))
        v = [a / (norm + 1e-30) for a in product]
        if previous is not None and abs(eigenvalue - previous) / (abs(previous) + 1e-12) < tol:
            break
        previous = eigenvalue
    return eigenvalue, iteration


def best_of(repeats: int, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--family", default="mlp", choices=["mlp", "cnn", "vit"])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200, help="samples for the side-by-side comparison")
    parser.add_argument("--repeats", type=int, default=3, help="timings of lhlib take the best of this many runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset, args.train_size)
    net = trained_network(
        data.x,
        data.y,
        num_classes=data.info.num_classes,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        device="cpu",
        family=args.family,
        image_shape=data.info.image_shape,
    )
    model = net.model
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"network: {args.dataset}, {args.family}, width {args.hidden_size}, depth {args.num_layers} "
        f"({weight_layers(model)} linear layers), P = {parameters} parameters, float32, CPU"
    )

    target = 2.0 if args.family == "mlp" else 60.0
    per_sample_ggn_norms(model, data.x[:256])  # warm-up
    full_time, _ = best_of(args.repeats, lambda: per_sample_ggn_norms(model, data.x))
    print(
        f"\n[1] lhlib per_sample_ggn_norms, all {len(data.x)} samples: {full_time:.3f} s "
        f"(best of {args.repeats}, {torch.get_num_threads()} threads; target < {target:g} s) -> "
        f"{'OK' if full_time < target else 'MISSED'}"
    )
    if args.family == "mlp":
        plain = nn.Sequential(*[module for linear in model.linears for module in (linear, nn.ReLU())][:-1])
        plain_time, plain_norms = best_of(args.repeats, lambda: per_sample_ggn_norms(plain, data.x))
        count = 1000
        generic_time, generic_norms = best_of(1, lambda: per_sample_ggn_norms(plain, data.x[:count], method="generic"))
        agree = float(((plain_norms[:count] - generic_norms).abs() / generic_norms.clamp_min(1e-30)).max())
        print(
            f"    the same weights in a plain nn.Sequential: {plain_time:.3f} s (structured path recognised); "
            f"the generic engine on its first {count} samples: {generic_time:.3f} s, "
            f"ratio per sample {generic_time / count / (plain_time / len(data.x)):,.0f}x "
            f"(max relative difference {agree:.1e})"
        )
    if torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        single_time, _ = best_of(args.repeats, lambda: per_sample_ggn_norms(model, data.x))
        torch.set_num_threads(threads)
        print(f"    the same with 1 thread: {single_time:.3f} s (a busy machine penalises oversubscribed threads)")

    n = args.samples
    x, y = data.x[:n], data.y[:n]
    lhlib_time, exact = best_of(args.repeats, lambda: per_sample_ggn_norms(model, x))
    start = time.perf_counter()
    ggn_power = [power_iteration(model, x[i], y[i], operator="ggn", seed=i) for i in range(n)]
    ggn_time = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):  # timed only: a different matrix (it includes the H-term)
        power_iteration(model, x[i], y[i], operator="hessian", seed=i)
    hessian_time = time.perf_counter() - start

    power_values = torch.tensor([value for value, _ in ggn_power], dtype=torch.float64)
    relative = (power_values - exact.double()).abs() / exact.double().clamp_min(1e-30)
    iterations = torch.tensor([it for _, it in ggn_power], dtype=torch.float64)
    print(f"\n[2] the same {n} samples, G-term norm ||J_i^T A_i J_i||_2 per sample:")
    print(
        f"    lhlib (exact, K x K eigenproblem, batched):   {lhlib_time:9.4f} s"
        f"  ({1e6 * lhlib_time / n:9.1f} us/sample)"
    )
    print(
        f"    power iteration, GGN-vector products (autograd, one sample at a time):"
        f" {ggn_time:9.2f} s  ({1e3 * ggn_time / n:7.2f} ms/sample, {iterations.mean():.1f} iterations on average)"
    )
    print(
        f"    ratio: {ggn_time / lhlib_time:,.0f}x   (agreement: median relative difference "
        f"{relative.median():.1e}, max {relative.max():.1e}; power iteration stops at a 1e-3 relative change)"
    )
    print(
        f"    for reference, PyHessian-style power iteration on the full per-sample Hessian: {hessian_time:9.2f} s "
        f"({1e3 * hessian_time / n:7.2f} ms/sample), ratio {hessian_time / lhlib_time:,.0f}x "
        f"(a different matrix: it includes the H-term)"
    )


if __name__ == "__main__":
    main()
