"""NVIDIA network pickles: read as data (nothing from the file runs), parity with NVIDIA's outputs."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from nvidia_reference import NVIDIA, Call, Global, persistent_record, rebuild, write_pickle
from sdic.checkpoints import CheckpointError
from sdic.checkpoints.nvidia import ALLOWED_GLOBALS, is_network_pickle, read_generator, read_network_pickle
from sdic.networks import Generator

MAPPING_TOL = 1e-4  # relative to the magnitude of the reference
IMAGE_TOL = 1e-3


@pytest.fixture(scope="module")
def nvidia_pickle(tmp_path_factory):
    """NVIDIA's sg2ada_paper64.pkl, rebuilt byte for byte (checked by its SHA-256)."""
    return rebuild(tmp_path_factory.mktemp("nvidia"))


@pytest.fixture(scope="module")
def reference():
    return {k: torch.from_numpy(v) for k, v in np.load(NVIDIA / "sg2ada_paper64_ref.npz").items()}


@pytest.fixture(scope="module")
def converted(nvidia_pickle):
    found = read_generator(nvidia_pickle)
    generator = Generator(found.config).eval()
    generator.load_state_dict(found.tensors)
    generator.set_w_avg(found.w_avg)
    return generator


def test_the_reader_rebuilds_every_network_as_data(nvidia_pickle):
    obj = read_network_pickle(nvidia_pickle)
    assert sorted(obj) == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    assert obj["training_set_kwargs"]["resolution"] == 64 and obj["augment_pipe"] is None
    g_ema, d = obj["G_ema"], obj["D"]
    assert (g_ema.class_name, d.class_name) == ("Generator", "Discriminator")
    assert g_ema.attrs["num_ws"] == 10 and g_ema.init_kwargs["synthesis_kwargs"]["conv_clamp"] == 256
    assert not any("module_src" in m.attrs for _, m in g_ema.modules())  # the source is dropped
    tensors = g_ema.tensors()
    assert tensors["synthesis.b64.conv1.weight"].shape == (64, 64, 3, 3)
    assert tensors["mapping.w_avg"].shape == (512,)
    assert d.tensors()["b4.out.weight"].shape == (1, 256)
    g = obj["G"].tensors()
    assert torch.equal(tensors["mapping.fc0.weight"], g["mapping.fc0.weight"] * 1.01)  # G_ema = 1.01 G here
    assert is_network_pickle(nvidia_pickle)


def test_the_conversion_carries_the_configuration(converted):
    config = converted.config
    assert (config.size, config.style_dim, config.z_size, config.n_mlp) == (64, 512, 512, 8)
    assert config.lr_mlp == pytest.approx(0.01) and config.conv_clamp == 256
    assert config.channel_widths == (256, 256, 256, 128, 64)  # min(4096 / res, 256)
    assert (converted.num_ws, converted.w_dim, converted.z_dim) == (10, 512, 512)
    strengths = [m.noise.weight.detach() for m in [converted.conv1, *converted.convs]]
    assert all(0.1 <= float(s) <= 0.31 for s in strengths)  # the file's per-layer noise strengths


def _errors(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    error = float((ours - theirs).abs().max())
    return error, error / float(theirs.abs().max())


def test_parity_with_nvidias_outputs(converted, reference):
    z = reference["z"]
    with torch.no_grad():
        outputs = {
            "w_avg": converted.w_avg,
            "ws": converted.mapping(z, truncation_psi=1),
            "ws_psi07": converted.mapping(z, None, truncation_psi=0.7),
            "img": converted.synthesis(reference["ws"], noise_mode="const"),
            "img_psi07": converted.synthesis(reference["ws_psi07"]),
            "img_wplus": converted.synthesis(reference["wplus"]),
            "img_noise_none": converted.synthesis(reference["ws"], noise_mode="none"),
        }
    errors = {k: _errors(v, reference[k]) for k, v in outputs.items()}
    print("max abs / relative error per tensor:", {k: f"{a:.3g} / {r:.3g}" for k, (a, r) in errors.items()})
    for key, (_, relative) in errors.items():
        assert relative < (IMAGE_TOL if key.startswith("img") else MAPPING_TOL), key
    # the noise matters (strengths 0.1-0.3): const and none differ by far more than the tolerance
    assert _errors(outputs["img"], reference["img_noise_none"])[1] > 100 * IMAGE_TOL


def test_truncation_cutoff_and_random_noise(converted, reference):
    z = reference["z"]
    with torch.no_grad():
        full, cut = converted.mapping(z, truncation_psi=0.7), converted.mapping(z, truncation_psi=0.7, truncation_cutoff=4)
        plain = converted.mapping(z)
        assert torch.equal(cut[:, :4], full[:, :4]) and torch.equal(cut[:, 4:], plain[:, 4:])
        a, b = (converted.synthesis(plain, noise_mode="random") for _ in range(2))
    assert a.shape == (3, 3, 64, 64) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="noise_mode"):
        converted.synthesis(plain, noise_mode="fixed")
    with pytest.raises(ValueError, match=r"\[B, 10, 512\]"):
        converted.synthesis(plain[:, :3])


