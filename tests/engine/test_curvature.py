"""The engine's per-sample and spectral methods against dense ground truth (torch.func.hessian + eigvalsh,
float64) and curvlinops."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import dense_hessians, dense_problem, spectral_norms
from torch import nn

from lhlib.engine import per_sample, tangents
from lhlib.engine.models import build_mlp
from lhlib.engine.parameters import computation_paths
from lhlib.engine.per_sample import (
    lemma_difference_norms,
    per_sample_ggn_norms,
    per_sample_ggn_small,
    per_sample_ggn_traces,
    per_sample_jjt,
)
from lhlib.engine.spectral import dataset_hessian_top_eigenvalues, per_sample_hessian_norms
from lhlib.engine.tangents import _stack_matvec, _stack_mean_matvec, mean_matvec, per_sample_matvec

RTOL = 1e-6


def test_ggn_norms_match_dense_mlp_and_generic(problem):
    model, x, y, _, dense_g = problem
    expected = spectral_norms(dense_g)
    assert bool((expected > 1e-3).all())
    torch.testing.assert_close(per_sample_ggn_norms(model, x, method="structured"), expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(per_sample_ggn_norms(model, x, method="generic"), expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(per_sample_ggn_norms(model, x, batch_size=3), expected, rtol=RTOL, atol=0)


def test_ggn_small_spectrum_is_nonzero_spectrum_of_g_term(problem):
    model, x, _, _, dense_g = problem
    small = torch.linalg.eigvalsh(per_sample_ggn_small(model, x))
    top = torch.linalg.eigvalsh(dense_g)[:, -small.shape[1] :]
    torch.testing.assert_close(small, top, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(
        per_sample_ggn_traces(model, x), dense_g.diagonal(dim1=1, dim2=2).sum(1), rtol=RTOL, atol=0
    )


def test_mlp_layer_factors_are_the_papers_F(problem):
    from lhlib.engine.tangents import forward_factors

    model, x, _, _, _ = problem
    factors = forward_factors(model, x, dtype=x.dtype)
    torch.testing.assert_close(factors.logits, model(x))
    assert len(factors.jacobians) == model.weight_matrices
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: model(xi[None])[0]))(x)  # dz/dx = G^(1) W^(1)
    torch.testing.assert_close(factors.jacobians[0] @ model.weights()[0], jac)
    ntk, _ = per_sample_jjt(model, x, method="structured")
    generic, _ = per_sample_jjt(model, x, method="generic")
    torch.testing.assert_close(ntk, generic)


def test_generic_path_on_another_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1])
    dense_h, dense_g = dense_hessians(model, x, y)
    torch.testing.assert_close(per_sample_ggn_norms(model, x), spectral_norms(dense_g), rtol=RTOL, atol=0)
    result = per_sample_hessian_norms(model, x, y, tol=1e-10, max_iter=150)
    assert bool(result.converged.all())
    torch.testing.assert_close(result.norms, spectral_norms(dense_h), rtol=RTOL, atol=0)


@pytest.mark.parametrize("operator", ["hessian", "ggn", "hterm"])
def test_per_sample_products_match_dense_on_both_paths(problem, operator):
    model, x, y, dense_h, dense_g = problem
    dense = {"hessian": dense_h, "ggn": dense_g, "hterm": dense_h - dense_g}[operator]
    v = torch.randn(x.shape[0], dense.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.einsum("npq,nq->np", dense, v)
    for method in ("structured", "generic"):
        got = per_sample_matvec(model, operator, batch_size=3, method=method)(v, x, y)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_structured_products_cover_the_shallowest_stack():
    model, x, y = dense_problem(seed=5, n=5, hidden=3, num_layers=0, classes=3)  # two weight matrices
    dense_h, dense_g = dense_hessians(model, x, y)
    v = torch.randn(x.shape[0], dense_h.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for operator, dense in (("hessian", dense_h), ("ggn", dense_g), ("hterm", dense_h - dense_g)):
        got = per_sample_matvec(model, operator, method="structured")(v, x, y)
        torch.testing.assert_close(got, torch.einsum("npq,nq->np", dense, v), rtol=1e-10, atol=1e-12)


def test_auto_products_take_the_structured_path_for_the_mlp_only(problem, monkeypatch):
    model, x, y, _, _ = problem
    calls = []
    original = _stack_matvec
    monkeypatch.setattr(tangents, "_stack_matvec", lambda *a: calls.append(a) or original(*a))
    per_sample_matvec(model)
    assert len(calls) == 1
    per_sample_matvec(nn.Sequential(nn.Linear(6, 4, bias=False)).double())
    per_sample_matvec(model, method="generic")
    assert len(calls) == 1


@pytest.mark.parametrize("method", ["structured", "generic"])
@pytest.mark.parametrize("operator", ["hessian", "ggn", "hterm"])
def test_lanczos_norms_match_dense(problem, operator, method):
    model, x, y, dense_h, dense_g = problem
    dense = {"hessian": dense_h, "ggn": dense_g, "hterm": dense_h - dense_g}[operator]
    result = per_sample_hessian_norms(model, x, y, operator=operator, tol=1e-10, max_iter=200, seed=1, method=method)
    assert bool(result.converged.all())
    eigenvalues = torch.linalg.eigvalsh(dense)
    torch.testing.assert_close(result.norms, eigenvalues.abs().amax(-1), rtol=RTOL, atol=0)
    if operator != "ggn":  # the G-term's smallest eigenvalue is 0, tested in absolute terms below
        torch.testing.assert_close(result.lambda_min, eigenvalues[:, 0], rtol=RTOL, atol=0)
    torch.testing.assert_close(result.lambda_max, eigenvalues[:, -1], rtol=RTOL, atol=1e-12)


def test_lanczos_reports_non_convergence(problem):
    model, x, y, _, _ = problem
    result = per_sample_hessian_norms(model, x, y, max_iter=2, tol=1e-12)
    assert not bool(result.converged.any())
    assert bool((result.iterations == 2).all())


def test_h_term_of_a_relu_mlp_is_traceless(problem):
    """tr H = tr G for a ReLU network (its H-term has zero trace), and the per-sample G-term traces give it."""
    model, x, y, dense_h, dense_g = problem
    exact = float(dense_g.diagonal(dim1=1, dim2=2).sum(1).mean())
    assert float(dense_h.diagonal(dim1=1, dim2=2).sum(1).mean()) == pytest.approx(exact, rel=1e-10)
    assert float(per_sample_ggn_traces(model, x).mean()) == pytest.approx(exact, rel=RTOL)


def test_dataset_top_eigenvalues_match_dense(problem):
    model, x, y, dense_h, dense_g = problem
    top = dataset_hessian_top_eigenvalues(model, x, y, k=3, tol=1e-12, batch_size=3)
    expected_h = torch.linalg.eigvalsh(dense_h.mean(0)).flip(0)[:3].numpy()
    expected_g = torch.linalg.eigvalsh(dense_g.mean(0)).flip(0)[:3].numpy()
    assert top.hessian == pytest.approx(expected_h, rel=RTOL)
    assert top.ggn == pytest.approx(expected_g, rel=RTOL)


@pytest.mark.parametrize("method", ["structured", "generic"])
@pytest.mark.parametrize("operator", ["hessian", "ggn", "hterm"])
def test_mean_matvec_matches_dense(problem, operator, method):
    model, x, y, dense_h, dense_g = problem
    dense = {"hessian": dense_h, "ggn": dense_g, "hterm": dense_h - dense_g}[operator].mean(0)
    v = torch.randn(dense.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        mean_matvec(model, x, y, operator, batch_size=2, method=method)(v), dense @ v, rtol=1e-10, atol=1e-12
    )


def test_structured_g_term_needs_no_labels_and_one_layer_works(problem):
    model, x, y, _, dense_g = problem
    v = torch.randn(dense_g.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mean_matvec(model, x, None, "ggn", method="structured")(v), dense_g.mean(0) @ v)
    vectors = v.expand(x.shape[0], -1).contiguous()
    got = per_sample_matvec(model, "ggn", method="structured")(vectors, x, None)
    torch.testing.assert_close(got, torch.einsum("npq,q->np", dense_g, v))
    linear = nn.Sequential(nn.Linear(6, 4, bias=False)).double()  # one weight matrix: no hidden layer
    dense_h, dense_g = dense_hessians(linear, x, y)
    w = torch.randn(dense_h.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for operator, dense in (("hessian", dense_h), ("ggn", dense_g), ("hterm", dense_h - dense_g)):
        got = mean_matvec(linear, x, y, operator, method="structured")(w)
        torch.testing.assert_close(got, dense.mean(0) @ w, rtol=1e-10, atol=1e-12)


def test_mean_matvec_recognises_a_stack_in_any_class(problem, monkeypatch):
    model, x, y, _, _ = problem
    stack = nn.Sequential(*[layer for linear in model.linears for layer in (linear, nn.ReLU())][:-1])
    calls = []
    original = _stack_mean_matvec
    monkeypatch.setattr(tangents, "_stack_mean_matvec", lambda *a: calls.append(a) or original(*a))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    torch.testing.assert_close(mean_matvec(stack, x, y)(v), mean_matvec(model, x, y, method="generic")(v))
    assert len(calls) == 1
    mean_matvec(nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double(), x, y)
    assert len(calls) == 1


def test_lemma_difference_norms_match_dense(problem):
    model, x, y, dense_h, dense_g = problem
    for operator, dense in (("hessian", dense_h), ("ggn", dense_g)):
        got = lemma_difference_norms(model, x, y, [1, 3, 6], operator=operator, tol=1e-12)
        expected = [float(spectral_norms(dense[k] - dense[:k].mean(0))) for k in (1, 3, 6)]
        assert got == pytest.approx(expected, rel=RTOL)


def test_float32_fast_path_agrees_with_float64():
    model = build_mlp(784, 16, 3, 10, seed=0)
    x = torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fast = per_sample_ggn_norms(model, x)
    assert fast.dtype == torch.float32 and fast.shape == (300,)
    torch.testing.assert_close(fast.double(), per_sample_ggn_norms(model.double(), x.double()), rtol=1e-4, atol=0)


def test_validation_errors(problem):
    model, x, y, _, _ = problem
    with pytest.raises(ValueError, match="operator"):
        per_sample_hessian_norms(model, x, y, operator="fisher")
    with pytest.raises(ValueError, match="method"):
        per_sample_ggn_norms(model, x, method="dense")
    with pytest.raises(ValueError, match="method"):
        per_sample_matvec(model, method="dense")
    with pytest.raises(ValueError, match="method='structured' needs"):
        per_sample_matvec(nn.Sequential(nn.Linear(6, 4)).double(), method="structured")
    with pytest.raises(ValueError, match="method='structured' needs"):
        mean_matvec(nn.Sequential(nn.Linear(6, 4)).double(), x, y, method="structured")
    with pytest.raises(ValueError, match="method"):
        mean_matvec(model, x, y, method="dense")
    with pytest.raises(ValueError, match="x must"):
        per_sample_ggn_norms(model, x[0])
    with pytest.raises(ValueError, match="y must"):
        per_sample_hessian_norms(model, x, y[:2])
    with pytest.raises(ValueError, match="k must"):
        dataset_hessian_top_eigenvalues(model, x, y, k=0)
    with pytest.raises(ValueError, match="ks"):
        lemma_difference_norms(model, x, y, [x.shape[0]])


# ---- against an independent implementation: curvlinops ------------------------------------------

curvlinops = pytest.importorskip("curvlinops")


def _curvlinops_dense(model, x, y, cls):
    op = cls(model, nn.CrossEntropyLoss(), list(model.parameters()), [(x, y)], check_deterministic=False)
    return op @ torch.eye(op.shape[1], dtype=torch.float64)


def test_per_sample_norms_match_curvlinops(problem):
    model, x, y, _, _ = problem
    ggn = torch.stack(
        [_curvlinops_dense(model, x[i : i + 1], y[i : i + 1], curvlinops.GGNLinearOperator) for i in range(len(x))]
    )
    hes = torch.stack(
        [_curvlinops_dense(model, x[i : i + 1], y[i : i + 1], curvlinops.HessianLinearOperator) for i in range(len(x))]
    )
    torch.testing.assert_close(per_sample_ggn_norms(model, x), spectral_norms(ggn), rtol=RTOL, atol=0)
    result = per_sample_hessian_norms(model, x, y, tol=1e-10, max_iter=200)
    torch.testing.assert_close(result.norms, spectral_norms(hes), rtol=RTOL, atol=0)


def test_dataset_eigenvalues_and_trace_match_curvlinops(problem):
    model, x, y, _, _ = problem
    ggn = _curvlinops_dense(model, x, y, curvlinops.GGNLinearOperator)
    hes = _curvlinops_dense(model, x, y, curvlinops.HessianLinearOperator)
    top = dataset_hessian_top_eigenvalues(model, x, y, k=2, tol=1e-12)
    assert top.hessian == pytest.approx(torch.linalg.eigvalsh(hes).flip(0)[:2].numpy(), rel=RTOL)
    assert top.ggn == pytest.approx(torch.linalg.eigvalsh(ggn).flip(0)[:2].numpy(), rel=RTOL)
    ggn_trace = float(per_sample_ggn_traces(model, x).mean())
    assert ggn_trace == pytest.approx(float(ggn.trace()), rel=RTOL)
    assert ggn_trace == pytest.approx(float(hes.trace()), rel=RTOL)


# ---- the chapter-03 helpers ---------------------------------------------------------------------


def test_float32_h_term_products_do_not_cancel():
    # Large inputs make the G-term about 60 times the H-term on these samples: H v - G v in float32 then
    # loses about 1.5e-3 of the H-term (the generic path's old formula); the direct forms keep ~3e-5.
    model = build_mlp(6, 8, 2, 4, seed=3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, generator=generator) * 2000
    y = torch.randint(0, 4, (7,), generator=generator)
    v = torch.randn(7, sum(p.numel() for p in model.parameters()), generator=generator)
    exact = per_sample_matvec(copy.deepcopy(model).double(), "hterm")(v.double(), x.double(), y)
    for method in ("structured", "generic"):
        got = per_sample_matvec(model, "hterm", method=method)(v, x, y).double()
        assert float(((got - exact).norm(dim=1) / exact.norm(dim=1)).max()) < 2e-4


def test_computation_paths_name_the_path_auto_takes(problem, monkeypatch):
    """What ``computation_paths`` reports is what runs: counted on the structured functions themselves."""
    model, x, y, _, _ = problem
    stack = nn.Sequential(*[layer for linear in model.linears for layer in (linear, nn.ReLU())][:-1])
    with_biases = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    calls = {"per_sample_jjt": 0, "mean_matvec": 0, "per_sample_matvec": 0}
    for family, module, name in (
        ("per_sample_jjt", per_sample, "forward_factors"),
        ("mean_matvec", tangents, "_stack_mean_matvec"),
        ("per_sample_matvec", tangents, "_stack_matvec"),
    ):
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _o=original, _f=family, **k: calls.__setitem__(_f, calls[_f] + 1) or _o(*a, **k)
        )
    for network in (model, stack, with_biases, [w.detach() for w in model.weights()]):
        paths = computation_paths(network, x)
        before = dict(calls)
        per_sample_ggn_norms(network, x)
        if isinstance(network, nn.Module):
            mean_matvec(network, x, y)
            per_sample_matvec(network)
        ran = {family: "structured" if calls[family] > before[family] else "generic" for family in calls}
        expected = paths if isinstance(network, nn.Module) else {"per_sample_jjt": "structured"}
        assert {f: ran[f] for f in expected} == {f: paths[f] for f in expected}, (network, paths, ran)
    assert computation_paths(model, x) == dict.fromkeys(calls, "structured")
    assert computation_paths(stack, x) == {"per_sample_jjt": "structured", "mean_matvec": "structured",
                                              "per_sample_matvec": "generic"}  # fmt: skip
    assert set(computation_paths(with_biases, x).values()) == {"generic"}
    with pytest.raises(ValueError, match="x must"):
        computation_paths(model, x[0])
