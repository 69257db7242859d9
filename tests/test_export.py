"""``sdic export``: ONNX graphs in onnxruntime, ``torch.export`` programs and TorchScript traces
match the PyTorch model (``SDICModel.invert`` / ``edit`` as users run them) at batch 1 and 3
through one graph; the manifest describes them; bad requests get one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import sdic
from sdic import demo
from sdic.cli.main import main
from sdic.config import tiny
from sdic.errors import InputError, OutputError
from sdic.export import ExportError, export, graph_specs
from sdic.inversion import Inversion
from sdic.model import SDICModel
from sdic.ops import Execution

ROOT = Path(__file__).resolve().parents[1]
LATENT_TOLERANCE = 1e-4  # codes, latents, tap features: max abs error
IMAGE_TOLERANCE = 1e-3  # images and the discrepancy map (values in about [-1, 1])
FACTORS = (2.0, -1.5, 0.5)  # one edit factor per sample of the batch of three
DIRECTION = "smile"
IMAGE_FIELDS = {"image", "initial_image", "discrepancy"}


@pytest.fixture(scope="module")
def model() -> SDICModel:
    return sdic.load("default")


@pytest.fixture(scope="module")
def reference(model):
    """The inference path's inversion of three sample faces and their per-sample edits."""
    inversion = model.invert(demo.sample_faces()[:3])
    edits = Inversion.cat([model.edit(inversion[i], DIRECTION, factor) for i, factor in enumerate(FACTORS)])
    direction = sdic.editing.named(DIRECTION, model.config.directions).vector
    direction = direction.reshape(1, -1).expand(model.config.n_latent, -1).contiguous()
    return inversion, edits, direction


@pytest.fixture(scope="module")
def onnx_export(model, tmp_path_factory):
    return export(model, tmp_path_factory.mktemp("onnx") / "export", "onnx")


def _error(expected: torch.Tensor, actual) -> tuple[float, float]:
    """(max abs error, max abs error / max abs of the reference)."""
    actual = torch.as_tensor(np.asarray(actual))
    assert actual.shape == expected.shape
    error = float((actual - expected).abs().max())
    return error, error / float(expected.abs().max())


def _check(name: str, expected: torch.Tensor, actual, label: str) -> None:
    error, relative = _error(expected, actual)
    print(f"{label} {name}: max abs {error:.2e}, relative {relative:.2e}")
    assert error <= (IMAGE_TOLERANCE if name in IMAGE_FIELDS else LATENT_TOLERANCE), (label, name, error)


def _inputs(model, reference, graph: str, batch: int) -> dict[str, torch.Tensor]:
    inversion, _, direction = reference
    if graph == "inversion":
        return {"input": inversion.input[:batch]}
    return {"latents": inversion.latents[:batch], "feature": inversion.feature[:batch],
            "tap": inversion.tap[:batch], "direction": direction, "factor": torch.tensor(FACTORS[:batch])}


def _expected(model, reference, graph: str, batch: int) -> dict[str, torch.Tensor]:
    inversion, edits, _ = reference
    source = inversion if graph == "inversion" else edits
    fields = [spec.name.removeprefix("edited_") for spec in graph_specs(model.config)[graph][1]]
    return {name: getattr(source, name)[:batch] for name in fields}


def _check_graphs(model, reference, run, label: str) -> None:
    """``run(graph, inputs)`` -> outputs in the manifest's order, checked against the model."""
    for graph in ("inversion", "edit"):
        for batch in (1, 3):
            outputs = run(graph, _inputs(model, reference, graph, batch))
            expected = _expected(model, reference, graph, batch)
            assert len(outputs) == len(expected)
            for (name, value), actual in zip(expected.items(), outputs):
                _check(name, value, actual, f"{label} {graph} batch {batch}")


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_onnx_graphs_run_in_onnxruntime_and_match_pytorch(model, reference, onnx_export):
    print(f"onnx export seconds: {onnx_export.seconds}")
    sessions = {graph: _session(path) for graph, path in onnx_export.graphs.items()}

    def run(graph, inputs):
        return sessions[graph].run(None, {name: value.numpy() for name, value in inputs.items()})

    _check_graphs(model, reference, run, "onnx")
    assert model.generator.execution == Execution.inference("cpu")  # the model's own execution is back


