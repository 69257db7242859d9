"""NVIDIA network pickles (``stylegan2-ada-pytorch``, ``stylegan3``) read as data, never run.

A network pickle is a pickled dict ``{G, D, G_ema, augment_pipe, training_set_kwargs}``.
Each network is a *persistent class* record: the call
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, whose ``meta`` holds the
Python source of the network's module (``module_src``), the class name, and ``state``
(the module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``,
``_init_kwargs`` and plain attributes). NVIDIA's loader imports ``module_src``, so a
downloaded file can run any code. Here a restricted unpickler resolves only the globals of
:data:`ALLOWED_GLOBALS` (each mapped to a stand-in written here) and turns every record into
a :class:`NetworkRecord`; the source text is dropped unread: never imported, compiled or
executed. Tensors are decoded only for the networks asked for.

:func:`read_generator` converts a StyleGAN2 ``G_ema`` to our generator layout
(:mod:`sdic.networks.generator`): configuration, tensors under our names and ``w_avg``.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import GeneratorConfig, SDICConfig, ffhq
from ..ops import fir_kernel
from .kinds import Checkpoint, CheckpointError, Kind

NETWORKS = ("G", "D", "G_ema")  # the networks of a training snapshot
UP_GAIN = 4.0  # NVIDIA's 2x upsampling filters are applied with gain up**2


def _refuse(message: str) -> CheckpointError:
    """Refused, damaged or unsupported: a :class:`CheckpointError`."""
    return CheckpointError(message)


# ------------------------------------------------------------------ records read as data
@dataclass
class TensorRef:
    """A tensor of the pickle, decoded on request (:meth:`load`)."""

    payload: bytes  # a legacy ``torch.save`` of the storage, as ``torch.storage._load_from_bytes`` gets it
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def load(self) -> torch.Tensor:
        """The tensor (float32 or its stored dtype), read with ``torch.load(weights_only=True)``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
            storage = torch.load(io.BytesIO(self.payload), map_location="cpu", weights_only=True)
            if not isinstance(storage, torch.storage.TypedStorage):
                raise ValueError(f"a tensor storage holds a {type(storage).__name__}")
            tensor = torch.empty(0, dtype=storage.dtype)
            return tensor.set_(storage, self.offset, self.size, self.stride)


