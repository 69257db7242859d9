"""The functions behind `sdic ui` (no browser): sliders, cache, several directions, errors, downloads."""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import sdic
from sdic import editing
from sdic.cli.main import main
from sdic.errors import InputError
from sdic.images import ImageReadError
from sdic.inversion import Inversion
from sdic.ui.core import (
    Session,
    Studio,
    UploadTooLargeError,
    factors_from,
    read_upload,
    slider_for,
    views,
    write_downloads,
)

FACES = Path(__file__).parent / "data" / "faces"


@pytest.fixture(scope="module")
def studio():
    return Studio(sdic.load("default"), "default")


@pytest.fixture(scope="module")
def opened(studio):
    """One session with a sample open, shared by the tests that only read it."""
    session = Session()
    studio.open_sample(session, "000002")
    yield session
    session.close()


def _counting(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_sliders_cover_the_stored_useful_ranges_and_stop_at_zero(studio):
    assert [s.name for s in studio.sliders] == editing.available("facesjs")
    for slider in studio.sliders:
        low, high = editing.factor_range(slider.name, "facesjs")
        assert low <= slider.low < low + slider.step and high - slider.step < slider.high <= high
        assert math.isclose(slider.low / slider.step, round(slider.low / slider.step), abs_tol=1e-6)  # 0 on the grid
    published = slider_for(SimpleNamespace(config=SimpleNamespace(directions="ffhq")), "age")
    assert (published.low, published.high, published.step) == (-3.0, 3.0, 0.1)  # sdic demo's range


def test_a_slider_move_reruns_only_the_generator_and_the_inversion_is_cached(studio):
    model = studio.model
    encoder, dipn, generator = _counting(model.encoder), _counting(model.dipn), _counting(model.generator)
    session = Session()
    studio.open_sample(session, "000001")
    assert (encoder[0], dipn[0]) == (1, 1) and not session.reused
    for factor in (0.5, 1.0, -0.7):
        result, seconds = studio.edited(session, {"female": factor})
        assert seconds > 0
    assert (encoder[0], dipn[0]) == (1, 1)  # no new inversion for the edits
    studio.open_sample(session, "000001")  # the same image again: from the cache
    assert (encoder[0], dipn[0]) == (1, 1) and session.reused
    expected = model.edit(session.inversion, "female", -0.7)
    torch.testing.assert_close(result.image, expected.image)
    assert generator[0] > 0


def test_several_sliders_equal_chained_edits(studio, opened):
    session = opened
    blended, _ = studio.edited(session, {"female": 1.2, "blond_hair": -0.8, "smile": 0.5})
    chained = session.inversion
    for name, factor in (("female", 1.2), ("blond_hair", -0.8), ("smile", 0.5)):
        chained = studio.model.edit(chained, name, factor)
    torch.testing.assert_close(blended.latents, chained.latents)
    torch.testing.assert_close(blended.image, chained.image, atol=1e-5, rtol=1e-5)
    assert (blended.image - session.inversion.image).abs().mean() > 1e-3  # the sliders did something


def test_sliders_at_zero_are_no_edit(studio, opened):
    assert factors_from(["a", "b", "c"], [0.0, None, 0.25]) == {"c": 0.25}
    session = opened
    result, seconds = studio.edited(session, {})
    assert result is session.inversion and seconds == 0.0
    with pytest.raises(InputError, match="unknown direction"):
        studio.edited(session, {"wings": 1.0})


def test_sessions_do_not_share_images_or_files(studio):
    first, second = Session(), Session()
    studio.open_sample(first, "000000")
    studio.open_sample(second, "000003")
    assert not torch.equal(first.inversion.image, second.inversion.image)
    assert not set(first.cache) & set(second.cache)
    studio.result_picture(first, first.inversion, paste=False)
    studio.result_picture(second, second.inversion, paste=False)
    files_first, files_second = write_downloads(first), write_downloads(second)
    assert files_first[0].parent != files_second[0].parent
    first.close()
    assert not files_first[0].exists() and files_second[0].exists() and first.inversion is None
    second.close()
    with pytest.raises(InputError, match="Upload a photo"):
        studio.edited(Session(), {"female": 1.0})


def test_downloads_hold_the_result_and_the_inversion(studio, opened):
    session = opened
    result, _ = studio.edited(session, {"female": 1.0})
    picture = studio.result_picture(session, result, paste=False)
    png, inversion_file = write_downloads(session)
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(picture))
    loaded = Inversion.load(inversion_file)
    n, d = studio.model.config.generator.n_latent, studio.model.config.generator.style_dim
    assert loaded.codes.shape == (1, n, d) and loaded.model_digest == studio.model.digest
    np.testing.assert_array_equal(loaded.latents[0].numpy(), session.inversion.latents[0].numpy())
    again = studio.model.edit(loaded, "female", 1.0)  # the download edits like the page's own inversion
    assert torch.allclose(again.image, studio.model.edit(session.inversion, "female", 1.0).image, atol=1e-5)


