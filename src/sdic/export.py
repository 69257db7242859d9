"""Export an SDIC model as graphs for other runtimes: ONNX, TorchScript, ``torch.export``.

Two graphs, both with a dynamic batch dimension (docs/formats.md, "Export"):

* ``inversion``: input (the canvas [B, 3, S, S]) -> codes, discrepancy, latents (W'), feature (F),
  tap (G7), initial_image, image (:meth:`SDICModel.forward`);
* ``edit``: latents, feature, tap, direction, factor -> image, edited_latents, edited_feature,
  edited_tap: the linear edit ``W_e = W' + factor * d`` rendered with the compensation carried
  along (:func:`sdic.model.compensated_synthesis`); its outputs feed a further edit.

(ONNX names a value once: inputs and outputs cannot share a name.)

The graphs are traced under :meth:`Execution.export` (folded fp32 weights, whole batches) with
the model's fixed noise; every export writes ``manifest.json`` beside them (tensor names and
shapes, the input framing, the opset, the model's configuration and digest), and the model's
bundled linear directions as ``directions.safetensors`` (one [n_latent, style_dim] tensor each),
ready for the edit graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import __version__, editing
from .config import SDICConfig
from .errors import InputError, OutputError, SDICError
from .files import save_safetensors, write_error_reason
from .images import content_rows_at
from .model import SDICModel, compensated_synthesis
from .networks import Generator
from .ops import Execution, set_execution
from .optional import require
from .outputs import OutputFolder

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported": ".pt2"}
ONNX_OPSET = 18  # the opset PyTorch's ONNX exporter implements natively (no version conversion)
MANIFEST_NAME = "manifest.json"
DIRECTIONS_NAME = "directions.safetensors"
MANIFEST_FORMAT = "sdic-export"
BATCH = "batch"  # the name of the dynamic dimension, in the manifest and the ONNX graphs
TRACE_BATCH = 2  # traced with two samples: torch.export specialises sizes 0 and 1
GRAPHS = ("inversion", "edit")


class ExportError(SDICError, RuntimeError):
    """A model could not be exported in the requested format (the tracer's reason follows)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: its name, shape (``"batch"`` for the dynamic dimension), meaning."""

    name: str
    shape: tuple[int | str, ...]
    description: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": "float32", "description": self.description}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote: one file per graph and the manifest, in ``directory``."""

    format: str
    directory: Path
    graphs: dict[str, Path]  # graph name -> file
    manifest: Path
    files: list[Path]  # everything written: the graphs, the manifest, directions.safetensors
    seconds: dict[str, float]  # graph name -> time to trace, convert and write it


# ------------------------------------------------------------------ the graphs
def graph_specs(config: SDICConfig) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """(inputs, outputs) of each graph, with shapes derived from the configuration."""
    s, r = config.input_size, config.generator.size
    n, d = config.n_latent, config.generator.style_dim
    c, t = config.tap_channels, config.tap_resolution
    b = BATCH
    latents = TensorSpec("latents", (b, n, d), "compensated W+ code W' (edited W_e after an edit)")
    feature = TensorSpec("feature", (b, c, t, t), "compensated tap feature F")
    tap = TensorSpec("tap", (b, c, t, t), "the generator's own tap feature G7 for the latents")
    inversion_in = [TensorSpec("input", (b, 3, s, s), "the input canvas, RGB in [-1, 1] (see framing)")]
    inversion_out = [
        TensorSpec("codes", (b, n, d), "e4e W+ codes (latent average added)"),
        TensorSpec("discrepancy", (b, 3, s, s), "DIPN discrepancy map"),
        latents, feature, tap,
        TensorSpec("initial_image", (b, 3, r, r), "e4e reconstruction G(codes), [-1, 1] unclamped"),
        TensorSpec("image", (b, 3, r, r), "SDIC result, [-1, 1] unclamped"),
    ]
    edit_in = [latents, feature, tap,
               TensorSpec("direction", (n, d), "linear edit direction, one row per W+ entry "
                                               "(repeat a [style_dim] vector over the rows)"),
               TensorSpec("factor", (b,), "edit strength per sample (0: no edit)")]
    edit_out = [TensorSpec("image", (b, 3, r, r), "edited image, [-1, 1] unclamped"),
                TensorSpec("edited_latents", (b, n, d), "edited code W_e = latents + factor * direction"),
                TensorSpec("edited_feature", (b, c, t, t), "compensated feature of the edit, F - G7 + G7_e"),
                TensorSpec("edited_tap", (b, c, t, t), "tap feature G7_e of the edited code")]
    return {"inversion": (inversion_in, inversion_out), "edit": (edit_in, edit_out)}


class InversionGraph(nn.Module):
    """The input canvas -> the inversion's tensors, in the order of :func:`graph_specs`."""

    def __init__(self, model: SDICModel) -> None:
        super().__init__()
        self.model = model
        self.outputs = [spec.name for spec in graph_specs(model.config)["inversion"][1]]

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(input)
        return tuple(getattr(result, name) for name in self.outputs)


class EditGraph(nn.Module):
    """A linear edit with the compensation carried along (only the generator is needed)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(
        self, latents: torch.Tensor, feature: torch.Tensor, tap: torch.Tensor,
        direction: torch.Tensor, factor: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        edited = latents + factor[:, None, None] * direction  # LinearDirection.apply, one factor per sample
        image, edited_feature, edited_tap = compensated_synthesis(self.generator, edited, feature, tap)
        return image, edited, edited_feature, edited_tap


def graph_module(model: SDICModel, graph: str) -> nn.Module:
    return InversionGraph(model) if graph == "inversion" else EditGraph(model.generator)


def example_inputs(config: SDICConfig, graph: str, batch: int = TRACE_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes for ``graph`` (images in [-1, 1], small latents)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [tuple(batch if dim == BATCH else dim for dim in spec.shape) for spec in graph_specs(config)[graph][0]]
    if graph == "inversion":
        return (torch.rand(shapes[0], generator=generator) * 2 - 1,)
    return tuple(torch.randn(shape, generator=generator) for shape in shapes)


def _dynamic_shapes(config: SDICConfig, graph: str) -> dict[str, dict[int, object]]:
    batch = torch.export.Dim(BATCH, min=1)
    return {spec.name: {0: batch} if spec.shape[0] == BATCH else {} for spec in graph_specs(config)[graph][0]}


def linear_directions(config: SDICConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The bundled directions the edit graph can apply, as [n_latent, style_dim], and the others.

    GANSpace edits set a component to a value measured on each code: not a fixed direction.
    """
    rows, width = config.n_latent, config.generator.style_dim
    tensors, others = {}, []
    for name in editing.available(config.directions):
        direction = editing.named(name, config.directions)
        vector = direction.vector.float().reshape(-1, width) if isinstance(direction, editing.LinearDirection) else None
        if vector is not None and vector.shape[0] in (1, rows):
            tensors[name] = vector.expand(rows, width).contiguous()
        else:
            others.append(name)
    return tensors, others


# ------------------------------------------------------------------ the formats
def _trace(module: nn.Module, inputs: tuple, config: SDICConfig, graph: str) -> torch.export.ExportedProgram:
    return torch.export.export(module, inputs, dynamic_shapes=_dynamic_shapes(config, graph))


def _write_exported(module: nn.Module, inputs: tuple, config: SDICConfig, graph: str, path: Path, opset: int) -> dict:
    program = _graph_step(graph, "torch.export", lambda: _trace(module, inputs, config, graph))
    torch.export.save(program, path)
    return {}


def _write_torchscript(module: nn.Module, inputs: tuple, config: SDICConfig, graph: str, path: Path, opset: int) -> dict:
    # Traced, not scripted: the networks use dataclasses, autocast regions and Python-level
    # structure that TorchScript's compiler does not accept. Under the export execution no
    # Python branch depends on the batch size, so the trace records it symbolically.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived constants (fixed sizes)
        traced = _graph_step(graph, "torch.jit.trace",
                             lambda: torch.jit.trace(module, inputs, check_trace=False))
    torch.jit.save(traced, str(path))
    return {}


def _write_onnx(module: nn.Module, inputs: tuple, config: SDICConfig, graph: str, path: Path, opset: int) -> dict:
    require("onnxscript", "export", "ONNX export")
    program = _graph_step(graph, "torch.export", lambda: _trace(module, inputs, config, graph))
    _, outputs = graph_specs(config)[graph]

    def convert():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # axis-renaming notes: all batch axes are one dimension
            return torch.onnx.export(
                program, inputs, dynamic_shapes=_dynamic_shapes(config, graph), dynamo=True,
                output_names=[spec.name for spec in outputs], opset_version=opset, optimize=True, verbose=False)

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), _quiet("torch.onnx"):
        onnx_program = _graph_step(graph, "ONNX conversion", convert)  # (it prints its progress)
    # One file; above protobuf's 2 GB the exporter moves the weights to NAME.data beside it.
    onnx_program.save(path)
    return {"opset": onnx_program.model.opset_imports.get("", opset)}


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from ``logger_name`` (the ONNX exporter logs a warning per optional operator set)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


