"""From checkpoints to modules: checking tensors, building a model or a generator from a file,
and converting any checkpoint to our format (checked against the model its config describes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from ..config import SDICConfig
from ..errors import InputError
from ..model import SDICModel
from ..networks import Generator
from ..ops import Execution, set_execution
from .authors import infer_generator
from .bundled import resolve_source
from .kinds import GENERATOR_KINDS, KINDS, MODEL_PARTS, Checkpoint, CheckpointError, require_kind
from .native import CONFIG_MISMATCH, save_tensors
from .reading import read_checkpoint


# ------------------------------------------------------------------ checks
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


# ------------------------------------------------------------------ the whole model
class SkipRandomInit(TorchFunctionMode):
    """Random initialisers become ``torch.empty``: the values are overwritten by the file.

    The model is then built on the CPU without touching most of its memory (the
    uninitialised pages are never written), and moved to the meta device.
    (Building directly on the meta device sends arithmetic such as ``randn / lr``
    through Python meta functions whose first use imports sympy: about a second.)
    """

    FACTORIES = {torch.randn, torch.rand, torch.randn_like, torch.rand_like}
    IN_PLACE = {torch.Tensor.normal_, torch.Tensor.uniform_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES:
            kwargs.pop("generator", None)
            if func in (torch.randn_like, torch.rand_like):
                return torch.empty_like(*args, **kwargs)
            return torch.empty(*args, **kwargs)
        if func in self.IN_PLACE or getattr(func, "__module__", "") == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def empty_model(config: SDICConfig, precision: str = "fp32") -> SDICModel:
    """The model ``config`` describes on the meta device: names, shapes and dtypes, no memory."""
    with SkipRandomInit():
        return SDICModel(config, precision=precision).to_empty(device="meta")


def build_model(checkpoint: Checkpoint, precision: str = "fp32") -> SDICModel:
    """The SDIC model with the checkpoint's tensors as its weights, without initialising or copying them.

    The modules are built without initialising their 309M parameters and moved to
    the meta device, checked against the file by ``load_into`` (names, shapes, dtypes
    and finite values, with its error messages), then the file's tensors become the parameters
    (``assign=True``): one copy of the weights in memory instead of two.
    """
    assert checkpoint.config is not None
    source = checkpoint.path
    model = empty_model(checkpoint.config, precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_into's copy into meta tensors is a no-op by design
        try:
            load_into(model, checkpoint.tensors, source)  # names, shapes, dtypes and finite values
        except CheckpointError as error:
            if checkpoint.native and "shape mismatch" in str(error):
                raise CheckpointError(f"{source}: {CONFIG_MISMATCH}: {str(error).removeprefix(source + ': ')}") from None
            raise
    expected = model.state_dict()
    tensors = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v
               for k, v in checkpoint.tensors.items()}
    model.load_state_dict(tensors, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: no values for {leftover[:10]}")
    return model


# ------------------------------------------------------------------ the generator
def build_generator(checkpoint: Checkpoint) -> Generator:
    """The checkpoint's StyleGAN2 generator (its configuration: the file's, else inferred from its tensors)."""
    config = checkpoint.config
    if config is not None:
        generator = Generator(config.generator, tap_resolution=config.tap_resolution)
    else:
        generator = Generator(infer_generator(checkpoint.tensors, "generator."))
    load_into(generator, checkpoint.part("generator."), checkpoint.path)
    latent_avg = checkpoint.tensors.get("latent_avg")
    if latent_avg is not None:  # the file's W average: truncation moves toward it
        generator.set_w_avg(latent_avg)
    return generator


def load_generator(path_or_name: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The StyleGAN2 generator of any file that holds one, eval mode: an NVIDIA network pickle
    (``G_ema``), a rosinality ``.pt`` (``g_ema``), the decoder of an authors' SDIC or e4e file,
    our ``.safetensors``, the exports of ``sdic train``, a bundled model's name (``"default"``).

    Configuration: ours (.safetensors) carry it; the .pt exports of our trainers carry
    ``sdic_config``; NVIDIA pickles describe theirs; for other authors' files it is inferred
    from the tensors. Truncation (``G.mapping(z, truncation_psi=...)``) moves toward the
    file's W average (``w_avg`` / ``latent_avg``), or toward one estimated from 10000 z.
    """
    checkpoint = require_kind(read_checkpoint(resolve_source(path_or_name)), GENERATOR_KINDS,
                              "a file with a StyleGAN2 generator")
    return set_execution(build_generator(checkpoint).to(device).eval(), Execution.inference(device))


# ------------------------------------------------------------------ conversion
def convert(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write a checkpoint read from an authors' file (or a ``.pt`` export) in our format.

    The tensors are checked against the model the checkpoint's configuration describes:
    the parts its kind holds must all be there (``KINDS``), and whatever else of the model it
    carries (a StyleGAN2 file's ``latent_avg``) is kept.
    """
    if checkpoint.native:
        # A copy would change nothing but the name, and doubles a 1.2 GB file for nothing.
        raise InputError(
            f"{checkpoint.path}: already in sdic's format (a .safetensors {checkpoint.kind} model with its "
            "configuration); nothing to convert: every command and sdic.load read it as it is")
    if checkpoint.config is None or not KINDS[checkpoint.kind].parts:
        raise CheckpointError(f"{checkpoint.path}: a {checkpoint.kind} file cannot be converted")
    required = KINDS[checkpoint.kind].parts
    keep = tuple(part for part in MODEL_PARTS
                 if part in required or any(k.startswith(part) for k in checkpoint.tensors))
    expected = empty_model(checkpoint.config).state_dict()
    check_tensors(expected, checkpoint.tensors, checkpoint.path,
                  allow_missing=tuple(part for part in MODEL_PARTS if part not in required))
    tensors = {k: checkpoint.tensors[k].to(v.dtype) for k, v in expected.items() if k.startswith(keep)}
    return save_tensors(tensors, path, checkpoint.config, checkpoint.kind)
