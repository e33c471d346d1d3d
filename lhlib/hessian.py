"""Per-sample and dataset Hessians of the cross-entropy loss, without forming a P x P matrix.

For one sample with logits ``z = f_theta(x) in R^K``, probabilities ``p = softmax(z)`` and loss
``l = -log p_y``, the Hessian with respect to the ``P`` parameters splits (paper, section 3.4) as

    H_i = J_i^T A_i J_i  +  sum_k (p_k - y_k) d^2 z_k / d theta^2
          (G-term, Gauss-Newton)  (H-term)

with ``J_i`` the ``K x P`` Jacobian of the logits and ``A_i = diag(p) - p p^T``.

*G-term.* ``A = B B^T`` with ``s = sqrt(p)`` and ``B = diag(s) - p s^T``, so the nonzero spectrum
of ``J^T A J = (B^T J)^T (B^T J)`` is that of the ``K x K`` matrix ``B^T (J J^T) B``: the exact
spectral norm of every sample's G-term is the largest eigenvalue of a ``K x K`` matrix. For the
bias-free MLP of :mod:`lhlib.models` (the paper's network) the rows of ``J`` that belong to layer
``p`` are ``G^(p) (x) x^(p)^T`` (the paper's matrix ``F``; ``G^(p) = dz/dz^(p)`` is ``K x h_p``,
``x^(p)`` the layer's input), hence

    J J^T = sum_p ||x^(p)||^2 G^(p) G^(p)^T,

and :func:`per_sample_ggn_norms` computes all ``G^(p)`` for a batch of samples by one backward
recursion ``G^(p) = (G^(p+1) W^(p+1)) D^(p)``: no object of size ``P`` is formed at all. This
structured path serves any bias-free Linear/ReLU stack, whatever class holds it
(:func:`linear_relu_weights`). Any other model goes through ``torch.func``
(``vmap(jacrev(functional_call))``, ``K x P`` per sample, in chunks).

*Full Hessian.* It is indefinite in general (the H-term of a ReLU network has zero trace, see
:func:`hessian_trace`), so its spectral norm is ``max |lambda|``. :func:`per_sample_hessian_norms`
runs Lanczos for all samples of a batch at once on per-sample Hessian-vector products
(``vmap`` over samples of forward-over-reverse ``jvp(grad)``) and reports both extreme eigenvalues
and whether each sample's estimate converged (residual bound ``|beta_m s_m| <= tol * norm``).

*Dataset level.* :func:`dataset_hessian_top_eigenvalues` gives the top eigenvalues of the averaged
Hessian and averaged Gauss-Newton matrix by ARPACK (``scipy.sparse.linalg.eigsh``) on matrix-free
products; :func:`hessian_trace` estimates their traces with Hutchinson's estimator, and
:func:`ggn_trace` gives the Gauss-Newton trace exactly; :func:`lemma_difference_norms` measures
the lemma's ``||H_{k+1} - (1/k) sum_{i<=k} H_i||_2`` (Lanczos with full reorthogonalisation,
:func:`lanczos_extremes`). :func:`mean_matvec` and :func:`per_sample_matvec` expose the products.

*Chapter 03.* :func:`curvature_measurements` bundles what chapter 03 measures on one network
(cached in the results store) and :func:`theorem1_checks` compares it with every form of Theorem 1
in :mod:`lhlib.bounds`.

Everything runs on the device of the model's parameters and in their dtype (use ``model.double()``
for float64).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from lhlib.bounds import ggn_small_from_ntk, per_sample_ntk
from lhlib.models import MLP
from lhlib.validation import check_choice, check_float, check_int

__all__ = [
    "BOUND_FORMS",
    "METHODS",
    "OPERATORS",
    "CurvatureMeasurements",
    "HessianNorms",
    "TopEigenvalues",
    "TraceEstimate",
    "curvature_measurements",
    "dataset_hessian_top_eigenvalues",
    "flat_parameters",
    "ggn_trace",
    "hessian_trace",
    "lanczos_extremes",
    "lemma_difference_norms",
    "linear_relu_weights",
    "mean_matvec",
    "per_sample_ggn_norms",
    "per_sample_ggn_small",
    "per_sample_ggn_traces",
    "per_sample_hessian_norms",
    "per_sample_jjt",
    "per_sample_matvec",
    "quantile_summary",
    "theorem1_checks",
    "unflatten",
]

METHODS = ("auto", "structured", "generic")
"""How per-sample ``J J^T`` is computed: the bias-free Linear/ReLU structure, ``torch.func``, or whichever applies."""

OPERATORS = ("hessian", "ggn", "hterm")
"""Which curvature matrix an operator applies: the full Hessian, its G-term, or its H-term."""


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _check_data(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor (samples x features), got {getattr(x, 'shape', x)!r}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],)):
        raise ValueError(f"y must be a 1-D tensor of {x.shape[0]} class labels, got {getattr(y, 'shape', y)!r}")


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    parameter = next(model.parameters())
    return parameter.dtype, parameter.device


def _params_buffers(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    return params, buffers


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one vector, in ``named_parameters()`` order (the order every
    flat vector in this module uses).
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split ``flat`` (``(..., P)``) into ``{name: (..., *shape)}`` in ``named_parameters()`` order:
    the inverse of :func:`flat_parameters`, batched over leading axes.
    """
    split, _, size = _flatteners(dict(model.named_parameters()))
    if flat.shape[-1] != size:
        raise ValueError(f"flat must have {size} entries in its last axis, got {flat.shape[-1]}")
    return split(flat)