WRITERS: dict[str, Callable[..., dict]] = {
    "onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported,
}


def _graph_step(graph: str, step: str, run: Callable) -> object:
    """``run()``; a failure of the tracer or converter becomes one :class:`ExportError` line."""
    try:
        return run()
    except SDICError:
        raise
    except Exception as error:  # the tracers raise many types; each means "this model does not trace"
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ExportError(f"the {graph} graph cannot be exported ({step} failed: "
                          f"{type(error).__name__}: {reason[:300]})") from error


# ------------------------------------------------------------------ export
def check_format(format: str) -> str:
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def export(model: SDICModel, directory: str | Path, format: str = "onnx", opset: int = ONNX_OPSET) -> ExportResult:
    """Write the inversion and edit graphs of ``model`` in ``format`` and a manifest into ``directory``.

    ``format``: ``onnx`` (``opset``), ``torchscript`` (``torch.jit.trace``) or ``exported``
    (``torch.export`` programs, ``torch.export.save``). The folder is created; files of an
    earlier export there are replaced, and only once every graph has been written. The
    model's training mode and execution (the generator's, set on every network) are restored.
    """
    check_format(format)
    if not isinstance(model, SDICModel):
        raise InputError(f"export needs an SDICModel (from sdic.load), got {type(model).__name__}")
    if model.device.type != "cpu":
        raise InputError(f"export a model on the CPU (sdic.load(..., device='cpu')); this one is on {model.device}")
    directory = Path(directory)
    names = {graph: f"{graph}{FORMATS[format]}" for graph in GRAPHS}
    with OutputFolder(directory, note=lambda line: None) as folder, _staging(folder.path) as staging:
        seconds, details = _write_graphs(model, format, names, staging, opset)
        directions, others = linear_directions(model.config)
        if directions:
            save_safetensors(directions, staging / DIRECTIONS_NAME, durable=False)
        files = sorted([path.name for path in staging.iterdir()] + [MANIFEST_NAME])
        manifest = build_manifest(model, format, names, details)
        manifest["files"] = files
        manifest["directions"] = {"file": DIRECTIONS_NAME if directions else None, "names": sorted(directions),
                                  "not_linear": others}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        _publish(staging, folder.path)
    return ExportResult(format, directory, {graph: directory / name for graph, name in names.items()},
                        directory / MANIFEST_NAME, [directory / name for name in files], seconds)


