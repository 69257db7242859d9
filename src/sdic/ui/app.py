"""The Gradio page of ``sdic ui``: layout and event wiring only; the work is in :mod:`sdic.ui.core`."""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable
from typing import Any

from ..errors import InputError, MissingDependencyError, SDICError
from .core import Session, Studio, factors_from, timing_text, views, write_downloads

LOG = logging.getLogger("sdic.ui")
PANELS = ("input", "e4e", "SDIC", "discrepancy")
# Pictures fill their boxes (a 64x64 model's output would otherwise be a stamp in the middle).
CSS = ".sdic-view img {width: 100%; height: 100%; object-fit: contain}"
SESSION_SECONDS = 3 * 3600  # a session's images are dropped after this long without a visit


def import_gradio() -> Any:
    """Gradio, or a clear message naming the extra that installs it."""
    try:
        import gradio
    except ImportError as error:
        raise MissingDependencyError("the web UI needs Gradio: pip install 'sdic[ui]'") from error
    return gradio


class Page:
    """The components of one page (shared by every session; values are per session)."""

    def __init__(self, gr: Any, studio: Studio) -> None:
        self.gr, self.studio = gr, studio
        self.names = [s.name for s in studio.sliders]
        self._layout()
        self._wire()

    # --------------------------------------------------------------- layout
    def _layout(self) -> None:
        gr, studio = self.gr, self.studio
        config = studio.model.config
        gr.Markdown(f"## SDIC: invert a photo into StyleGAN2, edit it, keep the details\n"
                    f"Model **{studio.label}**: {config.domain}, {config.generator.size}x{config.generator.size}, "
                    f"on {studio.model.device}.")
        self.state = gr.State(Session(), time_to_live=SESSION_SECONDS, delete_callback=Session.close)
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                self.upload = gr.File(label=f"Photo (up to {studio.max_upload_mb:g} MB)", file_types=["image"],
                                      type="filepath", elem_id="sdic-upload")
                self.sample = gr.Dropdown(list(studio.samples), value=None, label="or a bundled sample",
                                          visible=bool(studio.samples), elem_id="sdic-sample")
                self.align = gr.Checkbox(studio.can_align, label="Align faces (in-the-wild photos)",
                                         info="FFHQ alignment with dlib; the samples are aligned already",
                                         visible=studio.can_align, elem_id="sdic-align")
                self.faces = gr.Gallery(label="Faces found (click one to use it)", columns=4, height=120,
                                        allow_preview=False, object_fit="contain", visible=studio.can_align, elem_id="sdic-faces")
            with gr.Column(scale=3):
                with gr.Row():
                    self.panels = [gr.Image(label=name, type="pil", format="png", height=220, interactive=False,
                                            elem_id=f"sdic-{name.lower()}", elem_classes="sdic-view") for name in PANELS]
                self.timing = gr.Markdown("", elem_id="sdic-timing")
        self.status = gr.Markdown("", elem_id="sdic-status")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                self.sliders = [gr.Slider(s.low, s.high, value=0.0, step=s.step, label=s.name,
                                          elem_id=f"sdic-slider-{s.name}") for s in studio.sliders]
                self.reset = gr.Button("Reset edits", elem_id="sdic-reset")
                self.paste = gr.Checkbox(False, label="Paste back into the photo",
                                         info="with alignment on", visible=studio.can_align, elem_id="sdic-paste")
            with gr.Column(scale=2):
                self.result = gr.Image(label="Edited result", type="pil", format="png", height=360,
                                       interactive=False, elem_id="sdic-result", elem_classes="sdic-view")
                self.prepare = gr.Button("Prepare downloads (result PNG, inversion file)", elem_id="sdic-prepare")
                self.downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                         elem_id="sdic-downloads")

    # ---------------------------------------------------------------- wiring
    def _wire(self) -> None:
        gr = self.gr
        shown = [self.state, self.faces, *self.panels, self.timing, self.result, self.status, self.downloads]
        edit_inputs = [self.state, self.paste, *self.sliders]
        self.upload.upload(self._guard(self._on_upload), [self.upload, self.align, *edit_inputs], shown)
        self.sample.input(self._guard(self._on_sample), [self.sample, *edit_inputs], shown + [self.align])
        self.align.input(self._guard(self._on_align), [self.align, *edit_inputs], shown)
        self.faces.select(_takes_event(self._guard(self._on_face), gr.SelectData), edit_inputs, shown)
        gr.on([s.change for s in self.sliders] + [self.paste.input], self._guard(self._on_edit), edit_inputs,
              [self.state, self.timing, self.result, self.status, self.downloads], trigger_mode="always_last",
              show_progress="minimal")
        self.reset.click(lambda: [0.0] * len(self.sliders), None, self.sliders)
        self.prepare.click(self._guard(self._on_prepare), [self.state], [self.downloads, self.status])

    def _guard(self, handler: Callable[..., dict]) -> Callable[..., dict]:
        """Errors become a message on the page: the user's own in full, a bug as one line (logged)."""

        def run(*args: Any, **kwargs: Any) -> dict:
            try:
                return handler(*args, **kwargs)
            except SDICError as error:
                return {self.status: f"**Error:** {error}"}
            except Exception as error:  # a bug: keep the server alive, log the traceback on the server
                LOG.error("sdic ui: %s", traceback.format_exc())
                return {self.status: f"**Internal error** ({type(error).__name__}); details are in the server log."}

        return run

    # -------------------------------------------------------------- handlers
    def _on_upload(self, path: str | None, align: bool, session: Session, paste: bool, *values: float) -> dict:
        if not path:
            return self._unchanged()
        self.studio.open_upload(session, path, align)
        return self._shown(session, paste, values)

    def _on_sample(self, name: str | None, session: Session, paste: bool, *values: float) -> dict:
        if not name:
            return self._unchanged()
        self.studio.open_sample(session, name)
        return {**self._shown(session, paste, values), self.align: False}

    def _on_align(self, align: bool, session: Session, paste: bool, *values: float) -> dict:
        if session.photo is None:  # nothing open yet: the choice applies to the next upload
            return self._unchanged()
        self.studio.realign(session, align)
        return self._shown(session, paste, values)

    def _on_face(self, evt: Any, session: Session, paste: bool, *values: float) -> dict:
        self.studio.choose(session, int(evt.index))
        return self._shown(session, paste, values)

    def _on_edit(self, session: Session, paste: bool, *values: float) -> dict:
        if session.inversion is None:
            return self._unchanged()
        return self._edit(session, paste, values)

    def _on_prepare(self, session: Session) -> dict:
        return {self.downloads: [str(p) for p in write_downloads(session)], self.status: ""}

    def _unchanged(self) -> dict:
        """Leave the page as it is (Gradio reads an empty dict as one value, not as no update)."""
        return {self.status: self.gr.skip()}

    def _shown(self, session: Session, paste: bool, values: tuple[float, ...]) -> dict:
        """Everything that depends on the photo: faces, panels, then the edit."""
        panels = views(session.inversion)
        faces = [(face.image, f"face {i + 1}") for i, face in enumerate(session.faces)] \
            if session.faces[0].aligned is not None else []
        return {self.state: session, self.faces: faces,
                **{panel: panels[name] for panel, name in zip(self.panels, PANELS)},
                **self._edit(session, paste, values)}

    def _edit(self, session: Session, paste: bool, values: tuple[float, ...]) -> dict:
        result, seconds = self.studio.edited(session, factors_from(self.names, list(values)))
        picture = self.studio.result_picture(session, result, paste)
        return {self.state: session, self.result: picture, self.timing: timing_text(session, seconds, str(self.studio.model.device)),
                self.status: "", self.downloads: None}


