r"""Products with per-sample and averaged Hessians, from the tangents of the network's recursions.

For a bias-free Linear/ReLU stack (:func:`lhlib.engine.parameters.linear_relu_weights`) the forward pass is
:math:`x^{(p+1)} = D^{(p)} W^{(p)} x^{(p)}`, with :math:`D^{(p)}` the diagonal of ReLU's active units, and the
logits' Jacobian factors through :math:`G^{(p)} = \partial z / \partial z^{(p)}`, computed backwards as

.. math::

    G^{(L)} = I_K, \qquad G^{(p)} = G^{(p+1)} W^{(p+1)} D^{(p)}.

:func:`forward_factors` keeps :math:`x^{(p)}`, :math:`D^{(p)}` and :math:`G^{(p)}` for a batch of samples.
A Hessian-vector product :math:`H_i v` is the tangent of the gradient's recursion along :math:`v`
(forward over reverse): :func:`per_sample_matvec` gives it for every sample at once, with batched matrix
products for the MLP and ``vmap`` over ``jvp(grad)`` for any other model; :func:`mean_matvec` gives the
product with the averaged matrix :math:`\frac1N \sum_i H_i` (or its G-term or H-term,
:data:`OPERATORS`). The H-term product is computed directly as :math:`\sum_k r_k \nabla^2 z_k\, v` with the
residual :math:`r = p - e_y` held fixed, so it does not lose digits to :math:`Hv - Gv` in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from lhlib.engine.parameters import (
    METHODS,
    Weights,
    _check_data,
    _chunks,
    _flatteners,
    _params_buffers,
    linear_relu_weights,
    weight_list,
)
from lhlib.engine.validation import check_choice, check_int

# torch's first forward-mode product loads its jvp decompositions through the deprecated
# torch.jit.script, which warns in every chapter that uses jvp; load them once, quietly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    jvp(torch.sin, (torch.zeros(1),), (torch.ones(1),))

__all__ = ["ForwardFactors", "OPERATORS", "forward_factors", "mean_matvec", "network_inputs", "per_sample_matvec"]


OPERATORS = ("hessian", "ggn", "hterm")
"""The curvature matrix an operator applies, by name (the full Hessian, its G-term, or its H-term)."""


def network_inputs(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """``x`` as an ``(N, n)`` tensor in the dtype and on the device of ``weights`` (one sample may be 1-D).

    Args:
        x: The inputs, ``(N, n)`` or ``(n,)``.
        weights: The weight matrices; ``weights[0]`` gives ``n``, the dtype and the device.

    Returns:
        The detached ``(N, n)`` inputs.

    Raises:
        ValueError: when ``x`` does not have ``n`` features.
    """
    x = torch.as_tensor(x).detach().to(weights[0].dtype, copy=False)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != weights[0].shape[1]:
        raise ValueError(f"x must have shape (N, {weights[0].shape[1]}), got {tuple(x.shape)}")
    return x.to(weights[0].device)


@dataclass(frozen=True)
class ForwardFactors:
    r"""The layer factors of every sample: the G-term's pieces and the loss gradients (index 0 is the sample).

    The network is :math:`x^{(1)} = x`, :math:`z^{(p)} = W^{(p)} x^{(p)}`, :math:`x^{(p+1)} = \sigma(z^{(p)})`,
    logits :math:`z = z^{(L)}`, with :math:`n_p` the width of :math:`x^{(p)}` and :math:`n_{L+1} = K`.

    Attributes:
        activations: ``activations[p-1]`` is :math:`x^{(p)}`, ``(N, n_p)``, for :math:`p = 1, \dots, L`.
        masks: ``masks[p-1]`` is the diagonal of :math:`D^{(p)}`, ``(N, n_{p+1})``, for
            :math:`p = 1, \dots, L-1`.
        jacobians: ``jacobians[p-1]`` is :math:`G^{(p)} = \partial z / \partial z^{(p)}`, ``(N, K, n_{p+1})``,
            for :math:`p = 1, \dots, L` (:math:`G^{(L)} = I_K`).
        logits: The ``(N, K)`` logits :math:`z`.
        probs: The ``(N, K)`` probabilities :math:`p = \operatorname{softmax}(z)`.
    """

    activations: list[torch.Tensor]
    masks: list[torch.Tensor]
    jacobians: list[torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor

    def jjt(self) -> torch.Tensor:
        r"""The per-sample :math:`J_i J_i^\top` (the paper's :math:`F_i F_i^\top`), no :math:`K \times P` object formed.

        .. math::

            J = [G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}]
            \quad\Longrightarrow\quad
            J J^\top = \sum_p \lVert x^{(p)} \rVert^2 \, G^{(p)} G^{(p)\top}.

        Returns:
            The ``(N, K, K)`` tensor of the matrices :math:`J_i J_i^\top`.
        """
        return sum(
            (a * a).sum(1)[:, None, None] * (g @ g.transpose(1, 2)) for g, a in zip(self.jacobians, self.activations)
        )

    def output_gradients(self, y: torch.Tensor) -> list[torch.Tensor]:
        r"""The gradients :math:`\delta^{(p)} = \partial \ell / \partial z^{(p)}` of every sample's loss, per layer.

        .. math::

            \delta^{(p)} = G^{(p)\top} (\operatorname{softmax}(z) - e_y), \qquad
            \nabla_{W^{(p)}} \ell = \delta^{(p)} x^{(p)\top}.

        Args:
            y: The ``(N,)`` labels.

        Returns:
            ``[delta^(1), ..., delta^(L)]``, ``delta^(p)`` of shape ``(N, n_{p+1})``.
        """
        residual = self.probs - F.one_hot(y.to(self.probs.device), self.probs.shape[1]).to(self.probs)
        return [torch.einsum("nk,nkj->nj", residual, g) for g in self.jacobians]


def forward_factors(model: Weights, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> ForwardFactors:
    r"""Activations, ReLU masks and :math:`G^{(p)} = \partial z / \partial z^{(p)}` of every sample, vectorised.

    .. math::

        x^{(p+1)} = \operatorname{ReLU}(W^{(p)} x^{(p)}), \qquad
        D^{(p)} = \operatorname{diag}\bigl[z^{(p)} > 0\bigr], \qquad
        G^{(L)} = I_K, \quad G^{(p)} = G^{(p+1)} W^{(p+1)} D^{(p)}.

    :math:`D^{(p)}` uses PyTorch's ReLU derivative (:math:`>`); the paper writes :math:`\ge`, which differs only
    where a pre-activation is exactly 0. The recursion is one ``(N K) x n_{p+2}`` by ``n_{p+2} x n_{p+1}``
    product per layer. Computed in ``dtype`` (float64 by default, for the bound checks;
    :func:`~lhlib.engine.per_sample.per_sample_jjt` uses the model's own dtype by default, for speed).

    Args:
        model: An :class:`lhlib.engine.models.MLP` or a sequence of weight matrices (see
            :func:`~lhlib.engine.parameters.weight_list`).
        x: The ``(N, n)`` inputs (or one ``(n,)`` sample).
        dtype: The precision of the computation.

    Returns:
        The :class:`ForwardFactors` of the ``N`` samples.

    Raises:
        ValueError: when the weights do not chain or ``x`` does not fit them.
    """
    weights = weight_list(model, dtype)
    x = network_inputs(x, weights)
    activations, masks = [x], []
    for w in weights[:-1]:
        z = activations[-1] @ w.T
        masks.append((z > 0).to(dtype))
        activations.append(torch.relu(z))
    logits = activations[-1] @ weights[-1].T
    n, k = logits.shape
    jacobians = [torch.eye(k, dtype=dtype, device=x.device).expand(n, k, k)]
    for w, mask in zip(reversed(weights[1:]), reversed(masks)):
        product = (jacobians[0].reshape(n * k, -1) @ w).view(n, k, -1)
        jacobians.insert(0, product * mask[:, None, :])
    return ForwardFactors(activations, masks, jacobians, logits, torch.softmax(logits, dim=1))


def _stack_tangents(weights, point: ForwardFactors, deltas, operator: str, v_times, v_transposed_times, emit) -> None:
    """The tangent of a bias-free Linear/ReLU stack's forward and backward recursions along a direction ``V``.

    The recursions are stated in :func:`per_sample_matvec`; ``point`` holds the activations and masks,
    ``deltas`` the :meth:`ForwardFactors.output_gradients`. ``v_times(p, rows)`` gives the rows
    ``V^(p) r``, ``v_transposed_times(p, rows)`` the rows ``V^(p)T r`` (layers counted from 0), and
    ``emit(p, delta_dot, tangent)`` receives layer ``p``'s tangent of ``delta`` and of its input (``None`` when
    there is no ``delta x_dot^T`` part: for the G-term, and for the first layer, whose input does not move) to
    form its block, per sample or summed over samples.
    """
    tangents = [None]  # the input does not move: its tangent is zero, and skipping it saves the widest products
    for p, w in enumerate(weights):
        z_dot = v_times(p, point.activations[p])
        if p:
            z_dot = z_dot + tangents[p] @ w.T
        if p < len(weights) - 1:
            tangents.append(z_dot * point.masks[p])
    prob = point.probs
    delta_dot = torch.zeros_like(prob) if operator == "hterm" else prob * z_dot - prob * (prob * z_dot).sum(1, True)
    for p in range(len(weights) - 1, -1, -1):
        emit(p, delta_dot, None if operator == "ggn" else tangents[p])  # None: no delta x_dot^T part
        if p:
            back = delta_dot @ weights[p]
            if operator != "ggn":
                back = back + v_transposed_times(p, deltas[p])
            delta_dot = back * point.masks[p - 1]


def _stack_matvec(weights: list[torch.Tensor], operator: str) -> Callable:
    """:func:`per_sample_matvec`'s structured path: :func:`_stack_tangents` with one direction per sample."""
    sizes = [w.numel() for w in weights]

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, point = x.shape[0], forward_factors(weights, x, dtype=x.dtype)
        deltas = None if operator == "ggn" else point.output_gradients(y)  # the G-term needs no label
        v = [piece.view(n, *w.shape) for piece, w in zip(vectors.split(sizes, dim=1), weights)]
        product = torch.empty_like(vectors)
        # Each layer's block is written straight into its columns of the result, with no concatenation.
        blocks = [piece.view(n, *w.shape) for piece, w in zip(product.split(sizes, dim=1), weights)]

        def emit(p, delta_dot, tangent):
            if tangent is None:
                torch.mul(delta_dot.unsqueeze(2), point.activations[p].unsqueeze(1), out=blocks[p])
            else:
                left = torch.stack([delta_dot, deltas[p]], 2)
                torch.bmm(left, torch.stack([point.activations[p], tangent], 1), out=blocks[p])

        _stack_tangents(
            weights,
            point,
            deltas,
            operator,
            lambda p, rows: torch.bmm(v[p], rows.unsqueeze(2)).squeeze(2),
            lambda p, rows: torch.bmm(rows.unsqueeze(1), v[p]).squeeze(1),
            emit,
        )
        return product

    return matvec