@dataclass
class NetworkRecord:
    """A persistent-class record: a network (or layer) as data, without its source code."""

    class_name: str
    init_args: tuple[Any, ...]
    init_kwargs: dict[str, Any]
    attrs: dict[str, Any]  # plain attributes (``z_dim``, ``conv_clamp``, ...)
    params: dict[str, TensorRef]
    buffers: dict[str, TensorRef]  # persistent buffers only
    children: dict[str, NetworkRecord] = field(default_factory=dict)

    def modules(self, prefix: str = "") -> Iterator[tuple[str, NetworkRecord]]:
        """(dotted name, record) of this record and every descendant, in registration order."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.modules(f"{prefix}{name}.")

    def refs(self) -> dict[str, TensorRef]:
        """Every parameter and persistent buffer under NVIDIA's names (as its ``state_dict``)."""
        return {f"{p}{k}": v for p, m in self.modules() for k, v in {**m.params, **m.buffers}.items()}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Decoded :meth:`refs`."""
        return {name: ref.load() for name, ref in self.refs().items()}

    def child(self, dotted: str) -> NetworkRecord | None:
        record: NetworkRecord | None = self
        for part in dotted.split("."):
            record = record.children.get(part) if record is not None else None
        return record


_STATE_FIELDS = ("_parameters", "_buffers", "_modules", "_init_args", "_init_kwargs", "_non_persistent_buffers_set")


def _record(meta: Any) -> NetworkRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keep the state, drop the source."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise _refuse(f"a persistent object of type {kind!r}; only persistent classes (networks) are read")
    state = meta["state"]
    skip = set(state.get("_non_persistent_buffers_set") or ())

    def refs(name: str, keep: Callable[[str], bool] = lambda _: True) -> dict[str, TensorRef]:
        values = state.get(name) or {}
        return {k: v for k, v in values.items() if v is not None and keep(k)}

    for group in ("_parameters", "_buffers"):
        bad = [k for k, v in (state.get(group) or {}).items() if v is not None and not isinstance(v, TensorRef)]
        if bad:
            raise _refuse(f"{meta.get('class_name')}: {group[1:]} {bad[:3]} are not tensors")
    children = state.get("_modules") or {}
    bad = [k for k, v in children.items() if v is not None and not isinstance(v, NetworkRecord)]
    if bad:
        raise _refuse(f"{meta.get('class_name')}: submodules {bad[:3]} are not persistent-class records")
    return NetworkRecord(
        class_name=str(meta.get("class_name")),
        init_args=tuple(state.get("_init_args") or ()),
        init_kwargs=dict(state.get("_init_kwargs") or {}),
        attrs={k: v for k, v in state.items() if k not in _STATE_FIELDS and "hook" not in k},
        params=refs("_parameters"),
        buffers=refs("_buffers", lambda k: k not in skip),
        children={k: v for k, v in children.items() if v is not None},
    )


# ------------------------------------------------------------------ the allow-list
@dataclass
class _StorageRef:
    payload: bytes


def _load_from_bytes(payload: Any) -> _StorageRef:
    """Stand-in for ``torch.storage._load_from_bytes``: keep the bytes (decoded by :meth:`TensorRef.load`)."""
    if not isinstance(payload, (bytes, bytearray)):
        raise _refuse(f"a tensor storage given as a {type(payload).__name__}, expected bytes")
    return _StorageRef(bytes(payload))


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (requires_grad, hooks and metadata ignored)."""
    if not isinstance(storage, _StorageRef):
        raise _refuse(f"a tensor built on a {type(storage).__name__}, expected a storage")
    return TensorRef(storage.payload, int(offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: a parameter is its data."""
    return data


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar``: numbers only, as Python numbers."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _refuse(f"a numpy scalar of dtype {dtype}; only numbers are read")
    return np.frombuffer(data, dtype)[0].item()


def _numpy_dtype(*args: Any) -> np.dtype:
    return np.dtype(*args)


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol 2 uses to pickle bytes."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise _refuse("_codecs.encode is read only for latin-1 text (pickled bytes)")
    return text.encode("latin1")


class PlainDict(dict):
    """NVIDIA's ``dnnlib.EasyDict`` (a dict with attribute access), read as a plain dict."""


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): PlainDict,
    ("dnnlib", "EasyDict"): PlainDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}
"""Every global an NVIDIA pickle may name, and what stands in for it here; anything else is refused."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module.startswith("dnnlib.tflib"):
            raise _refuse(
                f"a TensorFlow network pickle ({module}.{name}: StyleGAN1, or StyleGAN2 before its "
                "PyTorch port) is not supported (yet); only PyTorch StyleGAN2 pickles are read")
        raise _refuse(
            f"refused: the pickle asks for the Python global {module}.{name}, which is not on the "
            "NVIDIA reader's allow-list (tensors, storages, plain containers, EasyDict and "
            "persistent-class records read as data); resolving it could run code")

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse("refused: the pickle uses persistent ids, which NVIDIA's network pickles do not")


def read_network_pickle(path: str | Path) -> dict[str, Any]:
    """The unpickled top-level dict: networks as :class:`NetworkRecord`, nothing executed."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            obj = _DataOnlyUnpickler(handle).load()
    except CheckpointError as error:
        raise _refuse(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RecursionError, MemoryError) as error:
        raise _refuse(f"{path}: corrupt network pickle: it cannot be read (truncated or damaged; "
                      f"{type(error).__name__}: {error})") from None
    if isinstance(obj, NetworkRecord):  # a network pickled on its own
        return {"G_ema": obj}
    if not isinstance(obj, dict) or not any(isinstance(obj.get(n), NetworkRecord) for n in NETWORKS):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise _refuse(f"{path}: not an NVIDIA network pickle (no G, D or G_ema network; found {keys})")
    return obj


