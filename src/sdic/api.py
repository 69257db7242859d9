"""``sdic.load``: one entry point for every kind of SDIC model file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from .checkpoints import CONFIG_MISMATCH, CheckpointError, load_into, read_checkpoint
from .devices import resolve_device
from .model import SDICModel, check_precision

BUNDLED_MODELS: dict[str, str] = {"default": "faces64.safetensors"}  # name -> file in sdic/data/models (docs/default_model.md)
# What a bundled model is not for, said once when it is used on photos (``--align``).
BUNDLED_PHOTO_NOTES: dict[str, str] = {
    "default": "the bundled model 'default' was trained on synthetic cartoon faces (docs/default_model.md); "
               "real photos need the authors' FFHQ checkpoint (README.md, section \"The authors' checkpoints\")",
}


def _bundled_path(name: str) -> Path | None:
    from importlib import resources

    if name not in BUNDLED_MODELS:
        return None
    return Path(str(resources.files("sdic") / "data" / "models" / BUNDLED_MODELS[name]))


def load(
    path_or_name: str | Path, device: str | torch.device = "cpu", precision: str = "fp32",
) -> SDICModel:
    """Load an SDIC model (eval mode) from an authors' checkpoint, our format or a bundled name.

    ``precision`` ("fp32", "bf16" or "fp16") is the model's default for ``invert`` and
    ``edit`` (bf16, fp16: autocast on ``device``); the weights stay fp32 either way.
    ``device`` must exist here (:class:`~sdic.devices.DeviceError` lists those that do).
    """
    device = resolve_device(device)  # before reading a large file for a device that does not exist
    check_precision(precision)
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 on a CPU runs PyTorch's reference convolutions, many times slower than fp32; "
                      "it is meant for GPUs without bf16 (on a CPU use fp32 or bf16)", stacklevel=2)
    path = _bundled_path(str(path_or_name)) or Path(path_or_name)
    if not path.exists() and not str(path_or_name).endswith((".pt", ".pth", ".safetensors", ".ckpt")) \
            and "/" not in str(path_or_name):
        known = ", ".join(sorted(BUNDLED_MODELS)) or "none yet"
        raise CheckpointError(f"{path_or_name}: no such file, and not a bundled model name (bundled: {known})")
    checkpoint = read_checkpoint(path)
    if checkpoint.kind != "sdic":
        hint = {
            "e4e": "it holds an e4e encoder and generator but no DIPN/DICN; train SDIC on it "
                   "with `sdic train sdic`",
            "stylegan2": "it holds only a StyleGAN2 generator",
            "ir_se50": "it is the ArcFace identity network used by the ID metric",
        }.get(checkpoint.kind, "")
        raise CheckpointError(f"{path}: not an SDIC checkpoint but a {checkpoint.kind} file; {hint}")
    assert checkpoint.config is not None
    model = _build_with(checkpoint.config, checkpoint.tensors, str(path), precision, checkpoint.native)
    model.source = str(path_or_name)
    return model.to(device).prepare_inference()


def photo_note(model: SDICModel) -> str | None:
    """The note for aligning photos for a bundled model (loaded by name or from its file), else None."""
    source = str(model.source or "")
    for name, note in BUNDLED_PHOTO_NOTES.items():
        bundled = _bundled_path(name)
        if source == name or (bundled is not None and source and Path(source).resolve() == bundled.resolve()):
            return note
    return None


class _SkipRandomInit(TorchFunctionMode):
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


def _build_with(config, tensors: dict[str, torch.Tensor], source: str, precision: str,
                native: bool = False) -> SDICModel:
    """The model with ``tensors`` as its weights, without initialising or copying them.

    The modules are built without initialising their 309M parameters and moved to
    the meta device, checked against the file by ``load_into`` (names, shapes, dtypes
    and finite values, with its error messages), then the file's tensors become the parameters
    (``assign=True``): one copy of the weights in memory instead of two.
    """
    with _SkipRandomInit():
        model = SDICModel(config, precision=precision).to_empty(device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_into's copy into meta tensors is a no-op by design
        try:
            load_into(model, tensors, source)  # names, shapes, dtypes and finite values
        except CheckpointError as error:
            if native and "shape mismatch" in str(error):
                raise CheckpointError(f"{source}: {CONFIG_MISMATCH}: {str(error).removeprefix(source + ': ')}") from None
            raise
    expected = model.state_dict()
    tensors = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v for k, v in tensors.items()}
    model.load_state_dict(tensors, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: no values for {leftover[:10]}")
    return model
