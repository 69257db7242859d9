"""Every fast op equals its reference twin (``sdic.ops``), in inference and training, fp32 and bf16."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from sdic import ops
from sdic.config import tiny
from sdic.networks import Generator
from sdic.networks.generator import ModulatedConv2d, StyledConv
from sdic.networks.layers import BasicConv, IRUnit

PRECISIONS = {"fp32": (None, 1e-5), "bf16": (torch.bfloat16, 3e-2)}


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _close(fast: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    """Agreement relative to the reference's magnitude (bf16 rounds every product)."""
    scale = float(ref.float().abs().max()) + 1e-12
    error = float((fast.float() - ref.float()).abs().max())
    assert error <= rel * scale, f"max error {error:.3g} vs magnitude {scale:.3g}"


def _randomise_bn(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.weight.shape, generator=g) * 0.2 + 1)
            bn.bias.data.copy_(torch.randn(bn.bias.shape, generator=g) * 0.2)


# ------------------------------------------------------------------ upfirdn2d
@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 1, (1, 1)), (1, 2, (1, 1)), (1, 2, (2, 1)),
                                         (2, 1, (-1, 3)), (1, 1, (-1, 2)), (2, 2, (1, 2))])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_upfirdn2d_equals_the_definition(up, down, pad, precision):
    dtype, rel = PRECISIONS[precision]
    g = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 5, 9, 9, generator=g)
    bias = torch.randn(5, generator=g)
    kernel = ops.fir_kernel(gain=float(up**2))
    if dtype is not None:
        x = x.to(dtype)
    _close(ops.upfirdn2d(x, kernel, up, down, pad, bias), ops.upfirdn2d_ref(x, kernel, up, down, pad, bias), rel)


def test_upfirdn2d_ref_is_a_true_convolution():
    """Hand-computed: an impulse through an asymmetric kernel comes out as the kernel itself."""
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    kernel = torch.arange(1.0, 5.0).view(2, 2)
    out = ops.upfirdn2d_ref(x, kernel, pad=(1, 0))
    assert torch.equal(out[0, 0, 1:3, 1:3], kernel)


# ------------------------------------------------------------------ transposed conv, BN folding, volume stem
@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_polyphase_transposed_conv_equals_pytorch(nd, precision):
    dtype, rel = PRECISIONS[precision]
    g = torch.Generator().manual_seed(nd)
    x = torch.randn(2, 6, *([5] * nd), generator=g)
    weight = torch.randn(6, 4, *([4] * nd), generator=g) * 0.2
    bias = torch.randn(4, generator=g)
    with _autocast(dtype):
        _close(ops.conv_transpose_k4s2(x, weight, bias), ops.conv_transpose_k4s2_ref(x, weight, bias), rel)


@pytest.mark.parametrize("nd", [2, 3])
def test_polyphase_transposed_conv_has_the_same_gradients(nd):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, *([4] * nd), generator=g, requires_grad=True)
    weight = (torch.randn(3, 2, *([4] * nd), generator=g) * 0.2).requires_grad_()
    target = torch.randn(2, 2, *([8] * nd), generator=g)
    grads = []
    for fn in (ops.conv_transpose_k4s2, ops.conv_transpose_k4s2_ref):
        loss = (fn(x, weight, None) * target).sum()
        grads.append(torch.autograd.grad(loss, (x, weight)))
    for fast, ref in zip(*grads):
        _close(fast, ref, 1e-5)