def is_network_pickle(path: str | Path, scan_bytes: int = 1 << 20) -> bool:
    """Whether ``path`` is a pickle whose first global is NVIDIA's (``torch_utils``/``dnnlib``).

    Looks at the opcodes only (:mod:`pickletools`), so nothing is resolved or run; a legacy
    ``torch.save`` file starts with a magic number instead.
    """
    import pickletools

    try:
        with open(path, "rb") as handle:
            head = handle.read(scan_bytes)
        last_strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in ("GLOBAL", "INST"):
                return str(arg).startswith(("torch_utils", "dnnlib"))
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                last_strings = [*last_strings[-1:], str(arg)]
            if opcode.name == "STACK_GLOBAL":
                return bool(last_strings) and last_strings[0].startswith(("torch_utils", "dnnlib"))
            if opcode.name == "STOP":
                return False
    except (ValueError, EOFError, OSError):
        return False
    return False


# ------------------------------------------------------------------ to our generator
@dataclass
class NvidiaGenerator:
    """A StyleGAN2 generator converted to our layout."""

    config: GeneratorConfig
    tensors: dict[str, torch.Tensor]  # our generator's state-dict names
    w_avg: torch.Tensor | None  # [w_dim], the W average truncation moves toward
    fp16_resolutions: tuple[int, ...] = ()  # run in fp16 by NVIDIA on GPUs; computed in fp32 here


def _unsupported(path: Path, what: str) -> CheckpointError:
    return _refuse(f"{path}: {what} not supported (yet)")


def _single(path: Path, values: set[Any], what: str) -> Any:
    if len(values) != 1:
        raise _unsupported(path, f"a generator with different {what} per layer ({sorted(map(str, values))}) is")
    return next(iter(values))


def _check_generator(path: Path, g: NetworkRecord) -> None:
    """Refuse what our generator does not compute, each with a specific message."""
    synthesis, mapping = g.children.get("synthesis"), g.children.get("mapping")
    if synthesis is not None and any(name.startswith("L") and name[1:2].isdigit() for name in synthesis.children):
        raise _unsupported(path, "StyleGAN3 generators (synthesis.L* layers) are")
    if synthesis is None or mapping is None or "b4" not in synthesis.children:
        raise _refuse(f"{path}: G_ema ({g.class_name}) is not a StyleGAN2 generator "
                      f"(its parts: {sorted(g.children)})")
    if int(g.attrs.get("c_dim", 0) or 0) > 0:
        raise _unsupported(path, f"conditional generators (c_dim = {g.attrs['c_dim']}) are")
    if int(g.attrs.get("img_channels", 3)) != 3:
        raise _unsupported(path, f"generators of {g.attrs['img_channels']} image channels are")
    architectures = {b.attrs.get("architecture") for b in synthesis.children.values()}
    if architectures != {"skip"}:
        raise _unsupported(path, f"the {'/'.join(sorted(map(str, architectures - {'skip'})))} synthesis "
                           "architecture is (only 'skip', the StyleGAN2 default,")
    activations = {m.attrs.get("activation") for _, m in g.modules() if m.class_name == "SynthesisLayer"}
    activations |= {m.attrs.get("activation") for m in mapping.children.values() if m.class_name == "FullyConnectedLayer"}
    if activations != {"lrelu"}:
        raise _unsupported(path, f"activations other than lrelu ({sorted(map(str, activations))}) are")
    standard = fir_kernel()
    for name, module in g.modules():
        ref = module.buffers.get("resample_filter")
        if ref is not None and not torch.allclose(ref.load().float(), standard, atol=1e-7):
            raise _unsupported(path, f"a resampling filter other than [1, 3, 3, 1] ({name}resample_filter) is")