# Modules that a bias-free Linear/ReLU stack may hold besides its Linear layers (the ReLUs may
# equally be applied in ``forward`` with ``torch.relu``).
_STACK_PASSIVE = (nn.ReLU, nn.Identity, nn.Flatten)


def linear_relu_weights(model: nn.Module, probe: torch.Tensor | None = None) -> list[torch.Tensor] | None:
    """``[W^(1), ..., W^(L)]`` when ``model`` computes ``z = W^(L) s(W^(L-1) ... s(W^(1) x))`` (``s`` = ReLU),
    else ``None``.

    An :class:`lhlib.models.MLP` without biases qualifies by its class. Any other module, whatever
    class holds it (an ``nn.Sequential``, a class written like the authors', with the ReLUs as
    modules or called in ``forward``), qualifies when its only parameters are the weights of
    bias-free ``nn.Linear`` layers whose shapes chain in registration order, it has no buffers and
    no modules other than ``nn.ReLU``, ``nn.Identity`` and ``nn.Flatten``, and its output on
    ``probe`` and on ``-probe`` (2-D inputs) equals the stack's: modules alone do not say what
    ``forward`` does with them.
    """
    if type(model) is MLP:
        return model.weights() if all(linear.bias is None for linear in model.linears) else None
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if (
        not linears
        or any(not isinstance(m, (nn.Linear, *_STACK_PASSIVE)) for m in leaves)
        or any(linear.bias is not None for linear in linears)
        or next(model.buffers(), None) is not None
    ):
        return None
    weights = [linear.weight for linear in linears]
    if {id(p) for p in model.parameters()} != {id(w) for w in weights}:
        return None
    if any(nxt.shape[1] != w.shape[0] for w, nxt in itertools.pairwise(weights)):
        return None
    if probe is None:
        return None
    with torch.no_grad():
        inputs = torch.cat([probe, -probe]).to(weights[0])
        hidden = inputs
        for w in weights[:-1]:
            hidden = torch.relu(hidden @ w.T)
        expected = hidden @ weights[-1].T
        try:
            actual = model(inputs)
        except (RuntimeError, ValueError, TypeError):
            return None
    if actual.shape != expected.shape or not torch.allclose(
        actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1))
    ):
        return None
    return weights


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ----------------------------------------------------------------------------------------------
# Per-sample G-term: exact, through the K x K matrix B^T J J^T B
# ----------------------------------------------------------------------------------------------