@pytest.mark.parametrize("kind", ["conv2d", "conv3d", "deconv3d", "deconv2d"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_folded_batchnorm_equals_conv_then_bn(kind, precision):
    dtype, rel = PRECISIONS[precision]
    deconv, is_3d = kind.startswith("deconv"), kind.endswith("3d")
    geometry = dict(kernel_size=4, stride=2, padding=1) if deconv else dict(kernel_size=3, stride=1, padding=1)
    block = BasicConv(4, 6, deconv=deconv, is_3d=is_3d, **geometry)
    _randomise_bn(block, 1)
    block.eval()
    x = torch.randn(2, 4, *([5] * (3 if is_3d else 2)), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), _autocast(dtype):
        reference = block(x)  # the training execution: conv, then BN, then the activation
        ops.set_execution(block, ops.Execution.inference("cpu"))
        assert block.folded() is not None
        fast = block(x)
    _close(fast, reference, rel)


def test_folding_is_refused_while_the_batchnorm_trains():
    """A BN that trains normalises with batch statistics: nothing may be folded."""
    block = ops.set_execution(BasicConv(3, 4, kernel_size=3, padding=1), ops.Execution.inference("cpu"))
    assert block.folded() is None  # built in training mode: nothing was derived
    block.eval()
    ops.set_execution(block, ops.Execution.inference("cpu"))
    block.train()
    assert block.folded() is None


@pytest.mark.parametrize("precision", PRECISIONS)
def test_volume_stem_equals_a_3d_convolution(precision):
    dtype, rel = PRECISIONS[precision]
    g = torch.Generator().manual_seed(3)
    volume = torch.randn(2, 6, 7, 7, generator=g)
    weight = torch.randn(5, 1, 3, 3, 3, generator=g) * 0.3
    bias = torch.randn(5, generator=g)
    with _autocast(dtype):
        _close(ops.volume_stem(volume, weight, bias), ops.volume_stem_ref(volume, weight, bias), rel)


@pytest.mark.parametrize("se,cin,stride", [(True, 32, 2), (False, 32, 1), (True, 16, 1)])
def test_ir_unit_fast_form_equals_its_layers(se, cin, stride):
    unit = IRUnit(cin, 32, stride, se=se)
    _randomise_bn(unit, 4)
    unit.eval()
    x = torch.randn(2, cin, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = unit(x)
        fast = ops.set_execution(unit, ops.Execution.inference("cpu"))(x)
    _close(fast, reference, 1e-5)


# ------------------------------------------------------------------ modulated convolution
@pytest.mark.parametrize("upsample,demodulate,kernel", [(False, True, 3), (True, True, 3), (False, False, 1)])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_modulated_conv_equals_the_grouped_convolution(upsample, demodulate, kernel, per_sample, precision):
    dtype, rel = PRECISIONS[precision]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, 8, 8, generator=g)
    weight = torch.randn(5, 6, kernel, kernel, generator=g)
    styles = torch.randn(3, 6, generator=g) + 1
    bias = torch.randn(5, generator=g)
    blur = ops.fir_kernel(gain=4.0) if upsample else None
    gain = 2**0.5
    with _autocast(dtype):
        fast = ops.modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=kernel // 2, blur=blur,
                                    bias=bias, gain=gain, per_sample=per_sample)
    reference = gain * ops.modulated_conv2d_ref(x, weight, styles, demodulate=demodulate, padding=kernel // 2,
                                                 blur=blur) + bias.view(1, -1, 1, 1)
    _close(fast, reference, rel)


def test_modulated_conv_trains_like_the_grouped_convolution():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, generator=g, requires_grad=True)
    styles = (torch.randn(2, 4, generator=g) + 1).requires_grad_()
    target = torch.randn(2, 3, 6, 6, generator=g)
    grads = []
    for fn in (ops.modulated_conv2d, ops.modulated_conv2d_ref):
        loss = (fn(x, weight, styles, padding=1) * target).sum()
        grads.append(torch.autograd.grad(loss, (x, weight, styles)))
    for fast, ref in zip(*grads):
        _close(fast, ref, 1e-5)


def test_styled_conv_epilogue_equals_noise_bias_activation():
    """The styled conv folds bias and gain into the convolution; the plain form adds them after."""
    torch.manual_seed(0)
    layer = StyledConv(4, 5, style_dim=8)
    layer.noise.weight.data.fill_(0.3)
    layer.activate.bias.data.normal_()
    x, w, noise = torch.randn(2, 4, 6, 6), torch.randn(2, 8), torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        fast = layer(x, w, noise)
        styles = layer.conv.modulation(w)
        conv = ops.modulated_conv2d_ref(x, layer.conv.weight[0], styles, padding=1)
        reference = ops.styled_activation_ref(conv, noise, layer.noise.weight, layer.activate.bias)
    _close(fast, reference, 1e-5)


