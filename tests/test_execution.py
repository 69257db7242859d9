"""The execution policy: micro-batched inference where it is chosen, whole batches elsewhere."""

from __future__ import annotations

import torch
from torch import nn

from sdic.ops import Execution, UsesExecution, micro_batched, set_execution


class _Recorder(UsesExecution, nn.Module):
    """Records the batch sizes it sees; returns (x * scale + shared, x.sum per sample)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.weight = nn.Parameter(torch.tensor(2.0))

    @micro_batched(3)
    def forward(self, x, scale, extras, *, shared):
        self.seen.append(x.shape[0])
        assert scale.shape[0] == x.shape[0] and extras[0].shape[0] == x.shape[0]
        return x * scale * self.weight + shared + extras[1], x.flatten(1).sum(1)


def _inputs(batch: int):
    torch.manual_seed(0)
    x = torch.randn(batch, 4, 5)
    scale = torch.randn(batch, 1, 1)
    extras = [torch.randn(batch, 4, 5), torch.randn(1, 4, 5)]  # per-sample, broadcast
    return x, scale, extras, torch.randn(4, 5)


def test_inference_runs_in_chunks_with_the_same_result():
    module = set_execution(_Recorder(), Execution.inference("cpu"))
    x, scale, extras, shared = _inputs(8)
    with torch.no_grad():
        out, sums = module(x, scale, extras, shared=shared)
    assert module.seen == [3, 3, 2]
    assert torch.allclose(out, x * scale * 2.0 + shared + extras[1])
    assert torch.allclose(sums, x.flatten(1).sum(1))


def test_training_sees_the_whole_batch():
    module = _Recorder()  # modules start with the training execution
    assert module.execution == Execution.training()
    x, scale, extras, shared = _inputs(8)
    out, _ = module(x, scale, extras, shared=shared)
    out.sum().backward()
    assert module.seen == [8]
    assert torch.allclose(module.weight.grad, (x * scale).sum())


def test_small_batches_are_not_split():
    module = set_execution(_Recorder(), Execution.inference("cpu"))
    x, scale, extras, shared = _inputs(3)
    with torch.no_grad():
        module(x, scale, extras, shared=shared)
    assert module.seen == [3]


def test_other_devices_get_the_whole_batch():
    """Accelerators gain from batching: no chunks off the CPU (meta stands in for a GPU)."""
    module = set_execution(_Recorder().to("meta"), Execution.inference("meta"))
    x, scale, extras, shared = (t.to("meta") if isinstance(t, torch.Tensor) else [e.to("meta") for e in t]
                                for t in _inputs(8))
    with torch.no_grad():
        module(x, scale, extras, shared=shared)
    assert module.seen == [8]


def test_the_export_execution_folds_weights_but_keeps_transposed_convolutions():
    """``Execution.export``: BN folded, no polyphase kernels, whole batches, same results."""
    from sdic.networks.layers import BasicConv

    torch.manual_seed(0)
    conv = BasicConv(4, 3, deconv=True, is_3d=True, kernel_size=4, stride=2, padding=1).eval()
    with torch.no_grad():
        conv.bn.running_mean.normal_()
        conv.bn.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 4, 3, 5, 5)
        expected = conv(x)  # the training execution: the modules as they are
        set_execution(conv, Execution.export())
        assert set(conv.__dict__["_derived"]) == {"weight", "bias"}
        assert torch.allclose(conv(x), expected, atol=1e-5)
        set_execution(conv, Execution.inference("cpu"))
        assert "phase_weight" in conv.__dict__["_derived"]
    export = Execution.export()
    assert export.frozen and not export.split_batches and not export.per_sample_modulation