def _fc_layers(path: Path, mapping: NetworkRecord, w_dim: int) -> list[NetworkRecord]:
    layers = [mapping.children[k] for k in sorted((k for k in mapping.children if k.startswith("fc")),
                                                  key=lambda k: int(k[2:]))]
    if not layers or "embed" in mapping.children:
        raise _unsupported(path, "a mapping network with a class embedding or without layers is")
    widths = {ref.shape[0] for layer in layers for ref in [layer.params["weight"]]}
    if widths != {w_dim}:
        raise _unsupported(path, f"a mapping network with hidden widths {sorted(widths)} other than w_dim {w_dim} is")
    return layers


def read_generator(path: str | Path, network: str = "G_ema") -> NvidiaGenerator:
    """Read ``network`` (default ``G_ema``) of an NVIDIA StyleGAN2 pickle into our generator layout."""
    path = Path(path)
    obj = read_network_pickle(path)
    g = obj.get(network)
    if not isinstance(g, NetworkRecord):
        raise _refuse(f"{path}: no {network} network in this pickle (it has {sorted(map(str, obj))})")
    _check_generator(path, g)
    mapping, synthesis = g.children["mapping"], g.children["synthesis"]
    w_dim, z_dim = int(g.attrs["w_dim"]), int(g.attrs["z_dim"])
    resolution = int(g.attrs["img_resolution"])
    fcs = _fc_layers(path, mapping, w_dim)
    lr_mul = float(_single(path, {float(fc.attrs.get("bias_gain", 1.0)) for fc in fcs}, "mapping lr multipliers"))
    layers = [m for _, m in synthesis.modules() if m.class_name in ("SynthesisLayer", "ToRGBLayer")]
    clamp = _single(path, {m.attrs.get("conv_clamp") for m in layers}, "conv_clamp values")
    widths = []
    for log_res in range(2, int(math.log2(resolution)) + 1):
        block = synthesis.children.get(f"b{2 ** log_res}")
        if block is None:
            raise _refuse(f"{path}: G_ema has no synthesis block b{2 ** log_res}")
        widths.append(int(block.children["conv1"].params["weight"].shape[0]))
    config = GeneratorConfig(
        size=resolution, style_dim=w_dim, n_mlp=len(fcs), lr_mlp=lr_mul, z_dim=None if z_dim == w_dim else z_dim,
        conv_clamp=None if clamp is None else float(clamp), channel_widths=tuple(widths),
        max_channels=max(widths),
    )
    if config.n_latent != int(g.attrs.get("num_ws", config.n_latent)):
        raise _refuse(f"{path}: G_ema has {g.attrs['num_ws']} W+ entries, a StyleGAN2 of {resolution}px {config.n_latent}")
    tensors = _our_tensors(fcs, synthesis, config)
    w_avg = mapping.buffers.get("w_avg")
    fp16 = tuple(int(b.attrs["resolution"]) for b in synthesis.children.values() if b.attrs.get("use_fp16"))
    return NvidiaGenerator(config, tensors, None if w_avg is None else w_avg.load().float().clone(), fp16)


def _layer_tensors(layer: NetworkRecord, ours: str, noise: str, tensors: dict[str, torch.Tensor]) -> None:
    """One SynthesisLayer -> our StyledConv ``ours`` and noise buffer ``noise``."""
    weight = layer.params["weight"].load().float()
    tensors[f"{ours}.conv.weight"] = weight[None]
    tensors[f"{ours}.conv.modulation.weight"] = layer.children["affine"].params["weight"].load().float()
    tensors[f"{ours}.conv.modulation.bias"] = layer.children["affine"].params["bias"].load().float()
    tensors[f"{ours}.activate.bias"] = layer.params["bias"].load().float()
    size = int(layer.attrs["resolution"])
    if layer.attrs.get("use_noise", True) and "noise_const" in layer.buffers:
        tensors[f"{ours}.noise.weight"] = layer.params["noise_strength"].load().float().reshape(1)
        tensors[noise] = layer.buffers["noise_const"].load().float().reshape(1, 1, size, size)
    else:  # no noise: a zero strength adds nothing
        tensors[f"{ours}.noise.weight"] = torch.zeros(1)
        tensors[noise] = torch.zeros(1, 1, size, size)
    if int(layer.attrs.get("up", 1)) == 2:
        tensors[f"{ours}.conv.blur.kernel"] = layer.buffers["resample_filter"].load().float() * UP_GAIN


