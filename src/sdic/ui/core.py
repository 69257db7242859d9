"""The logic behind ``sdic ui``, in plain functions and classes (no Gradio: tested without a browser).

A :class:`Studio` holds what all sessions share read-only: the model, one slider per bundled
direction, the bundled samples and the upload limits. A :class:`Session` is one browser tab's
state: its photo, the faces found in it, and its inversions (cached by image, so moving a slider
re-runs only the generator through :meth:`sdic.SDICModel.edit`).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .. import demo, editing
from ..errors import InputError
from ..images import ImageReadError, load_image
from ..model import Inversion, SDICModel

MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000  # 40 megapixels: larger photos are refused before they are decoded
CACHED_INVERSIONS = 4  # per session


class UploadTooLargeError(InputError):
    """An upload exceeds the size or pixel limit."""


@dataclass(frozen=True)
class Slider:
    """One direction's slider: its documented useful factor range and a step that lands on 0."""

    name: str
    low: float
    high: float
    step: float


def slider_for(model: SDICModel, name: str) -> Slider:
    """The slider of a bundled direction over the range stored with it (else ``sdic demo``'s default).

    The step is a power of ten about 1/50 of the range; the ends are rounded inwards to it, so
    0 (no edit) is a slider position and the slider never leaves the documented range.
    """
    low, high = demo.factor_range(model, name)
    step = 10.0 ** math.floor(math.log10((high - low) / 50))
    low = math.ceil(round(low / step, 6)) * step
    high = math.floor(round(high / step, 6)) * step
    return Slider(name, round(low, 10), round(high, 10), step)


@dataclass(frozen=True)
class Blend:
    """Several directions at once: each moves the latents by its own factor, in the given order.

    Used as one direction of :meth:`sdic.SDICModel.edit`, so the generator runs once however
    many sliders are set (chaining ``edit`` calls gives the same image, one synthesis per call).
    """

    parts: tuple[tuple[editing.Direction, float], ...]

    def apply(self, latents: torch.Tensor, factor: float) -> torch.Tensor:
        for direction, own in self.parts:
            latents = direction.apply(latents, own * factor)
        return latents


@dataclass
class Face:
    """A picture for the model: an aligned face of the photo, or the photo itself (``aligned`` None)."""

    image: Image.Image
    aligned: object | None = None  # sdic.alignment.AlignedFace


