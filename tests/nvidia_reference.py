"""NVIDIA's reference pickle ``sg2ada_paper64.pkl``, rebuilt byte for byte from its skeleton.

The file (75 MB, written by NVIDIA's ``stylegan2-ada-pytorch``) is kept as its bytes with the
tensor values zeroed (tools/nvidia_skeleton.py). Its weights were made by seeded random
initialisation (the reference's make_nvidia_ref.py), which is re-run here in NVIDIA's order:

* ``torch.manual_seed(seed)``, then G and D are built: each layer draws ``randn`` for its
  ``weight`` (fully connected: divided by ``lr_multiplier``), ``const`` and ``noise_const``,
  its own tensors before its sublayers' except in SynthesisLayer/ToRGBLayer, whose ``affine``
  is built first; biases start at ``bias_init`` (0 or 1), the rest at zero, filters [1,3,3,1];
* G is perturbed from ``torch.Generator().manual_seed(seed + 1)``: over its parameters in
  order, ``noise_strength`` <- 0.1 + 0.2 U, biases += 0.1 N, ``const`` <- N; then over its
  buffers, ``w_avg`` <- 0.5 N, ``noise_const`` <- N;
* G_ema is G with every parameter times 1.01.

The rebuilt file must hash to the original's SHA-256: the tests read NVIDIA's own file.
"""

from __future__ import annotations

import collections
import hashlib
import json
import lzma
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from sdic.checkpoints.nvidia import NetworkRecord, read_network_pickle
from sdic.ops import fir_kernel

NVIDIA = Path(__file__).parent / "data" / "nvidia"
NAME = "sg2ada_paper64"
SEED = 11  # make_nvidia_ref.py's seed for this case
SUBLAYERS_FIRST = ("SynthesisLayer", "ToRGBLayer")


def _initial(record: NetworkRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """NVIDIA's constructors: the randn draws in their order, the constant initial values."""
    def own() -> None:
        for name, ref in {**record.params, **record.buffers}.items():
            if name in ("weight", "const", "noise_const"):
                value = torch.randn(ref.shape)
                if record.class_name == "FullyConnectedLayer":
                    value = value / record.init_kwargs.get("lr_multiplier", 1)
            elif name == "bias" and record.class_name == "FullyConnectedLayer":
                value = torch.full(ref.shape, float(record.init_kwargs.get("bias_init", 0)))
            elif name == "resample_filter":
                value = fir_kernel()
            else:
                value = torch.zeros(ref.shape)
            out[prefix + name] = value

    def sublayers() -> None:
        for name, child in record.children.items():
            _initial(child, f"{prefix}{name}.", out)

    if record.class_name in SUBLAYERS_FIRST:
        sublayers()
        own()
    else:
        own()
        sublayers()


def _perturbed(record: NetworkRecord, values: dict[str, torch.Tensor], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for prefix, module in record.modules():
        for name in module.params:
            key = prefix + name
            if "noise_strength" in key:
                values[key] = 0.1 + 0.2 * torch.rand(values[key].shape, generator=g)
            elif key.endswith("bias"):
                values[key] = values[key] + 0.1 * torch.randn(values[key].shape, generator=g)
            elif key.endswith("const"):
                values[key] = torch.randn(values[key].shape, generator=g)
    for prefix, module in record.modules():
        for name in module.buffers:
            key = prefix + name
            if key.endswith("w_avg"):
                values[key] = 0.5 * torch.randn(values[key].shape, generator=g)
            elif "noise_const" in key:
                values[key] = torch.randn(values[key].shape, generator=g)


def reference_weights(skeleton: Path) -> dict[str, dict[str, torch.Tensor]]:
    """G, D and G_ema as make_nvidia_ref.py made them (the networks' layout read from ``skeleton``)."""
    records = read_network_pickle(skeleton)
    torch.manual_seed(SEED)
    weights: dict[str, dict[str, torch.Tensor]] = {"G": {}, "D": {}}
    _initial(records["G"], "", weights["G"])
    _initial(records["D"], "", weights["D"])
    _perturbed(records["G"], weights["G"], SEED + 1)
    params = {p + n for p, m in records["G"].modules() for n in m.params}
    weights["G_ema"] = {k: v * 1.01 if k in params else v for k, v in weights["G"].items()}
    return weights


def rebuild(folder: Path) -> Path:
    """Write ``sg2ada_paper64.pkl`` into ``folder`` and check it is NVIDIA's file (SHA-256)."""
    info = json.loads((NVIDIA / f"{NAME}_skeleton.json").read_text())
    data = bytearray(lzma.decompress((NVIDIA / f"{NAME}_skeleton.pkl.xz").read_bytes()))
    path = folder / f"{NAME}.pkl"
    skeleton = folder / f"{NAME}_skeleton.pkl"
    skeleton.write_bytes(data)
    weights = reference_weights(skeleton)
    for network, name, start, nbytes in info["tensors"]:
        value = weights[network][name].contiguous()
        data[start:start + nbytes] = value.numpy().tobytes()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert len(data) == info["size"] and digest == info["sha256"], "the rebuilt pickle is not NVIDIA's file"
    return path


# ------------------------------------------------------------------ crafting pickles
@dataclass(frozen=True)
class Global:
    """A global a crafted pickle names (written as a GLOBAL opcode, never imported here)."""

    module: str
    name: str

    def __call__(self, *args: object) -> None:  # pickle's writer wants a callable; it is never called
        raise AssertionError(f"{self.module}.{self.name} is only named, not run")


@dataclass(frozen=True)
class Call:
    """``function(*args)`` at unpickling time (a REDUCE of a :class:`Global`)."""

    function: Global
    args: tuple


PERSISTENT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")


def persistent_record(record: NetworkRecord, module_src: str) -> Call:
    """A record as NVIDIA's persistence writes it: its state dict and the module's source."""
    state = {
        **record.attrs,
        "_parameters": collections.OrderedDict((k, v.load()) for k, v in record.params.items()),
        "_buffers": collections.OrderedDict((k, v.load()) for k, v in record.buffers.items()),
        "_modules": collections.OrderedDict((k, persistent_record(v, module_src)) for k, v in record.children.items()),
        "_init_args": record.init_args, "_init_kwargs": record.init_kwargs,
    }
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": record.class_name, "state": state}
    return Call(PERSISTENT, (meta,))


class _CraftingPickler(pickle._Pickler):  # the Python pickler: its dispatch table can name any global
    dispatch = dict(pickle._Pickler.dispatch)

    def _global(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def _call(self, obj: Call) -> None:
        self.save_reduce(obj.function, obj.args, obj=obj)

    dispatch[Global] = _global
    dispatch[Call] = _call


def write_pickle(path: Path, obj: object) -> Path:
    """Pickle ``obj`` (tensors as torch pickles them; :class:`Global`/:class:`Call` as given)."""
    with open(path, "wb") as handle:
        _CraftingPickler(handle, protocol=4).dump(obj)
    return path