def _generic_jjt(model: nn.Module, x: torch.Tensor, max_elements: int = 2**26) -> tuple[torch.Tensor, torch.Tensor]:
    """``J_i J_i^T`` of any model: ``vmap`` over samples of ``jacrev`` of the logits, in chunks of
    samples whose Jacobians hold at most ``max_elements`` numbers; no ``P x P`` object is formed.
    """
    params, buffers = _params_buffers(model)

    def logits_of(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    per_sample_jacobian = vmap(jacrev(logits_of), in_dims=(None, 0))
    with torch.no_grad():
        logits = torch.cat([functional_call(model, (params, buffers), (x[s],)) for s in _chunks(x.shape[0], 4096)])
    k = logits.shape[1]
    size = sum(p.numel() for p in params.values())
    chunk = max(1, max_elements // (k * size))
    blocks = []
    for s in _chunks(x.shape[0], chunk):
        # J J^T is the sum over parameter tensors of their blocks' J_p J_p^T: no concatenated copy.
        blocks.append(
            sum(
                j.reshape(j.shape[0], k, -1) @ j.reshape(j.shape[0], k, -1).transpose(1, 2)
                for j in per_sample_jacobian(params, x[s]).values()
            )
        )
    return torch.cat(blocks), logits


def per_sample_jjt(model: nn.Module, x: torch.Tensor, *, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(J_i J_i^T, logits)`` for every sample: an ``(N, K, K)`` and an ``(N, K)`` tensor.

    ``method`` is ``"structured"`` (the layer factors of a bias-free Linear/ReLU stack, recognised by
    :func:`linear_relu_weights` whatever class holds it: ``J J^T = sum_p ||x^(p)||^2 G^(p) G^(p)T``, no
    ``P``-sized object), ``"generic"`` (``vmap(jacrev(functional_call))``, any model) or ``"auto"``
    (``"structured"`` when it applies).
    """
    check_choice("method", method, METHODS)
    _check_data(x, None)
    weights = linear_relu_weights(model, x[:64]) if method != "generic" else None
    if method == "structured" and weights is None:
        raise ValueError(
            "method='structured' needs a bias-free Linear/ReLU stack (see linear_relu_weights); "
            "use method='generic' or 'auto' for other models"
        )
    if weights is not None:
        return per_sample_ntk([w.detach() for w in weights], x, dtype=x.dtype)
    return _generic_jjt(model, x)


def per_sample_ggn_small(
    model: nn.Module, x: torch.Tensor, *, method: str = "auto", batch_size: int = 4096
) -> torch.Tensor:
    """The ``(N, K, K)`` symmetric matrices ``M_i = B_i^T J_i J_i^T B_i`` whose eigenvalues are the
    nonzero eigenvalues of the per-sample G-terms ``J_i^T A_i J_i`` (``A_i = B_i B_i^T``).
    """
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, None)
    out = []
    for s in _chunks(x.shape[0], batch_size):
        out.append(ggn_small_from_ntk(*per_sample_jjt(model, x[s], method=method)))
    return torch.cat(out)


def per_sample_ggn_norms(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, method: str = "auto", batch_size: int = 4096
) -> torch.Tensor:
    """Exact spectral norm ``||J_i^T A_i J_i||_2`` of every sample's G-term, an ``(N,)`` tensor.

    It is the largest eigenvalue of the ``K x K`` matrix ``B_i^T J_i J_i^T B_i`` (see the module
    docstring). ``y`` is accepted for symmetry with the other functions and not used: ``A_i``
    does not depend on the label. Runs under ``torch.no_grad`` semantics for the MLP path.
    """
    if y is not None:
        _check_data(x, y)
    small = per_sample_ggn_small(model, x, method=method, batch_size=batch_size)
    return torch.linalg.eigvalsh(small)[:, -1].clamp_min(0)


def per_sample_ggn_traces(
    model: nn.Module, x: torch.Tensor, *, method: str = "auto", batch_size: int = 4096
) -> torch.Tensor:
    """Exact trace of every sample's G-term, ``tr(A_i J_i J_i^T)``, an ``(N,)`` tensor."""
    small = per_sample_ggn_small(model, x, method=method, batch_size=batch_size)
    return small.diagonal(dim1=1, dim2=2).sum(1)


# ----------------------------------------------------------------------------------------------
# Matrix-free products: per sample (batched) and averaged over a dataset
# ----------------------------------------------------------------------------------------------


def _flatteners(params: dict[str, torch.Tensor]):
    names = list(params)
    shapes = [params[name].shape for name in names]
    sizes = [math.prod(shape) for shape in shapes]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        lead = flat.shape[:-1]
        return {
            name: piece.reshape(*lead, *shape) for name, piece, shape in zip(names, flat.split(sizes, dim=-1), shapes)
        }

    def flatten(tree: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
        return torch.cat([tree[name].reshape(*tree[name].shape[:lead], -1) for name in names], dim=-1)

    return unflatten, flatten, sum(sizes)


def per_sample_matvec(model: nn.Module, operator: str = "hessian", batch_size: int = 128) -> Callable:
    """``matvec(V, x, y) -> (N, P)``: row ``i`` is ``C_i V[i]`` for the per-sample curvature ``C_i``.

    ``operator`` is ``"hessian"`` (``H_i``, forward-over-reverse ``jvp(grad)``), ``"ggn"``
    (``J_i^T A_i J_i``, one ``jvp`` and one ``vjp``) or ``"hterm"`` (their difference). Vectors are
    flat in :func:`flat_parameters` order; samples are processed ``batch_size`` at a time with
    ``vmap``.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    params, buffers = _params_buffers(model)
    unflatten, flatten, _ = _flatteners(params)

    def logits_of(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    def loss_of(p, xi, yi):
        return F.cross_entropy(logits_of(p, xi).unsqueeze(0), yi.unsqueeze(0))

    def hvp(v, xi, yi):
        return jvp(lambda p: grad(loss_of)(p, xi, yi), (params,), (v,))[1]

    def gvp(v, xi, yi):
        z, jv = jvp(lambda p: logits_of(p, xi), (params,), (v,))
        prob = torch.softmax(z, dim=0)
        u = prob * jv - prob * (prob @ jv)
        return vjp(lambda p: logits_of(p, xi), params)[1](u)[0]

    def htv(v, xi, yi):
        hv, gv = hvp(v, xi, yi), gvp(v, xi, yi)
        return {name: hv[name] - gv[name] for name in hv}

    single = {"hessian": hvp, "ggn": gvp, "hterm": htv}[operator]
    batched = vmap(single, in_dims=(0, 0, 0))

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = [flatten(batched(unflatten(vectors[s]), x[s], y[s]), 1) for s in _chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    return matvec


def mean_matvec(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, operator: str = "hessian", batch_size: int = 4096
) -> Callable:
    """``matvec(v) -> (1/N) sum_i C_i v`` for a flat vector ``v`` (the averaged Hessian, G-term
    or H-term of the loss on ``(x, y)``).

    The forward pass and the differentiable gradient (Hessian) or transposed-Jacobian product
    (G-term, the double-vjp trick) are built once per chunk of ``batch_size`` samples and kept, so
    every product afterwards costs only backward passes through the stored graphs (memory: the
    activations of all samples, twice).
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, y)
    params, buffers = _params_buffers(model)
    unflatten, flatten, _ = _flatteners(params)
    names = list(params)
    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    leaf_list = [leaves[name] for name in names]
    n = x.shape[0]
    chunks = []
    with torch.enable_grad():
        for s in _chunks(n, batch_size):
            logits = functional_call(model, (leaves, buffers), (x[s],))
            chunk = {}
            if operator in ("hessian", "hterm"):
                loss = F.cross_entropy(logits, y[s], reduction="sum")
                chunk["grad"] = torch.autograd.grad(loss, leaf_list, create_graph=True)
            if operator in ("ggn", "hterm"):
                dummy = torch.zeros_like(logits, requires_grad=True)
                chunk["jt"] = torch.autograd.grad(logits, leaf_list, grad_outputs=dummy, create_graph=True)
                chunk["dummy"], chunk["logits"] = dummy, logits
                chunk["prob"] = torch.softmax(logits.detach(), dim=1)
            chunks.append(chunk)

    def ggn_part(chunk, v_list):
        jv = torch.autograd.grad(chunk["jt"], chunk["dummy"], grad_outputs=v_list, retain_graph=True)[0]
        prob = chunk["prob"]
        u = prob * jv - prob * (prob * jv).sum(1, keepdim=True)
        return torch.autograd.grad(chunk["logits"], leaf_list, grad_outputs=u, retain_graph=True)

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        v = unflatten(vector.detach())
        v_list = [v[name] for name in names]
        total = torch.zeros_like(vector)
        for chunk in chunks:
            if operator in ("hessian", "hterm"):
                hv = torch.autograd.grad(chunk["grad"], leaf_list, grad_outputs=v_list, retain_graph=True)
                total += flatten(dict(zip(names, hv)), 0)
            if operator in ("ggn", "hterm"):
                gv = flatten(dict(zip(names, ggn_part(chunk, v_list))), 0)
                total += gv if operator == "ggn" else -gv
        return total / n

    return matvec


# ----------------------------------------------------------------------------------------------
# Per-sample spectral norms by batched Lanczos
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HessianNorms:
    """Per-sample spectral norms of a curvature matrix and the Lanczos diagnostics behind them.

    ``norms = max(|lambda_min|, |lambda_max|)``; ``lambda_min``/``lambda_max`` are the extreme
    Ritz values (the per-sample Hessian is indefinite, so ``lambda_min`` is typically negative);
    ``converged[i]`` says whether both extreme Ritz values of sample ``i`` have residual bound
    ``|beta_m s_m| <= tol * norms[i]`` (then an eigenvalue lies within that distance of each);
    ``iterations[i]`` is the number of Lanczos steps sample ``i`` took.
    """

    norms: torch.Tensor
    lambda_min: torch.Tensor
    lambda_max: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor


def _tridiagonal(alphas: list[torch.Tensor], betas: list[torch.Tensor]) -> torch.Tensor:
    alpha = torch.stack(alphas, dim=1)
    t = torch.diag_embed(alpha)
    if len(betas):
        beta = torch.stack(betas, dim=1)
        t = t + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
    return t


def per_sample_hessian_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    operator: str = "hessian",
    max_iter: int = 60,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 128,
    check_every: int = 4,
) -> HessianNorms:
    """Spectral norm of each sample's Hessian (or G-term, or H-term) by batched Lanczos.

    All samples of ``x`` run Lanczos together on per-sample Hessian-vector products (``vmap``);
    samples leave the batch as soon as both extreme Ritz values meet the residual test. Plain
    three-term Lanczos without reorthogonalisation: losing orthogonality only duplicates converged
    Ritz values, it does not spoil the extreme ones. Starting vectors are Gaussian, drawn from
    ``seed``. Memory: a few ``N x P`` tensors.
    """
    _check_data(x, y)
    check_choice("operator", operator, OPERATORS)
    check_int("max_iter", max_iter, minimum=2)
    check_float("tol", tol, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0)
    check_int("check_every", check_every, minimum=1)
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    n = x.shape[0]
    matvec = per_sample_matvec(model, operator, batch_size)
    size = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(n, size, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    q = q / q.norm(dim=1, keepdim=True)

    result_min = torch.zeros(n, dtype=torch.float64)
    result_max = torch.zeros(n, dtype=torch.float64)
    converged = torch.zeros(n, dtype=torch.bool)
    iterations = torch.zeros(n, dtype=torch.int64)
    active = torch.arange(n)
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(n, dtype=dtype, device=device)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    eps = torch.finfo(dtype).eps
    for step in range(1, max_iter + 1):
        w = matvec(q, x[active.to(device)], y[active.to(device)])
        alpha = (w * q).sum(1)
        w = w - alpha.unsqueeze(1) * q - beta_prev.unsqueeze(1) * q_prev
        # one pass of local reorthogonalisation against the last two vectors keeps the recurrence tidy
        w = w - (w * q).sum(1, keepdim=True) * q - (w * q_prev).sum(1, keepdim=True) * q_prev
        beta = w.norm(dim=1)
        alphas.append(alpha.double().cpu())
        t = _tridiagonal(alphas, betas)
        scale = t.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(torch.float64).tiny)
        breakdown = beta.double().cpu() <= 10 * eps * scale
        if step % check_every == 0 or step == max_iter or bool(breakdown.any()):
            evals, evecs = torch.linalg.eigh(t)
            lo, hi = evals[:, 0], evals[:, -1]
            norm = torch.maximum(lo.abs(), hi.abs())
            residual_lo = (beta.double().cpu() * evecs[:, -1, 0]).abs()
            residual_hi = (beta.double().cpu() * evecs[:, -1, -1]).abs()
            done = breakdown | ((residual_lo <= tol * norm) & (residual_hi <= tol * norm))
            finished = done | (step == max_iter)
            index = active[finished]
            result_min[index], result_max[index] = lo[finished], hi[finished]
            converged[index] = done[finished]
            iterations[index] = step
            keep = ~finished
            if not bool(keep.any()):
                break
            active = active[keep]
            keep_d = keep.to(device)
            alphas = [a[keep] for a in alphas]
            betas = [b[keep] for b in betas]
            w, q, beta = w[keep_d], q[keep_d], beta[keep_d]
        betas.append(beta.double().cpu())
        q_prev, q = q, w / beta.unsqueeze(1)
        beta_prev = beta
    norms = torch.maximum(result_min.abs(), result_max.abs())
    return HessianNorms(norms, result_min, result_max, converged, iterations)


# ----------------------------------------------------------------------------------------------
# Dataset level: top eigenvalues, traces, the lemma's difference term
# ----------------------------------------------------------------------------------------------


def _eigsh(matvec: Callable, size: int, k: int, which: str, dtype, device, tol: float, seed: int) -> np.ndarray:
    from scipy.sparse.linalg import LinearOperator, eigsh

    def apply(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(vector).reshape(-1), dtype=dtype, device=device)
        return matvec(v).detach().cpu().double().numpy()

    operator = LinearOperator((size, size), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(size)
    values = eigsh(
        operator, k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False, ncv=min(size, max(2 * k + 1, 20))
    )
    return np.sort(values)[::-1]


@dataclass(frozen=True)
class TopEigenvalues:
    """Top-``k`` eigenvalues (descending) of the averaged Hessian and of the averaged G-term."""

    hessian: np.ndarray
    ggn: np.ndarray


def dataset_hessian_top_eigenvalues(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 5,
    *,
    tol: float = 1e-6,
    seed: int = 0,
    batch_size: int = 2048,
) -> TopEigenvalues:
    """The ``k`` largest (algebraic) eigenvalues of ``(1/N) sum_i H_i`` and ``(1/N) sum_i G_i``.

    ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) on matrix-free products
    from :func:`mean_matvec`, in the model's dtype, vectors handed over in float64.
    """
    _check_data(x, y)
    check_int("k", k, minimum=1)
    check_float("tol", tol, minimum=0.0)
    check_int("seed", seed, minimum=0)
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    if k >= size:
        raise ValueError(f"k must be smaller than the number of parameters ({size}), got {k}")
    values = {
        operator: _eigsh(mean_matvec(model, x, y, operator, batch_size), size, k, "LA", dtype, device, tol, seed)
        for operator in ("hessian", "ggn")
    }
    return TopEigenvalues(values["hessian"], values["ggn"])


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of a trace: ``estimate`` is the mean of ``v^T C v`` over ``probes``
    Rademacher vectors ``v``, ``stderr`` its standard error (std / sqrt(probes)).
    """

    estimate: float
    stderr: float
    probes: int


def _quadratic_forms(model, x, y, operator, vectors, batch_size):
    """``v^T C v`` for each row ``v`` of ``vectors``: second directional derivatives by
    forward-over-forward mode (Hessian) or ``||B^T J v||^2`` (G-term); no reverse pass.
    """
    params, buffers = _params_buffers(model)
    unflatten, _, _ = _flatteners(params)
    n = x.shape[0]

    def logits_of(p, xb):
        return functional_call(model, (p, buffers), (xb,))

    def loss_sum(p, xb, yb):
        return F.cross_entropy(logits_of(p, xb), yb, reduction="sum")

    out = []
    for vector in vectors:
        v = unflatten(vector)
        total = 0.0
        for s in _chunks(n, batch_size):
            xb, yb = x[s], y[s]
            if operator == "hessian":
                value = jvp(
                    lambda p, xb=xb, yb=yb, v=v: jvp(lambda q: loss_sum(q, xb, yb), (p,), (v,))[1], (params,), (v,)
                )[1]
            else:
                z, jv = jvp(lambda p, xb=xb: logits_of(p, xb), (params,), (v,))
                prob = torch.softmax(z, dim=1)
                value = (prob * jv * jv).sum() - ((prob * jv).sum(1) ** 2).sum()
            total += float(value)
        out.append(total / n)
    return np.asarray(out)


def hessian_trace(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: int = 100,
    seed: int = 0,
    *,
    operator: str = "hessian",
    batch_size: int = 2048,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr((1/N) sum_i C_i)`` for ``operator`` ``"hessian"`` or ``"ggn"``.

    Each probe costs one forward-over-forward pass over the data. For the bias-free ReLU MLP the
    logits are multilinear in the weight matrices (activation pattern fixed), so the H-term has a
    zero diagonal and ``tr H = tr G`` exactly; :func:`ggn_trace` gives that value without noise.
    """
    _check_data(x, y)
    check_int("probes", probes, minimum=2)
    check_int("seed", seed, minimum=0)
    check_choice("operator", operator, ("hessian", "ggn"))
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(seed)
    vectors = (torch.randint(0, 2, (probes, size), generator=generator) * 2 - 1).to(device=device, dtype=dtype)
    values = _quadratic_forms(model, x, y, operator, vectors, batch_size)
    return TraceEstimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(probes)), probes)


def ggn_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, method: str = "auto") -> float:
    """Exact ``tr((1/N) sum_i J_i^T A_i J_i)`` (``y`` unused), from the per-sample ``K x K`` matrices."""
    return float(per_sample_ggn_traces(model, x, method=method).double().mean())


