"""The engine's per-sample and spectral methods against dense ground truth (torch.func.hessian + eigvalsh,
float64) and curvlinops."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from lhlib.chapters import ch03_hessian_in_practice as hip
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


def _problem(seed: int = 3, n: int = 7, input_dim: int = 6, hidden: int = 8, num_layers: int = 2, classes: int = 4):
    model = build_mlp(input_dim, hidden, num_layers, classes, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, input_dim, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=generator)
    return model, x, y


def _dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Per-sample dense Hessians and G-terms (P x P) by torch.func, in float64."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)
    flat0 = torch.cat([params[k].reshape(-1) for k in names])
    sizes = [params[k].numel() for k in names]

    def unflat(flat):
        return {k: piece.reshape(params[k].shape) for k, piece in zip(names, flat.split(sizes))}

    hessians, ggns = [], []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        hessians.append(
            hessian(lambda f, xi=xi, yi=yi: F.cross_entropy(functional_call(model, unflat(f), (xi,)), yi))(flat0)
        )
        jac = jacrev(lambda f, xi=xi: functional_call(model, unflat(f), (xi,))[0])(flat0)
        p = torch.softmax(functional_call(model, params, (xi,))[0], 0)
        ggns.append(jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac)
    return torch.stack(hessians), torch.stack(ggns)


def _norm(matrices: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(matrices).abs().amax(-1)


@pytest.fixture(scope="module")
def problem():
    model, x, y = _problem()
    dense_h, dense_g = _dense(model, x, y)
    return model, x, y, dense_h, dense_g


def test_ggn_norms_match_dense_mlp_and_generic(problem):
    model, x, y, _, dense_g = problem
    expected = _norm(dense_g)
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
    dense_h, dense_g = _dense(model, x, y)
    torch.testing.assert_close(per_sample_ggn_norms(model, x), _norm(dense_g), rtol=RTOL, atol=0)
    result = per_sample_hessian_norms(model, x, y, tol=1e-10, max_iter=150)
    assert bool(result.converged.all())
    torch.testing.assert_close(result.norms, _norm(dense_h), rtol=RTOL, atol=0)


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
    model, x, y = _problem(seed=5, n=5, hidden=3, num_layers=0, classes=3)  # two weight matrices
    dense_h, dense_g = _dense(model, x, y)
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
    dense_h, dense_g = _dense(linear, x, y)
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
        expected = [float(_norm(dense[k] - dense[:k].mean(0))) for k in (1, 3, 6)]
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
    torch.testing.assert_close(per_sample_ggn_norms(model, x), _norm(ggn), rtol=RTOL, atol=0)
    result = per_sample_hessian_norms(model, x, y, tol=1e-10, max_iter=200)
    torch.testing.assert_close(result.norms, _norm(hes), rtol=RTOL, atol=0)


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


def test_curvature_measurements_and_cache(problem):
    model, x, y, dense_h, dense_g = problem
    first = hip.curvature_measurements(
        model, x, y, full_samples=3, extreme_samples=2, top_k=2, tol=1e-10, max_iter=200, eig_tol=1e-12, seed=0
    )
    assert not first.from_cache and first.random_count == 3 and first.full_index.numel() == 5
    torch.testing.assert_close(first.ggn_norms, _norm(dense_g), rtol=RTOL, atol=0)
    rest = [i for i in range(len(x)) if i not in first.full_index[:3].tolist()]
    largest = sorted(rest, key=lambda i: -float(_norm(dense_g[i : i + 1])))[:2]
    assert sorted(first.full_index[3:].tolist()) == sorted(largest)
    index = first.full_index
    torch.testing.assert_close(first.hessian["norms"], _norm(dense_h[index]), rtol=RTOL, atol=0)
    torch.testing.assert_close(first.hterm["norms"], _norm((dense_h - dense_g)[index]), rtol=RTOL, atol=0)
    assert first.top_hessian == pytest.approx(torch.linalg.eigvalsh(dense_h.mean(0)).flip(0)[:2].numpy(), rel=RTOL)
    again = hip.curvature_measurements(
        model, x, y, full_samples=3, extreme_samples=2, top_k=2, tol=1e-10, max_iter=200, eig_tol=1e-12, seed=0
    )
    assert again.from_cache
    torch.testing.assert_close(again.hessian["norms"], first.hessian["norms"])


def test_theorem1_checks_fields_and_validity(problem):
    model, x, _, dense_h, dense_g = problem
    ggn = _norm(dense_g)
    index = torch.arange(len(x))
    checks = hip.theorem1_checks(model, x, ggn, index, _norm(dense_h))
    assert set(checks) == set(hip.BOUND_FORMS)
    for form, check in checks.items():
        assert check["held_ggn"] == (check["violations_ggn"] == 0)
        assert check["held_ggn"] == (check["tightness_ggn"] >= 1 - 1e-5), form
    for form in ("corrected", "corrected_per_sample", "activation_per_sample"):  # valid bounds on the G-term
        assert checks[form]["held_ggn"]
    # A bound far below the measurements is reported as violated, not hidden.
    fake = hip.theorem1_checks(model, x, ggn * 1e12, index, _norm(dense_h) * 1e12)
    assert not fake["paper"]["held_ggn"] and fake["paper"]["violations_ggn"] == len(x)
    # Samples with zero curvature hold trivially and do not enter the ratios.
    zero = ggn.clone()
    zero[0] = 0
    assert torch.isfinite(
        torch.tensor(hip.theorem1_checks(model, x, zero, index, _norm(dense_h))["paper"]["median_ratio_ggn"])
    )


def test_quantile_summary():
    summary = hip.quantile_summary(torch.arange(101.0))
    assert summary == {"count": 101, "min": 0.0, "max": 100.0, "mean": 50.0, "q50": 50.0, "q90": 90.0, "q99": 99.0}
    assert hip.quantile_summary(torch.zeros(0)) == {"count": 0}


def test_a_damaged_curvature_entry_is_recomputed_to_the_same_numbers(problem, capsys):
    from lhlib.engine.store import cache_root

    model, x, y, _, _ = problem
    settings = {"full_samples": 3, "extreme_samples": 1, "top_k": 1, "tol": 1e-10, "max_iter": 200, "seed": 5}
    first = hip.curvature_measurements(model, x, y, **settings)
    entry = max((cache_root() / "store" / "curvature_measurements").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x10
    entry.write_bytes(bytes(data))
    capsys.readouterr()
    again = hip.curvature_measurements(model, x, y, **settings)
    assert not again.from_cache and "discarded the stored curvature_measurements entry" in capsys.readouterr().err
    torch.testing.assert_close(again.hessian["norms"], first.hessian["norms"], rtol=0, atol=0)
    torch.testing.assert_close(again.ggn_norms, first.ggn_norms, rtol=0, atol=0)


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
