"""The CNN and ViT families, the generic curvature engine on them, the structured path for any
bias-free Linear/ReLU stack, and the product-of-layer-norms bound: each against dense ground truth."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from lhlib.engine.architecture_bounds import (
    jjt_scaling_exponents,
    layer_norm_bound_per_sample,
    layer_operator_norms,
    linear_maps,
    patch_overlaps,
)
from lhlib.engine.architectures import ConvNet, VisionTransformer, build_network, weight_layers
from lhlib.engine.bounds import corrected_bound_per_sample
from lhlib.engine.parameters import flat_parameters, linear_relu_weights, unflatten
from lhlib.engine.per_sample import per_sample_ggn_norms, per_sample_jjt
from lhlib.engine.spectral import per_sample_hessian_norms

IMAGE = (1, 8, 8)
FAMILY_MODELS = [("mlp", 5, 1), ("cnn", 3, 2), ("vit", 4, 1)]


def tiny(family, width, depth, seed=0, classes=3):
    return build_network(family, IMAGE, width, depth, classes, seed).double()


def dense_per_sample(model, x, y):
    """Dense ``J_i^T A_i J_i`` and ``H_i`` of every sample, from ``jacrev`` and reverse-over-reverse autograd
    of a flat vector. (``torch.func.hessian``, forward over reverse on the flat vector, returns a
    non-symmetric matrix for the ViT in torch 2.14: it is not used as ground truth.)"""
    theta = flat_parameters(model).double()

    def logits(flat, xi):
        return functional_call(model, unflatten(model, flat), (xi[None],))[0]

    ggn, full = [], []
    for xi, yi in zip(x, y):
        jac = jacrev(logits)(theta, xi)
        p = torch.softmax(logits(theta, xi), 0)
        ggn.append(jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac)
        full.append(
            torch.autograd.functional.hessian(
                lambda flat, xi=xi, yi=yi: F.cross_entropy(logits(flat, xi)[None], yi[None]), theta
            )
        )
    return torch.stack(ggn), torch.stack(full)


@pytest.mark.parametrize(("family", "width", "depth"), FAMILY_MODELS)
def test_families_map_flat_images_to_logits_and_keep_the_global_random_state(family, width, depth):
    state = torch.random.get_rng_state()
    model = build_network(family, IMAGE, width, depth, 3, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = build_network(family, IMAGE, width, depth, 3, seed=4)
    assert torch.equal(flat_parameters(model), flat_parameters(again))
    assert not torch.equal(flat_parameters(model), flat_parameters(build_network(family, IMAGE, width, depth, 3, 5)))
    assert model(torch.randn(7, 64)).shape == (7, 3)


def test_family_shapes_and_bad_arguments():
    cnn = ConvNet((1, 28, 28), 4, 2, 10)
    assert cnn.feature_shape == (4, 7, 7) and weight_layers(cnn) == 3
    assert all(conv.bias is None for conv in cnn.convs) and cnn.head.bias is None
    vit = VisionTransformer((3, 32, 32), 8, 1, 10)
    assert vit.patch_size == 8 and vit.position.shape == (16, 8)
    with pytest.raises(ValueError, match="family must be one of"):
        build_network("rnn", IMAGE, 4, 1, 3, 0)
    with pytest.raises(ValueError, match="width must be a multiple of heads"):
        VisionTransformer(IMAGE, 5, 1, 3)
    with pytest.raises(ValueError, match="grid must divide"):
        VisionTransformer((1, 9, 9), 4, 1, 3)
    with pytest.raises(ValueError, match="image_shape must be"):
        ConvNet((28, 28), 4, 1, 10)


@pytest.mark.parametrize(("family", "width", "depth"), FAMILY_MODELS)
def test_generic_engine_matches_dense_ggn_and_full_hessian(family, width, depth):
    model = tiny(family, width, depth)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 64, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=generator)
    dense_ggn, dense_full = dense_per_sample(model, x, y)
    expected_ggn = torch.linalg.eigvalsh(dense_ggn)[:, -1]
    torch.testing.assert_close(per_sample_ggn_norms(model, x, method="generic"), expected_ggn, rtol=1e-9, atol=1e-12)
    expected_full = torch.linalg.eigvalsh(dense_full).abs().amax(1)
    norms = per_sample_hessian_norms(model, x, y, tol=1e-8, max_iter=flat_parameters(model).numel())
    torch.testing.assert_close(norms.norms, expected_full, rtol=1e-6, atol=1e-10)


def authors_style_network(widths):
    """A network class written the way the authors write theirs: a ModuleList, ReLU in forward."""

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths))

        def forward(self, x):
            for layer in self.layers[:-1]:
                x = F.relu(layer(x))
            return self.layers[-1](x)

    return Network()


def sequential(widths, activation=nn.ReLU, bias=False):
    layers = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b, bias=bias), activation()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize(
    "build", [lambda w: sequential(w), authors_style_network, lambda w: nn.Sequential(nn.Flatten(), sequential(w))]
)
def test_structured_path_recognises_any_bias_free_linear_relu_stack(build):
    torch.manual_seed(0)
    widths = [64, 6, 5, 3]
    model = build(widths).double()
    x = torch.randn(9, 64, dtype=torch.float64)
    weights = linear_relu_weights(model, x)
    assert weights is not None and [tuple(w.shape) for w in weights] == [(6, 64), (5, 6), (3, 5)]
    structured, logits = per_sample_jjt(model, x, method="structured")
    generic, generic_logits = per_sample_jjt(model, x, method="generic")
    torch.testing.assert_close(structured, generic, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logits, generic_logits)


@pytest.mark.parametrize(
    "model",
    [
        sequential([64, 6, 3], activation=nn.Tanh),  # not ReLU
        sequential([64, 6, 3], bias=True),  # biases
        nn.Sequential(nn.Linear(64, 6, bias=False), nn.Linear(6, 3, bias=False)),  # no ReLU: forward differs
        nn.Sequential(nn.Linear(64, 6, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)),  # shapes do not chain
    ],
)
def test_structured_path_refuses_other_networks(model):
    x = torch.randn(4, 64)
    assert linear_relu_weights(model, x) is None
    with pytest.raises(ValueError, match="method='structured' needs a bias-free Linear/ReLU stack"):
        per_sample_jjt(model, x, method="structured")


def test_structured_path_refuses_a_forward_that_ignores_its_modules():
    class Reversed(nn.Module):  # registers a Linear/ReLU stack but applies abs instead of ReLU
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 6, bias=False), nn.Linear(6, 3, bias=False)

        def forward(self, x):
            return self.b(self.a(x).abs())

    assert linear_relu_weights(Reversed(), torch.randn(4, 64)) is None


@pytest.mark.parametrize("image", [(1, 28, 28), (3, 9, 9)])
def test_linear_maps_report_the_shapes_the_layers_see_and_the_overlap_of_their_patches(image):
    model = ConvNet(image, 3, 3, 4).double()
    seen = []
    hooks = [
        layer.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape[1:])))
        for layer, _ in linear_maps(model)
    ]
    model(torch.randn(2, torch.Size(image).numel(), dtype=torch.float64))
    for hook in hooks:
        hook.remove()
    assert [shape for _, shape in linear_maps(model)] == seen
    # c_p is the largest number of patches containing one input entry (counted by folding ones).
    for (layer, shape), overlap in zip(linear_maps(model), patch_overlaps(model)):
        if isinstance(layer, nn.Conv2d):
            patches = F.unfold(torch.ones(1, *shape), 3, padding=1, stride=2)
            counts = F.fold(patches, shape[1:], 3, padding=1, stride=2)
            assert float(counts.max()) == overlap == 4.0
        else:
            assert overlap == 1.0


def test_conv_operator_norms_match_the_dense_jacobian_of_the_map():
    model = tiny("cnn", 3, 2)
    for (layer, shape), norm in zip(linear_maps(model), layer_operator_norms(model)):

        def apply(v, layer=layer, shape=shape):
            return layer(v.reshape(1, *shape)).reshape(-1)

        matrix = torch.autograd.functional.jacobian(apply, torch.zeros(torch.Size(shape).numel(), dtype=torch.float64))
        torch.testing.assert_close(norm, torch.linalg.matrix_norm(matrix, ord=2), rtol=1e-10, atol=0)
    assert patch_overlaps(model).tolist() == [4.0, 4.0, 1.0]


def test_layer_norm_bound_holds_for_random_cnns_and_is_the_corrected_theorem_for_the_mlp():
    generator = torch.Generator().manual_seed(3)
    for seed in range(12):
        model = tiny("cnn", 2 + seed % 3, 1 + seed % 3, seed=seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(float(torch.empty(()).uniform_(0.5, 4.0, generator=generator)))
        x = 3 * torch.randn(20, 64, generator=generator, dtype=torch.float64)
        assert (per_sample_ggn_norms(model, x) <= layer_norm_bound_per_sample(model, x) * (1 + 1e-12)).all()
    mlp = tiny("mlp", 5, 2)
    x = torch.randn(6, 64, dtype=torch.float64)
    torch.testing.assert_close(layer_norm_bound_per_sample(mlp, x), corrected_bound_per_sample(mlp, x))
    with pytest.raises(ValueError, match="model must be an lhlib MLP or ConvNet"):
        layer_norm_bound_per_sample(tiny("vit", 4, 1), x)


def test_scaling_exponent_is_two_l_minus_two_for_relu_networks_only():
    x = torch.randn(12, 64, dtype=torch.float64)
    for family, width, depth in FAMILY_MODELS[:2]:
        model = tiny(family, width, depth)
        exponents = jjt_scaling_exponents(model, x, factor=3.0)
        finite = exponents[torch.isfinite(exponents)]
        assert finite.numel() > 6
        torch.testing.assert_close(finite, torch.full_like(finite, 2.0 * (weight_layers(model) - 1)))
    vit_exponents = jjt_scaling_exponents(tiny("vit", 4, 1), x, factor=3.0)
    assert float(vit_exponents.max() - vit_exponents.min()) > 0.1
    with pytest.raises(ValueError, match="factor must differ from 1"):
        jjt_scaling_exponents(tiny("cnn", 3, 2), x, factor=1.0)


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"dilation": 2, "padding": 2}, r"dilation=\(2, 2\)"),
        ({"groups": 2}, "groups=2"),
        ({"padding_mode": "circular"}, "padding_mode='circular'"),
    ],
)
def test_a_convolution_the_overlap_factor_does_not_count_is_refused(changed, message):
    """Erratum review: ceil(k/s)^2 counts neither dilation nor groups nor wrapped padding. A dilated 3x3
    convolution of stride 2 on 13x13 inputs breaks the bound, so such a layer is refused, not bounded."""
    model = ConvNet((2, 13, 13), 4, 2, 10)
    model.convs[1] = nn.Conv2d(4, 4, 3, stride=2, bias=False, **{"padding": 1, **changed})
    for measure in (layer_operator_norms, patch_overlaps):
        with pytest.raises(ValueError, match=rf"^convs\[1\] must be undilated, ungrouped and zero-padded.*{message}"):
            measure(model)
    with pytest.raises(ValueError, match="convs\\[1\\]"):
        layer_norm_bound_per_sample(model, torch.randn(3, 2 * 13 * 13))