def _torgb_tensors(torgb: NetworkRecord, ours: str, upsample: NetworkRecord | None,
                   tensors: dict[str, torch.Tensor]) -> None:
    tensors[f"{ours}.conv.weight"] = torgb.params["weight"].load().float()[None]
    tensors[f"{ours}.conv.modulation.weight"] = torgb.children["affine"].params["weight"].load().float()
    tensors[f"{ours}.conv.modulation.bias"] = torgb.children["affine"].params["bias"].load().float()
    tensors[f"{ours}.bias"] = torgb.params["bias"].load().float().reshape(1, -1, 1, 1)
    if upsample is not None:
        tensors[f"{ours}.upsample.kernel"] = upsample.buffers["resample_filter"].load().float() * UP_GAIN


def _our_tensors(fcs: list[NetworkRecord], synthesis: NetworkRecord, config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """NVIDIA's names -> ours (rosinality's layout: ``style``, ``input``, ``conv1``, ``convs``, ``to_rgbs``)."""
    tensors: dict[str, torch.Tensor] = {}
    for i, fc in enumerate(fcs):
        tensors[f"style.{i + 1}.weight"] = fc.params["weight"].load().float()
        tensors[f"style.{i + 1}.bias"] = fc.params["bias"].load().float()
    b4 = synthesis.children["b4"]
    tensors["input.input"] = b4.params["const"].load().float()[None]
    _layer_tensors(b4.children["conv1"], "conv1", "noises.noise_0", tensors)
    _torgb_tensors(b4.children["torgb"], "to_rgb1", None, tensors)
    for j, log_res in enumerate(range(3, config.log_size + 1)):
        block = synthesis.children[f"b{2 ** log_res}"]
        _layer_tensors(block.children["conv0"], f"convs.{2 * j}", f"noises.noise_{2 * j + 1}", tensors)
        _layer_tensors(block.children["conv1"], f"convs.{2 * j + 1}", f"noises.noise_{2 * j + 2}", tensors)
        _torgb_tensors(block.children["torgb"], f"to_rgbs.{j}", block, tensors)
    return {k: v.contiguous() for k, v in tensors.items()}


# ------------------------------------------------------------------ as a checkpoint
MAX_TAP = 64  # the authors' tap resolution; smaller generators tap at half their size


def config_for_generator(generator: GeneratorConfig, path: str | Path = "") -> SDICConfig:
    """The SDIC configuration around a converted generator: the faces model's networks, the tap
    at 64x64 (half the resolution below 128). ``model:`` in a training configuration changes it."""
    base = ffhq()
    try:
        return SDICConfig(name=base.name if generator == base.generator else "custom", generator=generator,
                          encoder=base.encoder, dipn=base.dipn, dicn=base.dicn,
                          tap_resolution=min(MAX_TAP, generator.size // 2), domain=base.domain)
    except ValueError as error:
        raise _refuse(f"{path}: no SDIC model fits this {generator.size}px generator ({error})") from None


def read_nvidia_checkpoint(path: str | Path) -> Checkpoint:
    """An NVIDIA pickle's ``G_ema`` as a ``stylegan2`` checkpoint (``w_avg`` as its ``latent_avg``)."""
    found = read_generator(path)
    config = config_for_generator(found.config, path)
    tensors = {f"generator.{k}": v for k, v in found.tensors.items()}
    if found.w_avg is not None:
        tensors["latent_avg"] = found.w_avg.expand(config.n_latent, -1).clone()
    return Checkpoint(Kind.STYLEGAN2, tensors, config, path=str(path))