def _stack_mean_matvec(weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, operator: str) -> Callable:
    """:func:`mean_matvec`'s structured path: :func:`_stack_tangents` with one direction for all samples, the
    point's activations, masks and first-order deltas computed once.
    """
    sizes, point = [w.numel() for w in weights], forward_factors(weights, x, dtype=x.dtype)
    deltas = None if operator == "ggn" else point.output_gradients(y)  # the G-term needs no label

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        v = [piece.view(w.shape) for piece, w in zip(vector.split(sizes), weights)]
        product = torch.empty_like(vector)
        blocks = [piece.view(w.shape) for piece, w in zip(product.split(sizes), weights)]

        def emit(p, delta_dot, tangent):
            torch.mm(delta_dot.T, point.activations[p], out=blocks[p])
            if tangent is not None:
                blocks[p].addmm_(deltas[p].T, tangent)

        _stack_tangents(
            weights, point, deltas, operator, lambda p, rows: rows @ v[p].T, lambda p, rows: rows @ v[p], emit
        )
        return product.div_(x.shape[0])

    return matvec


def per_sample_matvec(
    model: nn.Module, operator: str = "hessian", batch_size: int = 128, *, method: str = "auto"
) -> Callable:
    r"""A batched product with the per-sample curvature matrices: row :math:`i` of the result is :math:`C_i v_i`.

    .. math::

        \operatorname{matvec}(V, x, y)_i = C_i V_i, \qquad
        C_i \in \bigl\{H_i,\; J_i^\top A_i J_i,\; H_i - J_i^\top A_i J_i\bigr\},

    for ``operator`` ``"hessian"``, ``"ggn"`` or ``"hterm"``. The generic path works for any model: ``vmap``
    over samples of forward-over-reverse ``jvp(grad)`` for the Hessian, of one ``jvp`` for :math:`J_i v`, then
    :math:`A_i`, then one ``vjp`` for :math:`J_i^\top` for the G-term, and for the H-term ``jvp(grad)`` of
    :math:`\sum_k r_k z_k(\theta)` with the residual :math:`r = p - e_y` held fixed, which is
    :math:`\sum_k r_k \nabla^2_\theta z_k` computed directly: the difference :math:`H_i v - J_i^\top A_i J_i v`
    would cancel in float32 where the H-term is far smaller than the G-term.
    The structured path, for an :class:`lhlib.engine.models.MLP` without biases (the paper's network), runs the
    tangent of the forward and backward recursions as batched matrix products over all samples at once: the
    same numbers without per-sample graphs (``benchmarks/bench_products.py`` times the two side by side).
    With the notation of :class:`ForwardFactors`, :math:`\delta^{(p)} = \partial \ell / \partial z^{(p)}`, the
    direction :math:`v = (V^{(1)}, \dots, V^{(L)})` and dots for tangents (ReLU's :math:`D^{(p)}` is locally
    constant),

    .. math::

        \dot x^{(1)} = 0, \quad \dot z^{(p)} = V^{(p)} x^{(p)} + W^{(p)} \dot x^{(p)}, \quad
        \dot x^{(p+1)} = D^{(p)} \dot z^{(p)}, \qquad J v = \dot z^{(L)},

        \dot\delta^{(L)} = A \dot z^{(L)}, \quad
        \dot\delta^{(p)} = D^{(p)} \bigl(W^{(p+1)\top} \dot\delta^{(p+1)} + V^{(p+1)\top} \delta^{(p+1)}\bigr),
        \qquad (H v)^{(p)} = \dot\delta^{(p)} x^{(p)\top} + \delta^{(p)} \dot x^{(p)\top};

    the G-term keeps the source :math:`A \dot z^{(L)}` alone, the H-term the rest. Vectors are flat in
    :func:`~lhlib.engine.parameters.flat_parameters` order.

    Args:
        model: The network (its parameters are captured, detached, when this is called).
        operator: One of :data:`OPERATORS`.
        batch_size: Samples per ``vmap`` call of the generic path (the structured one needs no more memory
            than a few copies of the ``(N, P)`` vectors, and takes all samples at once).
        method: ``"structured"`` (an MLP without biases only), ``"generic"`` (``torch.func``, any model) or
            ``"auto"`` (structured when it applies).

    Returns:
        The function ``matvec(V, x, y)`` taking ``(N, P)`` vectors, ``(N, n)`` inputs and ``(N,)`` labels and
        returning the ``(N, P)`` products.

    Raises:
        ValueError: when ``operator`` or ``method`` is unknown, ``batch_size`` is not a positive integer, or
            ``method="structured"`` is asked of a model that is not a bias-free :class:`lhlib.engine.models.MLP`.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    check_choice("method", method, METHODS)
    weights = linear_relu_weights(model) if method != "generic" else None
    if method == "structured" and weights is None:
        raise ValueError("method='structured' needs an lhlib MLP without biases; use method='generic' or 'auto'")
    if weights is not None:
        return _stack_matvec([w.detach() for w in weights], operator)
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
        # sum_k r_k grad^2 z_k with r = p - e_y held fixed: computed directly, not as the difference H v - G v,
        # which cancels in float32 when the H-term is far smaller than the G-term (well-fitted samples).
        z = logits_of(params, xi)
        residual = torch.softmax(z, dim=0) - (torch.arange(z.shape[0], device=z.device) == yi).to(z.dtype)
        return jvp(lambda p: grad(lambda q: (residual * logits_of(q, xi)).sum())(p), (params,), (v,))[1]

    single = {"hessian": hvp, "ggn": gvp, "hterm": htv}[operator]
    batched = vmap(single, in_dims=(0, 0, 0))

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = [flatten(batched(unflatten(vectors[s]), x[s], y[s]), 1) for s in _chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    return matvec


def _autograd_mean_matvec(model: nn.Module, x, y, operator: str, batch_size: int) -> Callable:
    """:func:`mean_matvec`'s generic path: one stored graph per chunk, products by backward passes through them."""
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
            if operator == "hessian":
                loss = F.cross_entropy(logits, y[s], reduction="sum")
                chunk["grad"] = torch.autograd.grad(loss, leaf_list, create_graph=True)
            elif operator == "hterm":
                # sum_k r_k z_k with the residual r = p - e_y held fixed: its Hessian is the H-term, computed
                # directly rather than as H v - G v, which cancels in float32 (as in per_sample_matvec).
                residual = torch.softmax(logits.detach(), dim=1) - F.one_hot(y[s], logits.shape[1]).to(logits)
                chunk["grad"] = torch.autograd.grad((residual * logits).sum(), leaf_list, create_graph=True)
            else:
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
            if operator == "ggn":
                total += flatten(dict(zip(names, ggn_part(chunk, v_list))), 0)
            else:
                hv = torch.autograd.grad(chunk["grad"], leaf_list, grad_outputs=v_list, retain_graph=True)
                total += flatten(dict(zip(names, hv)), 0)
        return total / n

    return matvec