def test_styled_conv_epilogue_with_nvidia_conv_clamp():
    """With ``conv_clamp`` both forms clip after the gain; the clip really cuts values here."""
    torch.manual_seed(0)
    layer = StyledConv(4, 5, style_dim=8, clamp=0.5)
    layer.noise.weight.data.fill_(0.3)
    layer.activate.bias.data.normal_()
    x, w, noise = torch.randn(2, 4, 6, 6), torch.randn(2, 8), torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        fast = layer(x, w, noise)
        styles = layer.conv.modulation(w)
        conv = ops.modulated_conv2d_ref(x, layer.conv.weight[0], styles, padding=1)
        reference = ops.styled_activation_ref(conv, noise, layer.noise.weight, layer.activate.bias, clamp=0.5)
        unclamped = ops.styled_activation_ref(conv, noise, layer.noise.weight, layer.activate.bias)
    _close(fast, reference, 1e-5)
    assert float(fast.abs().max()) <= 0.5 < float(unclamped.abs().max())
    assert torch.equal(reference, unclamped.clamp(-0.5, 0.5))
    grads = []  # training: the same gradients (the clip must not break autograd's saved outputs)
    for fast_form in (True, False):
        xg = x.clone().requires_grad_(True)
        if fast_form:
            out = layer(xg, w, noise)
        else:
            conv = ops.modulated_conv2d_ref(xg, layer.conv.weight[0], layer.conv.modulation(w), padding=1)
            out = ops.styled_activation_ref(conv, noise, layer.noise.weight, layer.activate.bias, clamp=0.5)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), xg)[0])
    _close(grads[0], grads[1], 1e-5)


def test_derived_modulation_weights_change_nothing_but_speed():
    torch.manual_seed(1)
    layer = ModulatedConv2d(6, 4, 3, style_dim=8)
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        plain = layer(x, w)
        ops.set_execution(layer, ops.Execution.inference("cpu", weight_dtype=torch.bfloat16))
        assert ops.derived(layer, "energy") is not None and ops.derived(layer, "cast_weight").dtype == torch.bfloat16
        fast = layer(x, w)
    _close(fast, plain, 1e-5)


# ------------------------------------------------------------------ whole generator and export
@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    config = tiny()
    net = Generator(config.generator, tap_resolution=config.tap_resolution).eval()
    for name, p in net.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.1)
    return net


def test_every_execution_of_the_generator_draws_the_same_image(generator):
    w = torch.randn(3, generator.n_latent, generator.config.style_dim, generator=torch.Generator().manual_seed(3))
    images = {}
    for name, execution in {"training": ops.Execution.training(), "frozen": ops.Execution.frozen_network(),
                            "cpu": ops.Execution.inference("cpu"), "gpu": ops.Execution.inference("cuda")}.items():
        ops.set_execution(generator, execution)
        with torch.no_grad():
            images[name] = generator(w)[0]
    ops.set_execution(generator, ops.Execution.training())
    for image in images.values():
        _close(image, images["training"], 1e-5)


def test_the_inference_generator_exports(generator):
    """``torch.export`` traces the fast inference path (no storage-keyed weight cache)."""
    ops.set_execution(generator, ops.Execution.inference("cpu"))
    w = torch.randn(1, generator.n_latent, generator.config.style_dim, generator=torch.Generator().manual_seed(4))
    try:
        exported = torch.export.export(generator, (w,))
        with torch.no_grad():
            expected = generator(w)[0]
        assert torch.allclose(exported.module()(w)[0], expected, atol=1e-5)
    finally:
        ops.set_execution(generator, ops.Execution.training())
