"""The configuration builder (sdic.config_builder) and the derived numbers of the model configuration."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from sdic import config_builder as B
from sdic.config import GeneratorConfig, SDICConfig, cars, ffhq, preset, tiny
from sdic.editing.learn import classifier as clf
from sdic.errors import ConfigError, SDICError


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    steps: int = 10
    rate: float = 0.5
    on: bool = True


@dataclass(frozen=True)
class Item:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=lambda: Inner(steps=20))
    maybe: Inner | None = None
    rows: tuple[int, int] | None = None
    sizes: tuple[int, ...] = (1, 2)
    items: tuple[Item, ...] = ()
    mode: Literal["fast", "slow"] = "fast"
    colour: Colour = Colour.RED
    limit: float | None = None
    label: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")


# ------------------------------------------------------------------ builder
def test_nested_mappings_merge_onto_the_field_defaults():
    built = B.build(Outer, {"inner": {"rate": 2}})
    assert built.inner == Inner(steps=20, rate=2.0)  # the field's default, not Inner()'s
    assert isinstance(built.inner.rate, float)
    over = B.build(Outer, {"inner": {"on": False}}, base=built)
    assert over.inner == Inner(steps=20, rate=2.0, on=False)


def test_override_strings_are_coerced_to_the_declared_types():
    built = B.build(Outer, {"inner": {"steps": "1e3", "rate": "1e-4", "on": "no"}, "sizes": "3, 4,5",
                            "rows": [64, "448"], "mode": "slow", "colour": "blue", "limit": "2.5", "label": 7})
    assert built.inner == Inner(steps=1000, rate=1e-4, on=False) and type(built.inner.steps) is int
    assert built.sizes == (3, 4, 5) and built.rows == (64, 448)
    assert built.mode == "slow" and built.colour is Colour.BLUE and built.limit == 2.5 and built.label == "7"
    assert B.build(Inner, {"steps": 4.0, "on": 1}) == Inner(steps=4, on=True)
    assert B.build(Inner, {"on": "TRUE"}).on is True


def test_optional_fields_take_none_or_a_value():
    assert B.build(Outer, {"rows": None, "limit": None, "maybe": None}).rows is None
    assert B.build(Outer, {"maybe": {"steps": 3}}).maybe == Inner(steps=3)
    assert B.build(Outer, {"label": None}).label == ""  # an empty YAML value


def test_tuples_of_dataclasses_and_required_fields():
    built = B.build(Outer, {"items": [{"name": "a"}, {"name": "b", "weight": "2"}]})
    assert built.items == (Item("a"), Item("b", 2.0))
    with pytest.raises(ConfigError, match=r"^missing configuration key 'items\[1\].name'$"):
        B.build(Outer, {"items": [{"name": "a"}, {"weight": 2}]})


@pytest.mark.parametrize("data, message", [
    ({"inner": {"stepz": 3}}, r"^unknown configuration key 'inner.stepz' \(did you mean 'inner.steps'\?\)$"),
    ({"qqq": 3}, r"^unknown configuration key 'qqq' \(known keys: inner, maybe, .*extra\)$"),
    ({"inner": {"steps": "abc"}}, r"^inner.steps: expected an integer, got 'abc'$"),
    ({"inner": {"steps": 2.5}}, r"^inner.steps: expected an integer, got 2.5$"),
    ({"inner": {"steps": True}}, r"^inner.steps: expected an integer, got True$"),
    ({"inner": {"rate": "fast"}}, r"^inner.rate: expected a number, got 'fast'$"),
    ({"inner": {"rate": "nan"}}, r"^inner.rate: expected a finite number, got 'nan'$"),
    ({"inner": {"on": "maybe"}}, r"^inner.on: expected true or false, got 'maybe'$"),
    ({"inner": 3}, r"^inner: expected a mapping, got 3$"),
    ({"rows": [1, 2, 3]}, r"^rows: expected 2 values, got 3$"),
    ({"sizes": [1, "x"]}, r"^sizes\[1\]: expected an integer, got 'x'$"),
    ({"mode": "medium"}, r"^mode must be fast or slow, got 'medium'$"),
    ({"colour": "green"}, r"^colour must be red or blue, got 'green'$"),
    ({"label": [1]}, r"^label: expected a string, got \[1\]$"),
    ({"label": False}, r"^label: expected a string, got False$"),
    ({"extra": "x"}, r"^extra: expected a mapping, got 'x'$"),
    ({"limit": -1}, r"^Outer: limit must be >= 0$"),  # the dataclass's own check, as a ConfigError
])
def test_errors_are_one_line_naming_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        B.build(Outer, data)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, SDICError) and isinstance(info.value, ValueError)


def test_errors_are_prefixed_with_where():
    with pytest.raises(ConfigError, match=r"^unknown configuration key 'model.inner.stepz'"):
        B.build(Outer, {"inner": {"stepz": 1}}, where="model")
    with pytest.raises(ConfigError, match=r"^model: expected a mapping"):
        B.build(Outer, [1], where="model")


def test_to_plain_and_build_are_inverse():
    built = B.build(Outer, {"items": [{"name": "a"}], "rows": [1, 2], "colour": "blue", "extra": {"k": [1, 2]}})
    plain = B.to_plain(built)
    assert plain["colour"] == "blue" and plain["rows"] == [1, 2] and plain["extra"] == {"k": [1, 2]}
    assert json.loads(json.dumps(plain)) == plain
    assert B.build(Outer, plain) == built
    assert B.from_json(Outer, B.to_json(built)) == built
    with pytest.raises(ConfigError, match=r"^Outer: not valid JSON"):
        B.from_json(Outer, "{broken")


# ------------------------------------------------------------------ model configuration
@pytest.mark.parametrize("config", [ffhq(), cars(), tiny(), tiny(64)])
def test_model_config_round_trips_through_json(config):
    assert SDICConfig.from_json(config.to_json()) == config
    assert SDICConfig.from_dict(config.to_dict()) == config


def test_model_config_errors():
    with pytest.raises(ConfigError, match=r"did you mean 'generator.size'"):
        SDICConfig.from_dict({"generator": {"sise": 64}})
    with pytest.raises(ConfigError, match=r"^generator.size: expected an integer, got 'big'$"):
        SDICConfig.from_dict({"generator": {"size": "big"}})
    with pytest.raises(ConfigError, match=r"^domain must be faces or cars, got 'dogs'$"):
        SDICConfig.from_dict({"domain": "dogs"})
    with pytest.raises(ConfigError, match=r"^SDICConfig: tap resolution must be a power of two, got 48$"):
        SDICConfig.from_dict({"tap_resolution": 48})
    with pytest.raises(ConfigError, match=r"did you mean 'tiny'"):
        preset("tiyn")


def test_derived_generator_numbers():
    g = ffhq().generator  # 1024: the rosinality layout's 17 noise maps and 8 synthesis blocks
    assert g.noise_resolutions == (4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024)
    assert g.block_resolutions == (8, 16, 32, 64, 128, 256, 512, 1024)
    assert GeneratorConfig.block_index(64) == 3 and GeneratorConfig.block_index(128) == 4
    assert GeneratorConfig.conv_index(128, upsampling=False) == 9  # rosinality's convs.9: second conv at 128
    assert ffhq().tap_block == 3 and ffhq().tap_latent_index == 7 and tiny().tap_block == 1
    assert cars().generator.noise_resolutions[-1] == 512 and len(cars().generator.noise_resolutions) == 15


def test_the_generator_is_built_from_the_derived_numbers():
    from sdic.networks.generator import Generator

    config = tiny()
    generator = Generator(config.generator, tap_resolution=config.tap_resolution)
    assert [n.shape[-1] for n in generator.fixed_noise()] == list(config.generator.noise_resolutions)
    assert generator.tap_block == config.tap_block
    assert len(generator.to_rgbs) == len(config.generator.block_resolutions)


# ------------------------------------------------------------------ classifier configuration
def _classifier_config() -> clf.ClassifierConfig:
    return clf.ClassifierConfig(attributes=(
        clf.AttributeSpec("gender", "binary", ("male", "female")),
        clf.AttributeSpec("hair", "category", ("black", "blond", "red")),
        clf.AttributeSpec("fatness", "number", (), 0.4, 0.2),
    ), widths=(8, 16))


def test_classifier_config_round_trips_through_json():
    config = _classifier_config()
    assert clf.ClassifierConfig.from_json(config.to_json()) == config
    data = json.loads(config.to_json())
    data["attributes"][1]["kind"] = "colour"
    with pytest.raises(ConfigError, match=r"^attributes\[1\].kind must be binary, category or number, got 'colour'$"):
        clf.ClassifierConfig.from_json(json.dumps(data))
    data["attributes"][1]["kind"] = "category"
    data["widths"] = [8, "wide"]
    with pytest.raises(ConfigError, match=r"^widths\[1\]: expected an integer"):
        clf.ClassifierConfig.from_json(json.dumps(data))


def test_a_classifier_file_with_a_broken_configuration_is_one_line(tmp_path):
    from safetensors.torch import save_file

    model = clf.AttributeClassifier(_classifier_config())
    path = tmp_path / "c.safetensors"
    clf.save_classifier(model, path)
    assert clf.load_classifier(path).config == model.config
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": clf.FORMAT_NAME, "config": '{"attributes": [], "stem": 1}'})
    with pytest.raises(ConfigError, match=r"c.safetensors: invalid classifier configuration in the metadata "
                                          r"\(unknown configuration key 'stem' \(did you mean 'stem_width'\?\)\)$"):
        clf.load_classifier(path)