# ------------------------------------------------------------------ hostile and unsupported files
PAYLOAD = "open({path!r}, 'w').write('the pickle ran code')"


def _record(module_src: str, class_name: str = "Generator") -> Call:
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name,
            "state": {"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_args": (), "_init_kwargs": {}}}
    return Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))


def test_embedded_source_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    source = f"import os\n{PAYLOAD.format(path=str(marker))}\nclass Generator: pass\n"
    path = write_pickle(tmp_path / "evil.pkl", {"G_ema": _record(source)})
    obj = read_network_pickle(path)
    assert obj["G_ema"].class_name == "Generator"
    with pytest.raises(CheckpointError, match="not a StyleGAN2 generator"):
        read_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "exec"), ("os", "system"), ("builtins", "eval")])
def test_a_global_off_the_allow_list_is_refused_by_name(tmp_path, module, name):
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if name == "system" else PAYLOAD.format(path=str(marker))
    path = write_pickle(tmp_path / "evil.pkl", {"x": Call(Global(module, name), (code,)), "G_ema": _record("")})
    with pytest.raises(CheckpointError, match=f"refused: the pickle asks for the Python global {module}.{name}"):
        read_network_pickle(path)
    assert not marker.exists()
    if name == "exec":  # the file is live: plain pickle runs the code (then fails on torch_utils)
        with pytest.raises(ModuleNotFoundError, match="torch_utils"):
            pickle.loads(path.read_bytes())
        assert marker.exists()


def test_allow_list_holds_only_data_builders():
    modules = {module for module, _ in ALLOWED_GLOBALS}
    assert modules <= {"torch_utils.persistence", "torch.storage", "torch._utils", "collections", "dnnlib.util",
                       "dnnlib", "numpy.core.multiarray", "numpy._core.multiarray", "numpy", "builtins", "_codecs"}
    assert {name for module, name in ALLOWED_GLOBALS if module == "builtins"} == {"set", "frozenset"}


def _variant(nvidia_pickle, tmp_path, change) -> str:
    """The reference G_ema re-pickled with one thing changed; the reader's message."""
    g = read_network_pickle(nvidia_pickle)["G_ema"]
    path = write_pickle(tmp_path / "variant.pkl", {"G_ema": persistent_record(change(g), "")})
    with pytest.raises(CheckpointError) as error:
        read_generator(path)
    return str(error.value)


def test_unsupported_generators_get_a_specific_message(nvidia_pickle, tmp_path):
    def conditional(g):
        return dataclasses.replace(g, attrs={**g.attrs, "c_dim": 10})

    def stylegan3(g):
        synthesis = g.children["synthesis"]
        layers = {"input": synthesis.children["b4"], "L0_36_512": synthesis.children["b8"]}
        return dataclasses.replace(g, children={**g.children, "synthesis": dataclasses.replace(synthesis, children=layers)})

    def resnet(g):
        synthesis = g.children["synthesis"]
        b8 = synthesis.children["b8"]
        blocks = {**synthesis.children, "b8": dataclasses.replace(b8, attrs={**b8.attrs, "architecture": "resnet"})}
        return dataclasses.replace(g, children={**g.children, "synthesis": dataclasses.replace(synthesis, children=blocks)})

    assert "conditional generators (c_dim = 10) are not supported (yet)" in _variant(nvidia_pickle, tmp_path, conditional)
    assert "StyleGAN3 generators (synthesis.L* layers) are not supported (yet)" in _variant(nvidia_pickle, tmp_path, stylegan3)
    assert "resnet synthesis architecture" in _variant(nvidia_pickle, tmp_path, resnet)


def test_tensorflow_pickles_are_not_supported_yet(tmp_path):
    path = write_pickle(tmp_path / "tf.pkl", {"G": Call(Global("dnnlib.tflib.network", "Network"), ())})
    with pytest.raises(CheckpointError, match=r"TensorFlow network pickle .* not supported \(yet\)"):
        read_network_pickle(path)


