"""ID (SFace) in PyTorch vs onnxruntime, identity separation, and dlib's face descriptor."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image, ImageEnhance

from sdic.alignment import align_face, align_faces
from sdic.metrics.identity import (
    DlibFaceDescriptor,
    IdentitySimilarity,
    SFaceNet,
    load_sface,
    load_sface_weights,
    sface_onnx_path,
)

FACES = Path(__file__).parent / "data" / "faces"
SAME_PERSON_THRESHOLD = 0.363  # OpenCV's cosine threshold for SFace


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1) / 127.5 - 1


def _onnx_session() -> ort.InferenceSession:
    """The shipped graph, minus its dangling weight inputs, with a dynamic batch size."""
    model = onnx.load(str(sface_onnx_path()))
    used = {name for node in model.graph.node for name in node.input}
    inputs = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def faces() -> dict[str, Image.Image]:
    """256px FFHQ-aligned faces: the astronaut 3 ways (same person) and 7 other people."""
    photo = Image.open(FACES / "astronaut.jpg").convert("RGB")
    astro = align_face(photo, 256).image
    variant = photo.rotate(4, resample=Image.Resampling.BICUBIC).resize((400, 400))
    out = {
        "astro": astro,
        "astro_mirrored": astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "astro_rotated_darker": align_face(ImageEnhance.Brightness(variant).enhance(0.8), 256).image,
        "tom": align_face(FACES / "tom_hanks_112.png", 256, transform_size=1024).image,
    }
    for i, f in enumerate(align_faces(FACES / "group_t1.jpg", 256, transform_size=1024)):
        out[f"group{i}"] = f.image
    return out


@pytest.fixture(scope="module")
def metric() -> IdentitySimilarity:
    return IdentitySimilarity()


def test_sface_torch_matches_onnxruntime(faces: dict[str, Image.Image], metric: IdentitySimilarity) -> None:
    real = metric.crop(torch.stack([_tensor(faces["astro"]), _tensor(faces["group0"])]))
    noise = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    x = torch.cat([real, noise]).detach()
    ref = _onnx_session().run(None, {"data": x.numpy()})[0]
    with torch.no_grad():
        out = metric.net(x).numpy()
    assert np.abs(out - ref).max() < 1e-4


def test_sface_weights_dequantized() -> None:
    w = load_sface_weights()
    assert w["conv_1_conv2d_weight_reshaped"].shape == (32, 3, 3, 3)
    assert w["pre_fc1_weight_dequantized"].shape == (128, 1024 * 7 * 7)
    assert w["conv_14_conv2d_weight_reshaped"].dtype == np.float32
    assert isinstance(load_sface(), SFaceNet)


def test_identity_separates_people(faces: dict[str, Image.Image], metric: IdentitySimilarity) -> None:
    assert metric.name == "ID (SFace)"
    names = list(faces)
    with torch.no_grad():
        emb = metric.embed(torch.stack([_tensor(faces[n]) for n in names]))
    sim = (emb @ emb.T).numpy()
    same = [sim[i, j] for i, j in combinations(range(3), 2)]
    different = [sim[i, j] for i, j in combinations(range(len(names)), 2) if j >= 3]
    assert len(different) >= 20
    assert min(same) > 0.85
    assert max(different) < SAME_PERSON_THRESHOLD
    pair = metric(_tensor(faces["astro"])[None], _tensor(faces["astro_mirrored"])[None])
    assert pair.shape == (1,) and pair.item() == pytest.approx(sim[0, 1], abs=1e-5)


def test_identity_is_resolution_independent(metric: IdentitySimilarity) -> None:
    hi = _tensor(align_face(FACES / "astronaut.jpg", 1024).image)[None]
    lo = torch.nn.functional.interpolate(hi, size=(256, 256), mode="area")
    with torch.no_grad():
        assert metric(hi, lo).item() > 0.97


def test_identity_is_differentiable(faces: dict[str, Image.Image], metric: IdentitySimilarity) -> None:
    metric.train()
    assert not metric.net.training  # BatchNorm statistics stay frozen
    x = _tensor(faces["astro"])[None].requires_grad_(True)
    loss = 1 - metric(x, _tensor(faces["tom"])[None]).mean()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.parameters())


def test_dlib_descriptor_second_opinion(faces: dict[str, Image.Image]) -> None:
    desc = DlibFaceDescriptor()
    astro = desc.describe(faces["astro"])
    assert astro.shape == (128,)
    assert desc.distance(faces["astro"], _tensor(faces["astro_rotated_darker"])) < 0.4
    for other in ("tom", "group0", "group1", "group2"):
        assert np.linalg.norm(astro - desc.describe(faces[other])) > desc.same_person_threshold