def lanczos_extremes(
    matvec: Callable,
    size: int,
    *,
    dtype=torch.float64,
    device="cpu",
    max_iter: int = 200,
    tol: float = 1e-6,
    seed: int = 0,
    stall: int = 5,
) -> tuple[float, float, bool]:
    """``(lambda_min, lambda_max, converged)`` of a symmetric operator given by ``matvec`` on flat
    vectors of length ``size``: Lanczos with full reorthogonalisation, stopped when both extreme
    Ritz values have residual bound ``|beta_m s_m| <= tol * max(|lambda_min|, |lambda_max|)``, or
    when ``max(|lambda_min|, |lambda_max|)`` moved by less than ``tol / 10`` (relative) over the last
    ``stall`` steps (``stall=0`` disables that: clustered extreme eigenvalues make residuals shrink
    slowly while the Ritz values, accurate to the squared residual, have long settled).
    """
    check_int("max_iter", max_iter, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(size, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    basis = [q / q.norm()]
    alphas, betas, history = [], [], []
    low = high = 0.0
    for step in range(1, min(max_iter, size) + 1):
        w = matvec(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stacked = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        low, high = float(evals[0]), float(evals[-1])
        scale = max(abs(low), abs(high), torch.finfo(torch.float64).tiny)
        if beta <= 10 * torch.finfo(dtype).eps * scale or step == size:
            return low, high, True
        if abs(beta * float(evecs[-1, 0])) <= tol * scale and abs(beta * float(evecs[-1, -1])) <= tol * scale:
            return low, high, True
        history.append(scale)
        if stall and len(history) > stall and abs(history[-1] - history[-1 - stall]) <= 0.1 * tol * scale:
            return low, high, True
        betas.append(beta)
        basis.append(w / beta)
    return low, high, False


def lemma_difference_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ks: Sequence[int],
    *,
    operator: str = "hessian",
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 2048,
) -> np.ndarray:
    """``||C_{k+1} - (1/k) sum_{i<=k} C_i||_2`` for each ``k`` in ``ks`` (samples in the order of
    ``x``; shuffle first for a random order), ``C`` the Hessian or G-term: the lemma's term.

    The difference is indefinite, so this is ``max(|lambda_min|, |lambda_max|)`` from
    :func:`lanczos_extremes` (full reorthogonalisation, relative residual ``tol``).
    """
    _check_data(x, y)
    check_choice("operator", operator, ("hessian", "ggn"))
    ks = [check_int("ks", k, minimum=1, maximum=x.shape[0] - 1) for k in ks]
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    out = []
    for k in ks:
        new = mean_matvec(model, x[k : k + 1], y[k : k + 1], operator, batch_size)
        old = mean_matvec(model, x[:k], y[:k], operator, batch_size)
        low, high, _ = lanczos_extremes(
            lambda v, new=new, old=old: new(v) - old(v), size, dtype=dtype, device=device, tol=tol, seed=seed
        )
        out.append(max(abs(low), abs(high)))
    return np.asarray(out)


# ----------------------------------------------------------------------------------------------
# Everything chapter 03 measures on one network, cached
# ----------------------------------------------------------------------------------------------


#: Bump when a change here alters what :func:`curvature_measurements` returns (its cache key).
MEASUREMENTS_VERSION = 1


@dataclass(frozen=True)
class CurvatureMeasurements:
    """Curvature of one network on ``(x, y)``.

    ``ggn_norms`` ``(N,)``: exact ``||G_i||_2`` of every sample. ``full_index``: the samples that
    got Lanczos on the full Hessian, the first ``random_count`` a uniform random subset, the rest
    the samples with the largest G-term norm (where a bound is most at risk). For those,
    ``hessian`` (full ``H_i``) and ``hterm`` (``H_i - G_i``) hold :class:`HessianNorms`-style
    tensors: ``norms``, ``lambda_min``, ``lambda_max``, ``converged``. ``top_hessian``/``top_ggn``:
    the largest eigenvalues of the averaged matrices over ``eigen_count`` samples (empty if none).
    """

    ggn_norms: torch.Tensor
    full_index: torch.Tensor
    random_count: int
    hessian: dict
    hterm: dict
    top_hessian: np.ndarray
    top_ggn: np.ndarray
    eigen_count: int
    from_cache: bool


def curvature_measurements(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    full_samples: int = 256,
    extreme_samples: int = 16,
    top_k: int = 5,
    eigen_samples: int | None = None,
    max_iter: int = 80,
    tol: float = 1e-3,
    eig_tol: float = 1e-4,
    hterm: bool = True,
    seed: int = 0,
    use_cache: bool = True,
) -> CurvatureMeasurements:
    """G-term norms of every sample, full-Hessian and H-term norms of ``full_samples`` random plus
    ``extreme_samples`` largest-G samples (batched Lanczos), and the top ``top_k`` eigenvalues of
    the averaged Hessian and G-term over the first ``eigen_samples`` samples (all when ``None``,
    none when ``top_k == 0``). Cached in the results store under the weights' and data's fingerprints
    and every setting.
    """
    from lhlib.cache import cached, tensor_fingerprint

    _check_data(x, y)
    n = x.shape[0]
    check_int("full_samples", full_samples, minimum=0, maximum=n)
    check_int("extreme_samples", extreme_samples, minimum=0, maximum=n)
    check_int("top_k", top_k, minimum=0)
    eigen_count = n if eigen_samples is None else check_int("eigen_samples", eigen_samples, minimum=1, maximum=n)
    check_int("seed", seed, minimum=0)
    params = {
        "version": MEASUREMENTS_VERSION,
        "model": tensor_fingerprint(*[p.detach() for p in model.parameters()]),
        "model_class": type(model).__name__,
        "data": tensor_fingerprint(x, y),
        "full_samples": full_samples,
        "extreme_samples": extreme_samples,
        "top_k": top_k,
        "eigen_samples": eigen_count,
        "max_iter": max_iter,
        "tol": tol,
        "eig_tol": eig_tol,
        "hterm": hterm,
        "seed": seed,
        "torch": torch.__version__.split("+")[0],
    }
    computed = False

    def compute() -> dict:
        nonlocal computed
        computed = True
        dtype, device = _model_dtype_device(model)
        xd, yd = x.to(device=device, dtype=dtype), y.to(device)
        ggn = per_sample_ggn_norms(model, xd).cpu()
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(n, generator=generator)[:full_samples]
        rest = torch.ones(n, dtype=torch.bool)
        rest[chosen] = False
        candidates = torch.nonzero(rest).squeeze(1)
        extreme = candidates[ggn[candidates].argsort(descending=True)[:extreme_samples]]
        index = torch.cat([chosen, extreme])
        out = {"ggn_norms": ggn, "full_index": index, "random_count": int(chosen.numel())}
        operators = ("hessian", "hterm") if hterm else ("hessian",)
        for operator in operators:
            if index.numel():
                r = per_sample_hessian_norms(
                    model,
                    xd[index.to(device)],
                    yd[index.to(device)],
                    operator=operator,
                    max_iter=max_iter,
                    tol=tol,
                    seed=seed,
                )
                out[operator] = {
                    "norms": r.norms,
                    "lambda_min": r.lambda_min,
                    "lambda_max": r.lambda_max,
                    "converged": r.converged,
                }
            else:
                empty = torch.zeros(0, dtype=torch.float64)
                out[operator] = {
                    "norms": empty,
                    "lambda_min": empty,
                    "lambda_max": empty,
                    "converged": torch.zeros(0, dtype=torch.bool),
                }
        if not hterm:
            out["hterm"] = {}
        size = sum(p.numel() for p in model.parameters())
        if top_k and top_k < size:
            top = dataset_hessian_top_eigenvalues(
                model, xd[:eigen_count], yd[:eigen_count], k=top_k, tol=eig_tol, seed=seed
            )
            out["top_hessian"], out["top_ggn"] = torch.as_tensor(top.hessian.copy()), torch.as_tensor(top.ggn.copy())
        else:
            out["top_hessian"] = out["top_ggn"] = torch.zeros(0, dtype=torch.float64)
        return out

    result = cached("curvature_measurements", params, compute, enabled=use_cache)
    return CurvatureMeasurements(
        result["ggn_norms"],
        result["full_index"],
        int(result["random_count"]),
        result["hessian"],
        result["hterm"],
        result["top_hessian"].numpy(),
        result["top_ggn"].numpy(),
        eigen_count,
        from_cache=not computed,
    )


def quantile_summary(values: torch.Tensor | np.ndarray, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict:
    """``{"min", "q50", "q90", "q99", "max", "mean", "count"}`` of a 1-D array (float64), for summaries."""
    values = np.asarray(torch.as_tensor(values).double().cpu())
    if values.size == 0:
        return {"count": 0}
    out = {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
    out.update({f"q{round(100 * q)}": float(np.quantile(values, q)) for q in quantiles})
    return out


#: The forms of Theorem 1 that :func:`theorem1_checks` evaluates (all from :mod:`lhlib.bounds`).
BOUND_FORMS = {
    "paper": "Theorem 1 as stated (M_x, M_W maxima, sqrt 2, +1 bias rows)",
    "paper_per_sample": "A.2's form with each ||x_i|| and the actual layer norms",
    "corrected": "corrected: (1/2) M_x^2 sum_p prod_{s != p} ||W^(s)||^2",
    "corrected_per_sample": "corrected with each ||x_i||",
    "activation_per_sample": "(1/2) sum_p ||x_i^(p)||^2 ||G_i^(p)||^2 (actual activations)",
}


def theorem1_checks(
    model: nn.Module,
    x: torch.Tensor,
    ggn_norms: torch.Tensor,
    full_index: torch.Tensor,
    hessian_norms: torch.Tensor,
    *,
    slack: float = 1e-5,
) -> dict:
    """Every form of Theorem 1 in :data:`BOUND_FORMS` against measured norms.

    For each form: ``value`` (the number, or the quantiles of the per-sample numbers), ``held_ggn``
    (bound >= ``||G_i||_2 (1 - slack)`` on every sample), ``held_hessian`` (the same for the full
    ``||H_i||_2`` on the ``full_index`` samples), ``violations_ggn``/``violations_hessian`` (counts)
    and ``tightness_ggn``/``tightness_hessian``: the smallest ratio bound / measured norm over the
    samples with a nonzero norm (for a single-number bound that is bound / max norm; NaN when every
    norm is zero), ``median_ratio_ggn`` the median ratio. A ratio below 1 is a violation.
    ``slack`` absorbs float32 rounding of the measured norms.
    """
    from lhlib import bounds

    ggn = ggn_norms.double().cpu()
    full = hessian_norms.double().cpu()
    index = full_index.cpu()
    forms = {
        "paper": bounds.theorem1_bound_paper(model, x),
        "paper_per_sample": bounds.theorem1_bound_per_sample(model, x).cpu(),
        "corrected": bounds.corrected_bound(model, x),
        "corrected_per_sample": bounds.corrected_bound_per_sample(model, x).cpu(),
        "activation_per_sample": bounds.activation_bound_per_sample(model, x).cpu(),
    }
    out = {}
    for name, bound in forms.items():
        per_sample = torch.as_tensor(bound, dtype=torch.float64).expand_as(ggn) if not torch.is_tensor(bound) else bound
        # Ratios only where the measured norm is positive: a sample whose logits do not depend on the
        # weights (every ReLU path dead) has zero curvature, and any bound holds there trivially.
        live_g, live_h = ggn > 0, full > 0
        ratio_g = per_sample[live_g] / ggn[live_g]
        ratio_h = per_sample[index][live_h] / full[live_h]
        out[name] = {
            "description": BOUND_FORMS[name],
            "value": float(bound) if not torch.is_tensor(bound) else quantile_summary(bound),
            "held_ggn": bool((per_sample >= ggn * (1 - slack)).all()),
            "violations_ggn": int((per_sample < ggn * (1 - slack)).sum()),
            "tightness_ggn": float(ratio_g.min()) if ratio_g.numel() else float("nan"),
            "median_ratio_ggn": float(ratio_g.median()) if ratio_g.numel() else float("nan"),
            "held_hessian": bool((per_sample[index] >= full * (1 - slack)).all()),
            "violations_hessian": int((per_sample[index] < full * (1 - slack)).sum()),
            "tightness_hessian": float(ratio_h.min()) if ratio_h.numel() else float("nan"),
        }
    return out