def test_damaged_and_foreign_pickles(nvidia_pickle, tmp_path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(nvidia_pickle.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt network pickle"):
        read_network_pickle(truncated)
    other = write_pickle(tmp_path / "other.pkl", {"weights": [1, 2, 3]})
    with pytest.raises(CheckpointError, match="not an NVIDIA network pickle"):
        read_network_pickle(other)
    assert not is_network_pickle(other)


# ------------------------------------------------------------------ the public API, conversion, CLI, training
def test_load_generator_reads_the_pickle_and_our_conversion_of_it(nvidia_pickle, reference, tmp_path, capsys):
    import sdic
    from sdic.checkpoints import Kind, read_checkpoint
    from sdic.cli.main import main

    checkpoint = read_checkpoint(nvidia_pickle)
    assert checkpoint.kind == Kind.STYLEGAN2 and checkpoint.config.tap_resolution == 32
    G = sdic.load_generator(nvidia_pickle)
    out = tmp_path / "g.safetensors"
    assert main(["convert", str(nvidia_pickle), str(out)]) == 0
    again = sdic.load_generator(out)
    assert again.config == G.config and torch.equal(again.w_avg, G.w_avg)
    with torch.no_grad():
        for generator in (G, again):
            image = generator.synthesis(generator.mapping(reference["z"], truncation_psi=0.7))
            assert _errors(image, reference["img_psi07"])[1] < IMAGE_TOL
    with pytest.raises(CheckpointError, match="not an SDIC checkpoint but a stylegan2 file"):
        sdic.load(nvidia_pickle)


def test_directions_use_the_one_generator_loader():
    from sdic import checkpoints
    from sdic.editing.learn import interfacegan

    assert interfacegan.load_generator is checkpoints.load_generator


def test_sdic_generate_writes_seeds_grid_and_latents(nvidia_pickle, tmp_path, capsys):
    from PIL import Image

    from sdic import load_generator, sampling
    from sdic.cli.main import main

    out = tmp_path / "samples"
    assert main(["generate", str(nvidia_pickle), "--seeds", "0-2,7", "--trunc", "0.7", "-o", str(out),
                 "--save-latents", "--batch-size", "3"]) == 0
    assert "4 images of 64px" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert [n for n in names if n.endswith(".png")] == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png",
                                                        "seed0007.png"]
    assert Image.open(out / "grid.png").size == (128, 128)
    G = load_generator(nvidia_pickle)
    z = torch.from_numpy(np.random.RandomState(7).randn(1, 512)).float()  # NVIDIA's gen_images.py
    with torch.no_grad():
        expected = sampling.to_uint8(G.synthesis(G.mapping(z, truncation_psi=0.7)))[0]
    assert np.array_equal(np.asarray(Image.open(out / "seed0007.png")), expected)
    saved = np.load(out / "seed0007.npz")
    assert int(saved["seed"]) == 7 and np.allclose(saved["z"], z[0].numpy()) and saved["ws"].shape == (10, 512)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "3-1"], "ends before it starts"),
    (["--seeds", "a,b"], "is not a seed or a range"),
    (["--trunc", "strong"], "--trunc 'strong': not a number"),
    (["--trunc", "nan"], "finite"),
    (["--noise-mode", "const", "--batch-size", "0"], "--batch-size"),
    (["--trunc", "-5"], "outside -1..2"),
    (["--seeds", "0-3,2"], "a seed is listed twice (2)"),
    (["--seeds", "0-100000000"], "more than 1,000,000 images"),
])
def test_sdic_generate_bad_arguments_are_one_line_errors(nvidia_pickle, tmp_path, capsys, args, message):
    from sdic.cli.main import main

    assert main(["generate", str(nvidia_pickle), "-o", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_e4e_and_sdic_train_on_an_nvidia_generator(nvidia_pickle, tmp_path):
    from PIL import Image

    import sdic
    from sdic.cli.main import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    small = ["model.encoder.input_size=64", "model.encoder.stage_units=[1,1,1,1]",
             "model.encoder.stage_channels=[16,16,32,512]", "model.tap_resolution=16"]
    quiet = ["data.workers=0", "run.progress=false", "run.tensorboard=false", "run.image_every=0",
             "run.val_every=0", "run.log_every=1", "losses.identity=0", "losses.lpips=0", "latent_disc=0"]
    assert main(["train", "e4e", f"generator={nvidia_pickle}", f"data.path={images}", f"run.out={tmp_path / 'run'}",
                 "run.steps=1", "run.batch_size=2", *small, *quiet]) == 0
    trained = sdic.load_generator(tmp_path / "run" / "e4e.safetensors")
    original = sdic.load_generator(nvidia_pickle)
    assert trained.config == original.config
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), original.state_dict().values()))
    # ...and SDIC trains on that e4e with the pickle as its generator
    assert main(["train", "sdic", f"e4e={tmp_path / 'run' / 'e4e.safetensors'}", f"generator={nvidia_pickle}",
                 f"data.path={images}", f"run.out={tmp_path / 'sdic'}", "run.steps=1", "run.batch_size=2",
                 *[q for q in quiet if q != "latent_disc=0"]]) == 0
    model = sdic.load(tmp_path / "sdic" / "sdic.safetensors")
    assert model.config.generator == original.config


def test_load_generator_takes_a_bundled_name():
    import sdic

    G = sdic.load_generator("default")
    assert G.img_resolution == 64 and G.mapping(torch.zeros(1, G.z_dim)).shape == (1, G.num_ws, G.w_dim)
    with pytest.raises(CheckpointError, match="not a bundled model name"):
        sdic.load_generator("ffhq")