def test_views_are_the_four_panels(opened):
    panels = views(opened.inversion)
    assert list(panels) == ["input", "e4e", "SDIC", "discrepancy"]
    assert all(p.size == (64, 64) for p in panels.values())


def test_bad_uploads_get_clear_messages(tmp_path):
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="holiday.jpg: not a readable image") as caught:
        read_upload(broken)
    assert str(tmp_path) not in str(caught.value)  # the server's paths stay on the server
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200), "gray").save(big)
    with pytest.raises(UploadTooLargeError, match=r"300x200 .* the limit is 0.05 MP"):
        read_upload(big, max_pixels=50_000)
    with pytest.raises(UploadTooLargeError, match="the limit is 0.0001 MB"):
        read_upload(big, max_mb=0.0001)
    assert read_upload(big).size == (300, 200)


def test_alignment_finds_the_faces_largest_first_and_pastes_back(studio, tmp_path):
    with pytest.raises(InputError, match="No face found in this photo"):
        studio.find_faces(Image.open(FACES / "no_face.png"), align=True)
    photo = tmp_path / "astronaut.png"
    Image.open(FACES / "astronaut.jpg").resize((256, 256), Image.BILINEAR).save(photo)  # smaller: faster
    session = Session()
    studio.open_upload(session, photo, align=True)
    scales = [face.aligned.transform.scale for face in session.faces]
    assert scales == sorted(scales, reverse=True) and session.choice == 0
    result, _ = studio.edited(session, {"female": 1.0})
    pasted = np.asarray(studio.result_picture(session, result, paste=True), dtype=np.int16)
    photo = np.asarray(session.photo, dtype=np.int16)
    assert pasted.shape == photo.shape
    changed = np.abs(pasted - photo).max(axis=2) > 0
    x0, y0 = session.faces[0].aligned.transform.quad.min(0)
    x1, y1 = session.faces[0].aligned.transform.quad.max(0)
    ys, xs = np.nonzero(changed)
    assert changed.any() and xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2
    assert studio.result_picture(session, result, paste=False).size == (64, 64)
    session.close()


def test_the_page_shows_errors_as_messages(studio, tmp_path):
    import gradio as gr

    from sdic.ui.app import Page

    with gr.Blocks(analytics_enabled=False):
        page = Page(gr, studio)
    zeros = [0.0] * len(page.sliders)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    shown = page._guard(page._on_upload)(str(broken), False, Session(), False, *zeros)
    assert list(shown) == [page.status] and "broken.png: not a readable image" in shown[page.status]

    def bug(*args):
        raise RuntimeError("deep inside")

    shown = page._guard(bug)()
    assert "Internal error" in shown[page.status] and "deep inside" not in shown[page.status]
    assert list(page._guard(page._on_align)(False, Session(), False, *zeros)) == [page.status]  # no photo: no change
    session = Session()
    shown = page._guard(page._on_sample)("000002", session, False, *zeros)
    assert shown[page.status] == "" and shown[page.result].size == (64, 64) and shown[page.align] is False
    assert "Inversion" in shown[page.timing]


def test_cli_ui_reports_a_missing_gradio_and_bad_options(monkeypatch, capsys):
    from sdic.cli.main import build_parser

    args = build_parser().parse_args(["ui"])
    assert (args.model, args.host, args.port) == ("default", "127.0.0.1", 7860)  # this machine only
    assert main(["ui", "default", "--port", "0"]) == 2
    assert "--port must be 1..65535" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["ui", "default", "--port", str(busy.getsockname()[1])]) == 2
    assert "choose another --port" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the extra were not installed
    assert main(["ui", "default"]) == 2
    assert "pip install 'sdic[ui]'" in capsys.readouterr().err