def _takes_event(fn: Callable[..., dict], event_type: type) -> Callable[..., dict]:
    """Declare ``fn(evt, *inputs)``'s first argument as Gradio event data (Gradio reads the annotation)."""
    kind = inspect.Parameter
    fn.__signature__ = inspect.Signature([kind("evt", kind.POSITIONAL_OR_KEYWORD), kind("inputs", kind.VAR_POSITIONAL)])
    fn.__annotations__ = {"evt": event_type}
    return fn


def build_app(studio: Studio) -> Any:
    """The Gradio Blocks of the page for ``studio``."""
    gr = import_gradio()
    # Gradio's copies of uploads and results are deleted hourly once older than a session's lifetime.
    with gr.Blocks(title="sdic ui", analytics_enabled=False, delete_cache=(3600, SESSION_SECONDS)) as blocks:
        Page(gr, studio)
    return blocks


def theme(gr: Any) -> Any:
    """Gradio's default look with local fonts: the page fetches nothing from outside the server."""
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False) -> None:
    """Serve the page until Ctrl-C (Gradio closes the server on KeyboardInterrupt)."""
    gr = import_gradio()
    blocks = build_app(studio)
    blocks.queue(default_concurrency_limit=1)
    try:
        blocks.launch(server_name=host, server_port=port, max_file_size=f"{studio.max_upload_mb:g}mb",
                      theme=theme(gr), ssr_mode=False, share=False, quiet=quiet, show_error=False,
                      footer_links=[], css=CSS)
    except OSError as error:  # Gradio's "Cannot find empty port", or an address not of this machine
        raise InputError(f"cannot serve on {host}:{port} (port in use, or not an address of this machine); "
                         "choose another --port or --host") from error