@dataclass
class Session:
    """One browser session's images and results; nothing in it is shared with another session."""

    photo: Image.Image | None = None
    faces: list[Face] = field(default_factory=list)
    choice: int = 0
    inversion: Inversion | None = None
    invert_seconds: float = 0.0  # what the current inversion took when it was computed
    reused: bool = False  # the current inversion came from the cache
    cache: OrderedDict[str, tuple[Inversion, float]] = field(default_factory=OrderedDict)
    picture: Image.Image | None = None  # the last result shown (what "download" saves)
    folder: Path | None = None  # this session's download files

    def face(self) -> Face:
        if not self.faces:
            raise InputError("Upload a photo or pick a sample first.")
        return self.faces[self.choice]

    def download_folder(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sdic-ui-"))
        return self.folder

    def close(self) -> None:
        """Forget the images and delete the download files (when the session ends)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        self.photo, self.faces, self.inversion, self.picture = None, [], None, None
        self.cache.clear()


def read_upload(path: str | Path, max_mb: float = MAX_UPLOAD_MB, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded file as an RGB image; errors name the file, not the server's temporary path."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size > max_mb * 1024 * 1024:
        raise UploadTooLargeError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {max_mb:g} MB.")
    _check_pixels(path, max_pixels)
    try:
        return load_image(path)
    except ImageReadError as error:
        raise ImageReadError(str(error).replace(str(path), path.name)) from None


def _check_pixels(path: Path, max_pixels: int) -> None:
    """Refuse a picture with more than ``max_pixels`` from its header, before decoding it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise UploadTooLargeError(f"{path.name} has too many pixels (limit {max_pixels / 1e6:g} MP).") from None
    except Exception:  # unreadable: load_image says so with its own message
        return
    if width * height > max_pixels:
        raise UploadTooLargeError(
            f"{path.name} is {width}x{height} ({width * height / 1e6:.0f} MP); the limit is {max_pixels / 1e6:g} MP.")


def image_key(image: Image.Image) -> str:
    """Cache key of a picture: a digest of its size and pixels."""
    digest = hashlib.sha256(f"{image.size}{image.mode}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def factors_from(names: list[str], values: list[float | None]) -> dict[str, float]:
    """The sliders that are set: name -> factor, without those at 0 (0 means no edit)."""
    return {name: float(v) for name, v in zip(names, values) if v is not None and abs(float(v)) > 1e-9}


class Studio:
    """The model and what every session shares read-only: sliders, samples and limits.

    Model calls hold one lock: on a CPU two sessions' computations would only share its cores.
    """

    def __init__(self, model: SDICModel, label: str = "", max_upload_mb: float = MAX_UPLOAD_MB,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.model = model
        self.label = label
        self.max_upload_mb = max_upload_mb
        self.max_pixels = max_pixels
        self.sliders = [slider_for(model, name) for name in editing.available(model.config.directions)]
        self._directions = {s.name: editing.resolve(s.name, model.config) for s in self.sliders}
        faces = model.config.domain == "faces"
        self.samples = {p.stem: p for p in demo.sample_faces()} if faces else {}
        self.can_align = faces
        self._lock = threading.Lock()

    # ----------------------------------------------------------- the photo
    def open_upload(self, session: Session, path: str | Path, align: bool) -> None:
        """Read an upload, find its faces (choosing the largest) and invert it."""
        self._open(session, read_upload(path, self.max_upload_mb, self.max_pixels), align)

    def open_sample(self, session: Session, name: str) -> None:
        """A bundled sample: already an aligned face, used as it is."""
        if name not in self.samples:
            raise InputError(f"unknown sample {name!r}; samples: {', '.join(self.samples) or 'none'}")
        self._open(session, load_image(self.samples[name]), align=False)

    def realign(self, session: Session, align: bool) -> None:
        """The same photo with alignment switched on or off."""
        if session.photo is not None:
            self._open(session, session.photo, align)

    def _open(self, session: Session, photo: Image.Image, align: bool) -> None:
        faces = self.find_faces(photo, align)
        session.photo, session.faces, session.choice = photo, faces, 0
        self.invert(session)

    def find_faces(self, photo: Image.Image, align: bool) -> list[Face]:
        """The photo itself, or with ``align`` its FFHQ-aligned faces, largest first."""
        if not align:
            return [Face(photo)]
        if not self.can_align:
            raise InputError(f"face alignment is for faces models; this is a {self.model.config.domain} model")
        from ..alignment import NoFaceFoundError
        from ..inputs import make_aligner

        try:
            found = make_aligner(self.model.config.input_size, all_faces=True)(photo, "the photo")
        except NoFaceFoundError:
            raise InputError("No face found in this photo. Use a photo with a clearly visible, roughly "
                             "frontal face, or switch alignment off for an already aligned face.") from None
        return [Face(face.image, face) for face in found]

    def choose(self, session: Session, index: int) -> None:
        """Invert another of the photo's faces."""
        if not 0 <= index < len(session.faces):
            raise InputError(f"no face {index}; this photo has {len(session.faces)}")
        session.choice = index
        self.invert(session)

    # ---------------------------------------------------------- the model
    def invert(self, session: Session) -> Inversion:
        """Invert the chosen face, or take it from the session's cache."""
        face = session.face()
        key = image_key(face.image)
        session.reused = key in session.cache
        if session.reused:
            session.cache.move_to_end(key)
        else:
            with self._lock:
                start = time.perf_counter()
                inversion = self.model.invert(face.image).detach_cpu()
                session.cache[key] = (inversion, time.perf_counter() - start)
        session.inversion, session.invert_seconds = session.cache[key]
        while len(session.cache) > CACHED_INVERSIONS:
            session.cache.popitem(last=False)
        return session.inversion

    def edited(self, session: Session, factors: dict[str, float]) -> tuple[Inversion, float]:
        """The cached inversion moved along every set slider (one generator run), and its seconds."""
        inversion = session.inversion
        if inversion is None:
            raise InputError("Upload a photo or pick a sample first.")
        unknown = sorted(set(factors) - set(self._directions))
        if unknown:
            raise InputError(f"unknown direction(s) {', '.join(unknown)}")
        if not factors:
            return inversion, 0.0
        blend = Blend(tuple((self._directions[name], factor) for name, factor in factors.items()))
        with self._lock:
            start = time.perf_counter()
            result = self.model.edit(inversion, blend, 1.0).detach_cpu()
            return result, time.perf_counter() - start

    def result_picture(self, session: Session, result: Inversion, paste: bool) -> Image.Image:
        """The result as a picture (kept for the download): the generator's output, or pasted into the photo."""
        face = session.face()
        if paste and face.aligned is not None:
            from ..alignment import paste_back

            session.picture = paste_back(session.photo, face.aligned, result.image[0])
        else:
            session.picture = result.to_pil()[0]
        return session.picture


def views(inversion: Inversion) -> dict[str, Image.Image]:
    """The four panels: input, e4e reconstruction, SDIC result, discrepancy map."""
    return {
        "input": inversion.to_pil("input")[0],
        "e4e": inversion.to_pil("initial_image")[0],
        "SDIC": inversion.to_pil("image")[0],
        "discrepancy": inversion.to_pil("discrepancy")[0],
    }


def save_inversion(inversion: Inversion, path: Path) -> Path:
    """Write the inversion file (``Inversion.save``: what ``Inversion.load`` and
    ``sdic edit --from-latents`` read). The one place that decides the download's format."""
    return inversion[0].save(path.with_suffix(".safetensors"))


def write_downloads(session: Session) -> list[Path]:
    """The last result as PNG and the inversion file, in the session's own folder."""
    if session.inversion is None or session.picture is None:
        raise InputError("Nothing to download yet: upload a photo or pick a sample first.")
    folder = session.download_folder()
    png = folder / "sdic_result.png"
    session.picture.save(png)
    return [png, save_inversion(session.inversion, folder / "sdic_inversion")]


def timing_text(session: Session, edit_seconds: float | None, device: str) -> str:
    """One line with the time of the inversion and of the edit."""
    text = f"Inversion (e4e + DIPN + DICN): {session.invert_seconds:.2f} s"
    if session.reused:
        text += " (cached: not recomputed)"
    if edit_seconds:
        text += f" · edit (generator only): {edit_seconds:.2f} s"
    return text + f" · on {device}"