def mean_matvec(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    operator: str = "hessian",
    batch_size: int = 4096,
    *,
    method: str = "auto",
) -> Callable:
    r"""The product with the averaged Hessian, G-term or H-term of the loss on ``(x, y)``.

    .. math::

        \operatorname{matvec}(v) = \frac{1}{N} \sum_{i=1}^{N} C_i v, \qquad
        C_i \in \bigl\{H_i,\; J_i^\top A_i J_i,\; H_i - J_i^\top A_i J_i\bigr\}.

    The generic path (any model) builds the forward pass and the differentiable gradient (Hessian; for the
    H-term, of :math:`\sum_k r_k z_k` with the residual :math:`r = p - e_y` held fixed) or transposed-Jacobian
    product (G-term, the double-vjp trick) once per chunk of ``batch_size`` samples and keeps
    them, so every product afterwards costs only backward passes through the stored graphs (memory: the
    activations of all samples, twice). The structured path, for a bias-free Linear/ReLU stack (recognised by
    :func:`~lhlib.engine.parameters.linear_relu_weights` on the first 64 samples), keeps the activations, ReLU masks
    and loss gradients
    with respect to every layer's output, and forms each product from the tangent of the forward and
    backward recursions (:func:`per_sample_matvec` states them) as a few matrix products over all samples.

    Args:
        model: The network (its parameters are captured, detached, when this is called).
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels (needed for the Hessian and the H-term).
        operator: One of :data:`OPERATORS`.
        batch_size: Samples per stored graph (the generic path).
        method: ``"structured"`` (a bias-free Linear/ReLU stack only), ``"generic"`` (``torch.autograd``, any
            model) or ``"auto"`` (structured when it applies).

    Returns:
        The function ``matvec(v)`` mapping a flat ``(P,)`` vector to the ``(P,)`` product.

    Raises:
        ValueError: when ``operator`` or ``method`` is unknown, ``batch_size`` is not a positive integer, ``x``
            or ``y`` has the wrong shape, or ``method="structured"`` is asked of a model that is not a bias-free
            Linear/ReLU stack.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    check_choice("method", method, METHODS)
    _check_data(x, y)
    weights = linear_relu_weights(model, x[:64]) if method != "generic" else None
    if method == "structured" and weights is None:
        raise ValueError(
            "method='structured' needs a bias-free Linear/ReLU stack (see linear_relu_weights); "
            "use method='generic' or 'auto' for other models"
        )
    if weights is not None:
        return _stack_mean_matvec([w.detach() for w in weights], x, y, operator)
    return _autograd_mean_matvec(model, x, y, operator, batch_size)