def test_the_manifest_describes_the_onnx_graphs(model, onnx_export):
    manifest = json.loads(onnx_export.manifest.read_text())
    assert manifest["format"] == "sdic-export" and manifest["graph_format"] == "onnx"
    assert manifest["model"]["digest"] == model.digest
    assert sdic.SDICConfig.from_dict(manifest["model"]["config"]) == model.config
    assert manifest["framing"]["input_size"] == model.config.input_size
    assert sorted(manifest["files"]) == sorted(p.name for p in onnx_export.directory.iterdir())
    assert DIRECTION in manifest["directions"]["names"]
    for graph, path in onnx_export.graphs.items():
        entry = manifest["graphs"][graph]
        assert entry["file"] == path.name and entry["opset"] == 18
        session = _session(path)
        for specs, values in ((entry["inputs"], session.get_inputs()), (entry["outputs"], session.get_outputs())):
            assert [s["name"] for s in specs] == [v.name for v in values]
            assert [s["shape"] for s in specs] == [list(v.shape) for v in values]  # "batch" is the dynamic dim
    edit_inputs = {s["name"]: s["shape"] for s in manifest["graphs"]["edit"]["inputs"]}
    assert edit_inputs["direction"] == [model.config.n_latent, model.config.generator.style_dim]


def _doc_example() -> str:
    text = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text.split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_onnxruntime_example_runs(model, onnx_export, tmp_path, monkeypatch):
    code = _doc_example()
    assert len([line for line in code.splitlines() if line and not line.startswith(("import", "from"))]) == 5
    shutil.copytree(onnx_export.directory, tmp_path / "export")
    shutil.copy(demo.sample_faces()[0], tmp_path / "face.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/formats.md", "exec"), namespace)
    inversion = model.invert("face.png")
    _check("image", inversion.image, namespace["result"], "doc example")
    _check("image", model.edit(inversion, DIRECTION, 2.0).image, namespace["smiling"], "doc example edit")


def test_torch_export_programs_match_pytorch(model, reference, tmp_path):
    result = export(model, tmp_path / "pt2", "exported")
    print(f"exported seconds: {result.seconds}")
    programs = {graph: torch.export.load(path).module() for graph, path in result.graphs.items()}

    def run(graph, inputs):
        with torch.no_grad():
            return programs[graph](*inputs.values())

    _check_graphs(model, reference, run, "exported")


def test_the_command_writes_torchscript_traces_that_match_pytorch(model, reference, tmp_path, capsys):
    assert main(["export", "default", "--format", "torchscript", "-o", str(tmp_path / "ts")]) == 0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(printed)
    traces = {graph: torch.jit.load(str(tmp_path / "ts" / f"{graph}.torchscript.pt")) for graph in ("inversion", "edit")}

    def run(graph, inputs):
        with torch.no_grad():
            return traces[graph](*inputs.values())

    _check_graphs(model, reference, run, "torchscript")
    manifest = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert manifest["graph_format"] == "torchscript" and "opset" not in manifest["graphs"]["edit"]


# ------------------------------------------------------------------ bad requests
@pytest.fixture
def tiny_model() -> SDICModel:
    torch.manual_seed(0)
    return SDICModel(tiny()).eval()


def test_an_unknown_format_is_refused_before_any_work(tiny_model, tmp_path):
    with pytest.raises(InputError, match="unknown export format 'tflite'; choose one of onnx, torchscript, exported"):
        export(tiny_model, tmp_path / "out", "tflite")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_an_unusable_output_folder_is_refused(tiny_model, tmp_path, where):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputError, match="a_file"):
        export(tiny_model, tmp_path / where, "exported")


def test_only_an_sdic_model_on_the_cpu_is_exported(tiny_model, tmp_path):
    with pytest.raises(InputError, match="needs an SDICModel"):
        export(tiny_model.generator, tmp_path, "onnx")
    with pytest.raises(InputError, match="on the CPU"):
        export(tiny_model.to("meta"), tmp_path, "onnx")


def test_a_model_that_does_not_trace_gets_one_line_and_leaves_the_folder_alone(tiny_model, tmp_path, monkeypatch):
    encoder_forward = tiny_model.encoder.forward

    def data_dependent(x):  # Python control flow on tensor values: not a graph
        return encoder_forward(x) if float(x.mean()) > -2 else encoder_forward(-x)

    monkeypatch.setattr(tiny_model.encoder, "forward", data_dependent)
    (tmp_path / "kept.txt").write_text("an earlier file")
    with pytest.raises(ExportError, match=r"^the inversion graph cannot be exported \(torch.export failed: ") as caught:
        export(tiny_model, tmp_path, "exported")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]  # no partial export, no staging folder
    assert tiny_model.training is False and tiny_model.generator.execution == Execution.training()


def test_the_command_reports_bad_requests_in_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    cases = [(["--format", "tflite", "-o", str(tmp_path / "out")], "unknown export format 'tflite'"),
             (["-o", str(tmp_path / "a_file")], "exists and is not a folder")]
    for arguments, message in cases:
        assert main(["export", "default", *arguments]) == 2
        error = capsys.readouterr().err
        assert error.startswith("sdic export: error: ") and message in error and error.count("\n") == 1
