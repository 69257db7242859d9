"""Checkpoint I/O: the authors' files (SDIC, e4e, StyleGAN2, IR-SE50) and our own format.

Authors' files are pickles; they are read with ``torch.load(weights_only=True)``
so that a file from the internet cannot run code. Our format is a single
safetensors file whose metadata holds the JSON model configuration.

Key mapping from the authors' prefixes to our module names:
``encoder.`` -> ``encoder.``, ``decoder.`` -> ``generator.``, ``DIP.`` -> ``dipn.``,
``SAF.`` -> ``dicn.``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..config import GeneratorConfig, SDICConfig, cars, ffhq
from ..errors import SDICError
from ..files import save_safetensors

FORMAT_NAME = "sdic"
FORMAT_VERSION = "1"

PREFIXES = {"encoder.": "encoder.", "decoder.": "generator.", "DIP.": "dipn.", "SAF.": "dicn."}

# Layers the authors' modules build but never call (docs/architecture.md, "Checkpoint names").
UNUSED_PREFIXES = (
    "DIP.stem_2.", "DIP.stem_4.", "DIP.spx.", "DIP.spx_2.", "DIP.spx_4.", "DIP.semantic.",
    "DIP.agg.", "SAF.aff1.", "SAF.conv1.", "SAF.aff2.", "SAF.aff1d.agg.",
    "DIP.hourglass_fusion.conv1_up.bn.",
)


class CheckpointError(SDICError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe, of the wrong kind or does not fit."""


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its kind, tensors (our names) and what was dropped."""

    kind: str  # "sdic", "e4e", "stylegan2", "ir_se50"
    tensors: dict[str, torch.Tensor]
    config: SDICConfig | None = None
    dropped: list[str] = field(default_factory=list)
    opts: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    native: bool = False  # our safetensors format (its config comes from its metadata)


# ------------------------------------------------------------------ reading
def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        raise CheckpointError(
            f"{path}: this is an HTML page, not a checkpoint. Google Drive serves such a page "
            "when a file's download quota is exceeded or a confirmation is needed; download "
            "the file again (from the browser, or later)"
        )


def file_format(path: str | Path) -> str | None:
    """``"safetensors"``, ``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save) or None, from the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < Path(path).stat().st_size:
        return "safetensors"
    return None


_NOT_A_CHECKPOINT = ("is not a checkpoint: its first bytes are neither a PyTorch file (zip or pickle) nor "
                     "safetensors (a different format, random bytes, or a damaged download)")


def _unpickling_detail(error: Exception) -> str | None:
    """The line of a weights-only refusal naming the blocked global (None: not a refusal of code).

    torch words it "Unsupported global: GLOBAL x.y" or "... unsupported GLOBAL x.y whose module
    x is blocked"; random bytes give "Unsupported operand N" instead.
    """
    for line in str(error).splitlines():
        if "GLOBAL" in line.upper().split():
            return line.strip().removeprefix("WeightsUnpickler error:").strip()
    return None


