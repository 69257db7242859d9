"""Tests of the projected discriminator (EfficientNet-Lite0 features) and DiffAugment.

The backbone is checked against its published file (SHA-256) and on a natural photo: an
ImageNet class it must recognise and the agreement of every BatchNorm's input statistics
with the running statistics stored in the file (which a wrong layer, stride or padding
breaks). Training runs use the tiny preset with a 64x64 backbone input (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdic.files import file_sha256
from sdic.training import checkpointing, train
from sdic.training import config as C
from sdic.training.diffaugment import diff_augment, parse_policy
from sdic.training.efficientnet import efficientnet_lite0_path, load_efficientnet_lite0
from sdic.training.loop import SharedRandom
from sdic.training.projected import FeatureProjector, ProjectedDiscriminator, d_hinge_loss, g_hinge_loss

DATA = Path(__file__).parent / "data"
FOOTBALL_HELMET = 560  # ImageNet class index
QUIET = ["data.workers=0", "run.progress=false", "run.tensorboard=false", "run.image_every=0",
         "run.val_every=0", "run.val_batches=1", "run.log_every=1"]


@pytest.fixture(scope="module")
def backbone():
    return load_efficientnet_lite0()


def photo_crops(size: int = 224) -> torch.Tensor:
    """The astronaut photo and its four quadrants, in [-1, 1]."""
    image = Image.open(DATA / "faces" / "astronaut.jpg").convert("RGB")
    w, h = image.size
    boxes = [(0, 0, w, h), (0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h),
             (w // 2, h // 2, w, h)]
    crops = [np.array(image.crop(b).resize((size, size), Image.BILINEAR)) for b in boxes]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


# ------------------------------------------------------------------ backbone
def test_backbone_file_is_the_published_one():
    path = efficientnet_lite0_path()
    assert file_sha256(path) == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_backbone_recognises_a_known_object(backbone):
    # the astronaut holds her helmet in the bottom-right quadrant of the photo
    with torch.no_grad():
        probs = backbone(photo_crops()[4:5]).softmax(1)[0]
    assert int(probs.argmax()) == FOOTBALL_HELMET
    assert float(probs[FOOTBALL_HELMET]) > 0.5


def test_backbone_batchnorm_inputs_match_their_stored_statistics(backbone):
    seen = []

    def record(module, inputs, _):
        x = inputs[0]
        seen.append((x.var(dim=(0, 2, 3)), module.running_var))

    hooks = [m.register_forward_hook(record) for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            backbone(photo_crops())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 49
    corr = [np.corrcoef(np.log(v.numpy() + 1e-5), np.log(r.numpy() + 1e-5))[0, 1] for v, r in seen]
    assert np.mean(corr) > 0.85 and np.median(corr) > 0.9, np.round(corr, 2)


def test_a_damaged_weight_file_is_refused(tmp_path):
    from sdic.metrics._weights import MissingWeightsError

    damaged = tmp_path / efficientnet_lite0_path().name
    data = bytearray(efficientnet_lite0_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(MissingWeightsError, match="SHA-256"):
        load_efficientnet_lite0(damaged)


# ------------------------------------------------------------- discriminator
def test_projected_discriminator_shapes(backbone):
    d = ProjectedDiscriminator(128, channels=8, width=16, backbone=backbone)
    assert d.features.resolutions == (32, 16, 8, 4)
    features = d.features(torch.zeros(2, 3, 64, 64))  # resized to 128 inside
    assert [tuple(f.shape) for f in features] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4)]
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 25 + 25 + 25 + 1)
    small = ProjectedDiscriminator(64, channels=8, width=16, backbone=backbone)
    assert small.features.resolutions == (16, 8, 4, 2)
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 25 + 25 + 1 + 1)


def test_projections_are_fixed_and_seeded(backbone):
    a = FeatureProjector(64, 8, seed=3, backbone=backbone)
    b = FeatureProjector(64, 8, seed=3, backbone=backbone)
    c = FeatureProjector(64, 8, seed=4, backbone=backbone)
    assert torch.equal(a.ccm[0].weight, b.ccm[0].weight) and not torch.equal(a.ccm[0].weight, c.ccm[0].weight)
    d = ProjectedDiscriminator(64, 8, 16, backbone=backbone)
    d.requires_grad_(True).train()
    assert not any(p.requires_grad for p in d.features.parameters())
    assert all(p.requires_grad for p in d.discriminators.parameters())
    assert not d.features.training and not d.features.backbone._bn0.training


def test_gradients_reach_the_generator_but_not_the_backbone(backbone):
    torch.manual_seed(0)
    d = ProjectedDiscriminator(64, 8, 16, backbone=backbone)
    before = {k: v.clone() for k, v in d.features.state_dict().items()}
    image_source = torch.randn(2, 3, 32, 32, requires_grad=True)  # stands in for G's output
    g_hinge_loss(d(torch.tanh(image_source))).backward()
    assert image_source.grad is not None and image_source.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.features.parameters())
    optim = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=0.1)
    loss = d_hinge_loss(d(torch.rand(2, 3, 32, 32) * 2 - 1), d(torch.tanh(image_source.detach())))
    loss.backward()
    optim.step()
    after = d.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included


def test_hinge_losses():
    real, fake = torch.tensor([[2.0, 0.5]]), torch.tensor([[-2.0, 0.0]])
    assert float(d_hinge_loss(real, fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(g_hinge_loss(fake)) == pytest.approx(1.0)


# --------------------------------------------------------------- DiffAugment
def uniform_source(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.rand(*shape, generator=g)


def test_diffaugment_is_identity_at_strength_zero():
    x = torch.randn(3, 3, 16, 16)
    policy = parse_policy("color,translation,cutout")
    assert torch.equal(diff_augment(x, policy, 0.0, uniform_source()), x)
    assert torch.equal(diff_augment(x, (), 1.0, uniform_source()), x)
    assert not torch.allclose(diff_augment(x, policy, 1.0, uniform_source()), x)


def test_diffaugment_is_differentiable():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        fn = lambda t, p=policy: diff_augment(t, parse_policy(p), 0.7, uniform_source(1))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,)), policy


def test_translation_is_a_shift_with_zeros_shifted_in():
    x = torch.arange(2 * 1 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16) + 1
    draws = iter([torch.tensor([[0.0, 0.99], [0.5, 0.5]])])  # shifts (-2, +2) and (0, 0) at 1/8 of 16
    out = diff_augment(x, ("translation",), 1.0, lambda *shape: next(draws))
    expected = torch.zeros_like(x[0])
    expected[:, :14, 2:] = x[0, :, 2:, :14]  # content moved up by 2 and right by 2
    assert torch.equal(out[0], expected)
    assert torch.equal(out[1], x[1])


def test_cutout_zeroes_a_square_of_half_the_size():
    x = torch.ones(4, 3, 16, 16)
    out = diff_augment(x, ("cutout",), 1.0, uniform_source(2))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert (zeros <= 64).all() and (zeros > 0).all()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # the same square in every channel
    centred = diff_augment(x, ("cutout",), 1.0, lambda *shape: torch.full(shape, 0.5))
    assert int((centred[0, 0] == 0).sum()) == 64


def test_unknown_policy_is_a_config_error():
    with pytest.raises(C.ConfigError, match="unknown DiffAugment policy"):
        C.load("stylegan2", None, ["diffaugment=color,zoom"])
    with pytest.raises(C.ConfigError, match="discriminator must be"):
        C.load("stylegan2", None, ["discriminator=vision"])


# ------------------------------------------------------------------ training
def make_images(folder: Path, count: int = 8, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.clip(rng.integers(0, 255, size=3) + rng.integers(-40, 40, size=(size, size, 3)), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def projected_config(out: Path, data: Path, steps: int):
    return C.load("stylegan2", None, [
        "model=tiny", f"data.path={data}", f"run.out={out}", f"run.steps={steps}", "run.batch_size=2",
        "stddev_group=2", "path_every=2", "discriminator=projected", "projected_size=64",
        "projected_channels=8", "projected_width=16", "diffaugment=color,translation,cutout", *QUIET])


def test_projected_training_resumes_bit_for_bit_and_keeps_the_backbone(tmp_path):
    data = make_images(tmp_path / "images")
    full = train("stylegan2", projected_config(tmp_path / "full", data, 4))
    train("stylegan2", projected_config(tmp_path / "split", data, 2))
    mid = checkpointing.load_training_state(tmp_path / "split" / "checkpoints" / "last.pt")["modules"]["d"]
    resumed = train("stylegan2", projected_config(tmp_path / "split", data, 4), resume=True)
    a = checkpointing.load_training_state(full.run_dir / "checkpoints" / "last.pt")
    b = checkpointing.load_training_state(resumed.run_dir / "checkpoints" / "last.pt")
    assert a["config"]["discriminator"] == "projected" and a["config"]["diffaugment"] == "color,translation,cutout"
    for name, module in a["modules"].items():
        for key, tensor in module.items():
            assert torch.equal(tensor, b["modules"][name][key]), f"{name}.{key}"
    reference = load_efficientnet_lite0().state_dict()
    d = a["modules"]["d"]
    assert all(torch.equal(d[f"features.backbone.{k}"], v) for k, v in reference.items())
    heads = [k for k in d if k.startswith("discriminators.") and k.endswith("original")]
    assert heads and all(not torch.equal(d[k], mid[k]) for k in heads)  # the heads train
    assert all(torch.equal(d[k], mid[k]) for k in d if k.startswith("features."))  # the projector does not
    terms = {k for line in (full.run_dir / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert "train/r1" not in terms and "train/d_loss" in terms


def test_shared_random_rand_is_checkpointed():
    rnd = SharedRandom(5, torch.device("cpu"))
    state = rnd.state_dict()
    first = rnd.rand(3, 2)
    rnd.load_state_dict(state)
    assert torch.equal(rnd.rand(3, 2), first) and ((first >= 0) & (first < 1)).all()
