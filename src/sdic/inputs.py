"""Input files of a batch run (the commands, :func:`sdic.evaluation.evaluate`, the UI's aligner).

Expand files, folders and globs to uniquely named items, read (and optionally FFHQ-align)
them in batches, and report and skip the unreadable ones instead of stopping the run.
The output side is :mod:`sdic.outputs`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from tqdm import tqdm

from .errors import MissingFileError
from .images import ImageReadError, list_images, load_image
from .outputs import unique_stems

if TYPE_CHECKING:
    from .alignment import AlignedFace


@dataclass
class Item:
    path: Path
    name: str  # unique output stem


@dataclass
class Unit:
    """One picture for the model: a whole image, or one aligned face of a photo."""

    name: str
    source: Path
    image: Image.Image
    photo: Image.Image | None = None
    face: AlignedFace | None = None
    stem: str = ""  # the input file's unique output stem (``name`` without a face number)


Aligner = Callable[[Image.Image, str], list["AlignedFace"]]


def find_items(inputs: list[str | Path]) -> list[Item]:
    """Expand inputs to image paths with unique output names (``a``, ``a_1``, ...), saying so."""
    return items_for(image_paths(inputs))


def image_paths(inputs: list[str | Path]) -> list[Path]:
    """The image files of ``inputs`` (files, folders, globs); none is a :class:`MissingFileError`."""
    paths = list_images(inputs)
    if not paths:
        raise MissingFileError(f"no images found in {' '.join(map(str, inputs))}")
    return paths


def files_in(specs: Sequence[str | Path], suffix: str, what: str) -> list[Path]:
    """The files of ``specs`` and the ``*suffix`` files of its folders (sorted, hidden ones skipped).

    ``what`` names the files in the errors (``direction``, ``inversion``).
    """
    paths: list[Path] = []
    for path in map(Path, specs):
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix == suffix and not p.name.startswith(".")
                            and p.is_file())
        elif path.is_file():
            paths.append(path)
        else:
            raise MissingFileError(f"{path}: no such {what} file or folder")
    if not paths:
        raise MissingFileError(f"no {what} files ({suffix}) found in {' '.join(map(str, specs))}")
    return paths


def items_for(paths: list[Path]) -> list[Item]:
    """Items with unique output names (``a``, then ``a_1``, ...) for files in order; says which were renamed."""
    names, notes = unique_stems(paths)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return [Item(path, name) for path, name in zip(paths, names)]


def make_aligner(size: int, all_faces: bool) -> Aligner:
    """FFHQ alignment to ``size`` pixels: the largest face, or all faces largest first."""
    from .alignment import align_faces, landmarks

    landmarks.import_dlib()  # a missing dlib or model file is one message before any image
    landmarks.dlib_model_path(landmarks.LANDMARKS_68)

    def align(photo: Image.Image, label: str) -> list[AlignedFace]:
        return align_faces(photo, output_size=size, max_faces=None if all_faces else 1)

    return align


def _read(path: Path) -> Image.Image:
    """``load_image``, with its warnings (an animated GIF's first frame) as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picture = load_image(path)
    for warning in caught:
        tqdm.write(f"note: {warning.message}", file=sys.stderr)
    return picture


def _units(item: Item, align: Aligner | None) -> list[Unit]:
    picture = _read(item.path)
    if align is None:
        return [Unit(item.name, item.path, picture, stem=item.name)]
    from .alignment import NoFaceFoundError

    try:
        faces = align(picture, str(item.path))
    except NoFaceFoundError:
        raise ImageReadError(f"{item.path}: no face found") from None
    names = [item.name] if len(faces) == 1 else [f"{item.name}_face{k}" for k in range(len(faces))]
    return [Unit(name, item.path, face.image, picture, face, item.name) for name, face in zip(names, faces)]


def batches(
    items: list[Item], size: int, failures: list[str], bar: tqdm, align: Aligner | None = None,
) -> Iterator[list[Unit]]:
    """Yield batches of units; unreadable images (or photos without a face) are reported and skipped.

    With alignment, a batch holds the faces of one photo, so they can be pasted back together.
    """
    batch: list[Unit] = []
    for item in items:
        try:
            units = _units(item, align)
        except ImageReadError as error:
            failures.append(str(error))
            tqdm.write(f"skipped: {error}", file=sys.stderr)
            bar.update(1)
            continue
        if align is not None:
            yield units
            continue
        batch += units
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def photos_in(batch: list[Unit]) -> int:
    """How many input files a batch covers (for progress bars)."""
    return len({unit.source for unit in batch})


def paste_faces(units: list[Unit], images: torch.Tensor) -> Image.Image:
    """Paste every face's result back into its (shared) photo."""
    from .alignment import paste_back

    photo = units[0].photo
    for unit, image in zip(units, images):
        photo = paste_back(photo, unit.face, image)
    return photo
