"""The authors' layouts (SDIC, e4e, rosinality's StyleGAN2, IR-SE50): reading them and writing them.

Layouts (the objects inside the ``torch.save`` files):

* SDIC and e4e: ``{"state_dict": ..., "latent_avg": [n_latent, D], "opts": {...}}`` with the
  prefixes ``encoder.``, ``decoder.`` (the generator), and for SDIC ``DIP.`` and ``SAF.``;
* StyleGAN2 (rosinality): ``{"g_ema": generator tensors, ...}`` (``g``, ``d`` are ignored);
  our trainers add ``latent_avg`` (one W) and ``sdic_config``;
* IR-SE50 (ArcFace): the network's tensors at the top level.

Our trainers' ``.pt`` exports also carry the model configuration as JSON (``sdic_config``,
at the top level or in ``opts``); otherwise it is inferred from the tensors (the faces or
cars preset). Writing (:func:`to_layout`) is the exact inverse of reading
(:func:`from_layout`): written tensors and configuration read back identical.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import GeneratorConfig, SDICConfig, cars, ffhq
from ..files import atomic_write
from .kinds import Checkpoint, CheckpointError, Kind

# The authors' prefixes -> our module names.
PREFIXES = {"encoder.": "encoder.", "decoder.": "generator.", "DIP.": "dipn.", "SAF.": "dicn."}

# docs/architecture.md: layers the authors' modules build but never call.
UNUSED_PREFIXES = (
    "DIP.stem_2.", "DIP.stem_4.", "DIP.spx.", "DIP.spx_2.", "DIP.spx_4.", "DIP.semantic.",
    "DIP.agg.", "SAF.aff1.", "SAF.conv1.", "SAF.aff2.", "SAF.aff1d.agg.",
    "DIP.hourglass_fusion.conv1_up.bn.",
)


# ------------------------------------------------------------------ names
def to_our_names(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map the authors' prefixes to ours; return (tensors, dropped never-used keys, unknown keys)."""
    tensors, dropped, unknown = {}, [], []
    for key, value in state.items():
        if key.startswith(UNUSED_PREFIXES):
            dropped.append(key)
            continue
        for old, new in PREFIXES.items():
            if key.startswith(old):
                tensors[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    return tensors, dropped, unknown


def to_authors_names(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_our_names` (the dropped layers are not made up)."""
    state = {}
    for key, value in tensors.items():
        for old, new in PREFIXES.items():
            if key.startswith(new):
                state[old + key[len(new):]] = value
                break
        else:
            raise CheckpointError(f"{key}: no authors' name for a tensor outside encoder/generator/dipn/dicn")
    return state


# ------------------------------------------------------------------ configuration
def infer_generator(state: Mapping[str, torch.Tensor], prefix: str) -> GeneratorConfig:
    """Generator size, style width, mapping depth and channel multiplier from its tensors."""
    n_rgbs = len({k.split(".")[2] for k in state if k.startswith(prefix + "to_rgbs.")})
    style_w = state.get(prefix + "style.1.weight")
    if n_rgbs == 0 or style_w is None:
        raise CheckpointError(f"no StyleGAN2 generator found under '{prefix}'")
    size = 2 ** (n_rgbs + 2)
    n_mlp = len({k.split(".")[2] for k in state if k.startswith(prefix + "style.") and k.endswith(".weight")})
    multiplier = 2
    if size >= 128:
        # The last conv of the 128 block: channels(128) = 128 * multiplier.
        block_128 = 7 - 3  # log2(128) - 3
        key = f"{prefix}convs.{2 * block_128 + 1}.conv.weight"
        conv = state.get(key)
        if conv is None or conv.ndim < 3:
            raise CheckpointError(f"the StyleGAN2 generator under '{prefix}' has no {key} (a missing or damaged layer)")
        multiplier = max(1, conv.shape[1] // 128)
    return GeneratorConfig(size=size, style_dim=style_w.shape[0], n_mlp=n_mlp, channel_multiplier=multiplier)


def infer_config(state: Mapping[str, torch.Tensor], opts: Mapping[str, Any], prefix: str = "decoder.") -> SDICConfig:
    """Configuration of an authors' SDIC/e4e checkpoint (the faces or cars preset)."""
    generator = infer_generator(state, prefix)
    dataset = str(opts.get("dataset_type", "")).lower()
    is_cars = "car" in dataset or (not dataset and generator.size == 512)
    base = cars() if is_cars else ffhq()
    return dataclasses.replace(base, name=base.name if base.generator == generator else "custom",
                               generator=generator)


def authors_opts(config: SDICConfig) -> dict[str, Any]:
    """The ``opts`` the authors' code reads back for ``config`` (the inverse of :func:`infer_config`)."""
    return {"stylegan_size": config.generator.size, "start_from_latent_avg": True,
            "dataset_type": "cars_encode" if config.domain == "cars" else "ffhq_encode"}


def embedded_config(obj: Mapping[str, Any], path: str | Path) -> SDICConfig | None:
    """The ``sdic_config`` JSON our trainers store in their ``.pt`` exports (top level or in ``opts``)."""
    text = obj.get("sdic_config")
    if text is None and isinstance(obj.get("opts"), Mapping):
        text = obj["opts"].get("sdic_config")
    if text is None:
        return None
    try:
        return SDICConfig.from_json(text)
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: invalid sdic_config in the file ({error})") from None


def _latent_avg(obj: Mapping[str, Any], n_latent: int) -> torch.Tensor | None:
    """The file's ``latent_avg`` as [n_latent, D] (one W is repeated on every entry)."""
    avg = obj.get("latent_avg")
    if avg is None:
        return None
    if not isinstance(avg, torch.Tensor):
        raise CheckpointError(f"latent_avg is a {type(avg).__name__}, expected a tensor")
    if not avg.is_floating_point():
        raise CheckpointError(f"latent_avg is a {avg.dtype} tensor, expected floating point")
    avg = avg.float().reshape(-1, avg.shape[-1])
    return avg.expand(n_latent, -1).clone() if avg.shape[0] == 1 else avg


# ------------------------------------------------------------------ kinds
def _state_keys(obj: Mapping[str, Any]) -> list[str]:
    state = obj.get("state_dict")
    return list(state.keys()) if isinstance(state, Mapping) else []


def _starts(keys: list[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


@dataclass(frozen=True)
class Layout:
    """An authors' layout: its kind and how its contents are recognised."""

    kind: Kind
    matches: Callable[[Mapping[str, Any]], bool]


# In the order they are tried: SDIC before e4e (an SDIC file holds an e4e).
LAYOUTS = (
    Layout(Kind.SDIC, lambda obj: _starts(_state_keys(obj), "DIP.", "SAF.")),
    Layout(Kind.E4E, lambda obj: _starts(_state_keys(obj), "encoder.") and _starts(_state_keys(obj), "decoder.")),
    Layout(Kind.STYLEGAN2, lambda obj: isinstance(obj.get("g_ema"), Mapping)),
    Layout(Kind.IR_SE50, lambda obj: "input_layer.0.weight" in obj and "output_layer.3.weight" in obj),
)


def detect_kind(obj: Any) -> Kind:
    """Recognise an authors' checkpoint from its contents."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"unrecognised checkpoint: a {type(obj).__name__}, expected a dict of tensors")
    for layout in LAYOUTS:
        if layout.matches(obj):
            return layout.kind
    keys = sorted(map(str, obj.keys()))[:8]
    raise CheckpointError(f"unrecognised checkpoint layout (top-level keys: {keys})")


# ------------------------------------------------------------------ reading
def from_layout(obj: Any, path: str | Path) -> Checkpoint:
    """The checkpoint in an authors' layout (the object ``torch.load`` returned), in our names."""
    kind = detect_kind(obj)
    if kind == Kind.IR_SE50:
        return Checkpoint(kind, dict(obj), path=str(path))
    if kind == Kind.STYLEGAN2:
        state = {"decoder." + k: v for k, v in obj["g_ema"].items()}
        opts: dict[str, Any] = {}
    else:
        state = dict(obj["state_dict"])
        opts = dict(obj["opts"]) if isinstance(obj.get("opts"), Mapping) else {}
    config = embedded_config(obj, path)
    if config is None:
        try:
            config = infer_config(state, opts)
        except ValueError as error:
            if kind == Kind.SDIC:
                raise CheckpointError(f"{path}: not one of the authors' SDIC architectures ({error})") from None
            config = None  # a custom generator: the training configuration describes the rest
    tensors, dropped, unknown = to_our_names(state)
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensors outside encoder/decoder/DIP/SAF: {unknown[:10]}")
    n_latent = config.n_latent if config else infer_generator(state, "decoder.").n_latent
    avg = _latent_avg(obj, n_latent)
    if avg is not None:
        tensors["latent_avg"] = avg
    return Checkpoint(kind, tensors, config, dropped, opts, str(path))


# ------------------------------------------------------------------ writing
def _one_w(avg: torch.Tensor) -> torch.Tensor:
    """A [n_latent, D] latent_avg whose rows are one W, as that W (how reading expands it)."""
    return avg[0] if avg.ndim == 2 and bool((avg == avg[:1]).all()) else avg


def to_layout(kind: Kind, tensors: Mapping[str, torch.Tensor], config: SDICConfig,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The object of an authors' ``kind`` file holding ``tensors`` (our names) and ``config``.

    ``extra`` adds top-level entries that reading ignores (rosinality's ``g`` and ``d``).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    extra = dict(extra or {})
    if kind == Kind.IR_SE50:
        return {**tensors, **extra}
    avg = tensors.pop("latent_avg", None)
    state = to_authors_names(tensors)
    if kind == Kind.STYLEGAN2:
        outside = [k for k in state if not k.startswith("decoder.")]
        if outside:
            raise CheckpointError(f"a stylegan2 file holds only generator tensors, not {outside[:5]}")
        obj = {"g_ema": {k.removeprefix("decoder."): v for k, v in state.items()}, **extra}
        if avg is not None:
            obj["latent_avg"] = _one_w(avg)
        obj["sdic_config"] = config.to_json()
        return obj
    obj = {"state_dict": state}
    if avg is not None:
        obj["latent_avg"] = avg
    obj["opts"] = {**authors_opts(config), "sdic_config": config.to_json()}
    return {**obj, **extra}


def save_layout(path: str | Path, kind: Kind, tensors: Mapping[str, torch.Tensor], config: SDICConfig,
                extra: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`to_layout` with ``torch.save``, atomically (``sdic.files.atomic_write``)."""
    obj = to_layout(kind, tensors, config, extra)
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