def _write_graphs(
    model: SDICModel, format: str, names: dict[str, str], folder: Path, opset: int,
) -> tuple[dict[str, float], dict[str, dict]]:
    """Trace and write every graph into ``folder``: (seconds, format details) per graph."""
    seconds: dict[str, float] = {}
    details: dict[str, dict] = {}
    with _export_execution(model):
        for graph in GRAPHS:
            start = time.perf_counter()
            module = graph_module(model, graph).eval()
            details[graph] = WRITERS[format](module, example_inputs(model.config, graph), model.config, graph,
                                             folder / names[graph], opset)
            seconds[graph] = time.perf_counter() - start
    return seconds, details


@contextlib.contextmanager
def _export_execution(model: SDICModel) -> Iterator[None]:
    """Eval mode under :meth:`Execution.export`; the model's own mode and execution afterwards."""
    was_training, execution = model.training, model.generator.execution
    nn.Module.train(model, False)
    set_execution(model, Execution.export())
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.train(model, was_training)
        set_execution(model, execution)


@contextlib.contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A hidden folder inside ``folder`` for the files being written; removed whatever happens."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=".sdic-export-", dir=folder))
    except OSError as error:
        raise OutputError(f"{folder}: cannot write the export there ({write_error_reason(error)})") from None
    try:
        yield staging
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(f"{folder}: writing the export failed ({write_error_reason(error)}); "
                          "the folder is left as it was") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path) -> None:
    """Move every written file into ``folder`` (replacing an earlier export's), manifest last."""
    files = sorted(staging.iterdir(), key=lambda path: path.name == MANIFEST_NAME)
    for path in files:
        os.replace(path, folder / path.name)


def build_manifest(model: SDICModel, format: str, names: dict[str, str], details: dict[str, dict]) -> dict:
    """What a user of the graphs needs: tensors, framing, opset, the model's identity."""
    config = model.config
    specs = graph_specs(config)
    top, bottom = content_rows_at(config, config.input_size)
    return {
        "format": MANIFEST_FORMAT, "version": 1, "graph_format": format,
        "dynamic_dimensions": {BATCH: "number of samples, 1 or more; one value for every tensor of a call"},
        "framing": {
            "layout": "NCHW", "channels": "RGB", "dtype": "float32", "range": [-1.0, 1.0],
            "input_size": config.input_size, "domain": config.domain, "content_rows": [top, bottom],
            "how": ("the photo, resized (bilinear, antialiased) to content_rows height x input_size width, "
                    "placed in rows content_rows of a zero canvas; faces fill the canvas"),
        },
        "output_size": config.generator.size,
        "noise": "the model's fixed noise buffers (deterministic)",
        "graphs": {graph: {"file": names[graph], **details[graph], "inputs": [s.to_dict() for s in specs[graph][0]],
                           "outputs": [s.to_dict() for s in specs[graph][1]]} for graph in GRAPHS},
        "model": {"name": config.name, "source": model.source, "digest": model.digest, "config": config.to_dict()},
        "sdic": __version__, "torch": torch.__version__,
    }