def torch_load(path: str | Path) -> Any:
    """``torch.load`` limited to tensors and plain containers, with clear errors."""
    path = Path(path)
    _check_file(path)
    if file_format(path) not in ("zip", "pickle"):
        raise CheckpointError(f"{path}: {_NOT_A_CHECKPOINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickling_detail(error)
        if detail is not None:
            raise CheckpointError(
                f"{path}: refused: the file contains Python objects other than tensors and plain "
                "containers, and unpickling them could run code. sdic only reads weights "
                f"(detail: {detail})"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt checkpoint: the pickle inside cannot be read (truncated or damaged file)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is truncated or corrupt "
            f"(an interrupted download?) ({first})"
        ) from None


def detect_kind(obj: Any) -> str:
    """Recognise an authors' checkpoint from its contents."""
    if isinstance(obj, Mapping):
        if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            keys = obj["state_dict"].keys()
            if any(k.startswith(("DIP.", "SAF.")) for k in keys):
                return "sdic"
            if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
                return "e4e"
        if "g_ema" in obj and isinstance(obj["g_ema"], Mapping):
            return "stylegan2"
        if "input_layer.0.weight" in obj and "output_layer.3.weight" in obj:
            return "ir_se50"
        keys = sorted(map(str, obj.keys()))[:8]
        raise CheckpointError(f"unrecognised checkpoint layout (top-level keys: {keys})")
    raise CheckpointError(f"unrecognised checkpoint: a {type(obj).__name__}, expected a dict of tensors")


def _is_unused(key: str) -> bool:
    return key.startswith(UNUSED_PREFIXES)


def _rename(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map the authors' prefixes to ours; return (tensors, dropped never-used keys, unknown keys)."""
    tensors, dropped, unknown = {}, [], []
    for key, value in state.items():
        if _is_unused(key):
            dropped.append(key)
            continue
        for old, new in PREFIXES.items():
            if key.startswith(old):
                tensors[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    return tensors, dropped, unknown


def _latent_avg(obj: Mapping[str, Any], n_latent: int) -> torch.Tensor | None:
    avg = obj.get("latent_avg")
    if avg is None:
        return None
    if not isinstance(avg, torch.Tensor):
        raise CheckpointError(f"latent_avg is a {type(avg).__name__}, expected a tensor")
    if not avg.is_floating_point():
        raise CheckpointError(f"latent_avg is a {avg.dtype} tensor, expected floating point")
    avg = avg.float().reshape(-1, avg.shape[-1])
    return avg.expand(n_latent, -1).clone() if avg.shape[0] == 1 else avg


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
        key = f"{prefix}convs.{GeneratorConfig.conv_index(128, upsampling=False)}.conv.weight"
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


def read_authors_checkpoint(path: str | Path) -> Checkpoint:
    """Read an authors' SDIC, e4e, StyleGAN2 or IR-SE50 file into our tensor names."""
    obj = torch_load(path)
    kind = detect_kind(obj)
    if kind == "ir_se50":
        return Checkpoint(kind, dict(obj), path=str(path))
    if kind == "stylegan2":
        state = {"decoder." + k: v for k, v in obj["g_ema"].items()}
        opts: dict[str, Any] = {}
    else:
        state = dict(obj["state_dict"])
        opts = dict(obj.get("opts") or {}) if isinstance(obj.get("opts"), Mapping) else {}
    config = embedded_config(obj, path)
    if config is None:
        try:
            config = infer_config(state, opts)
        except ValueError as error:
            if kind == "sdic":
                raise CheckpointError(f"{path}: not one of the authors' SDIC architectures ({error})") from None
            config = None  # a custom generator: the training configuration describes the rest
    tensors, dropped, unknown = _rename(state)
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensors outside encoder/decoder/DIP/SAF: {unknown[:10]}")
    n_latent = config.n_latent if config else infer_generator(state, "decoder.").n_latent
    avg = _latent_avg(obj, n_latent)
    if avg is not None:
        tensors["latent_avg"] = avg
    return Checkpoint(kind, tensors, config, dropped, opts, str(path))


# ------------------------------------------------------------ our format
HALF_MIN_NUMEL = 4096  # smaller tensors (biases, BN statistics, noise weights) stay float32


def save_model(
    model: torch.nn.Module, path: str | Path, config: SDICConfig, kind: str = "sdic", half: bool = False,
) -> Path:
    """Write weights as safetensors with the JSON config in the metadata (atomically).

    ``half`` stores the float32 tensors of at least ``HALF_MIN_NUMEL`` values as
    float16 (half the file; loading casts them back to float32).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.dtype == torch.float32 and v.numel() >= HALF_MIN_NUMEL else v
                   for k, v in tensors.items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
                "config": config.to_json()}
    return save_safetensors(tensors, path, metadata)


def read_native(path: str | Path) -> Checkpoint:
    """Read our safetensors format."""
    path = Path(path)
    _check_file(path)
    if file_format(path) != "safetensors":
        raise CheckpointError(f"{path}: {_NOT_A_CHECKPOINT}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file; it is truncated or corrupt ({error})") from None
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file without sdic metadata (format/config)")
    try:
        config = SDICConfig.from_json(metadata["config"])
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: invalid model config in metadata ({error})") from None
    _check_generator_matches(config, tensors, path)
    return Checkpoint(metadata.get("kind", "sdic"), tensors, config, path=str(path), native=True)


CONFIG_MISMATCH = "its tensors do not match the model configuration in its metadata"


def _check_generator_matches(config: SDICConfig, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Compare the generator the JSON config describes with the one the tensors hold."""
    if not any(k.startswith("generator.to_rgbs.") for k in tensors):
        return
    found = infer_generator(tensors, "generator.")
    wrong = [f"{name} {getattr(config.generator, name)} in the config, {getattr(found, name)} in the tensors"
             for name in ("size", "style_dim", "n_mlp") if getattr(config.generator, name) != getattr(found, name)]
    if wrong:
        raise CheckpointError(f"{path}: {CONFIG_MISMATCH}: generator " + "; ".join(wrong))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported file: ours (``.safetensors``, by suffix or content) or the authors' pickles."""
    path = Path(path)
    if path.suffix == ".safetensors" or (path.is_file() and file_format(path) == "safetensors"):
        return read_native(path)
    return read_authors_checkpoint(path)


# ------------------------------------------------------------- applying
def load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str,
              allow_missing: tuple[str, ...] = ()) -> None:
    """Copy tensors into a module; name every missing, unexpected, mis-shaped, mis-typed or non-finite tensor."""
    expected = module.state_dict()
    check_tensors(expected, tensors, source, allow_missing)
    module.load_state_dict({k: v for k, v in tensors.items()}, strict=not allow_missing)


def check_tensors(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], source: str,
                  allow_missing: tuple[str, ...] = ()) -> None:
    """Names and shapes against ``expected``, then dtypes (no integers for floats), then finite values."""
    missing = [k for k in expected if k not in tensors and not k.startswith(allow_missing)]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k}: file {list(tensors[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected if k in tensors and tensors[k].shape != expected[k].shape
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:10]))
    if missing:
        problems.append(f"{len(missing)} missing tensors: " + ", ".join(missing[:10]))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors: " + ", ".join(
            f"{k} {list(tensors[k].shape)}" for k in unexpected[:10]))
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
    wrong_type = [f"{k} is {tensors[k].dtype}" for k in expected
                  if k in tensors and expected[k].is_floating_point() and not tensors[k].is_floating_point()]
    if wrong_type:
        raise CheckpointError(
            f"{source}: {len(wrong_type)} tensor(s) hold integers or booleans where the model has floating-point "
            "weights (a damaged or mislabelled file; casting would load garbage): " + ", ".join(wrong_type[:10]))
    bad = [_non_finite(k, v) for k, v in tensors.items() if k in expected and v.is_floating_point()]
    bad = [text for text in bad if text]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values (a damaged file, or "
                              "weights saved after training diverged): " + "; ".join(bad[:10]))


def _non_finite(name: str, tensor: torch.Tensor) -> str:
    """'' if every value is finite, else the tensor's name with its NaN/inf counts.

    A finite sum proves every value finite (NaN and inf propagate through a sum) at the
    cost of one read, far cheaper than ``isfinite(...).all()`` (which writes a mask);
    only a non-finite sum, NaN/inf or an overflow of the sum, is looked at closely.
    NumPy sums CPU tensors: one thread, no thread-pool start per tensor (measured on the
    faces checkpoint, 309 M values on 2 busy cores: 0.4 s, torch's sum 1.5 s).
    """
    if tensor.numel() == 0:
        return ""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        total = float(tensor.detach().numpy().sum())
    else:
        total = float(tensor.sum())
    if math.isfinite(total):
        return ""
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    if nan == 0 and inf == 0:
        return ""  # finite values whose sum overflowed
    return f"{name} ({nan} NaN, {inf} inf of {tensor.numel()} values)"
