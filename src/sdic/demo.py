"""``sdic demo``: inversion grids and edit sweeps (PNG grids, animated GIFs) on sample faces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from . import editing
from .evaluation import grid_row, stack_rows
from .images import folder_images
from .model import Inversion, SDICModel

DEFAULT_RANGE = (-3.0, 3.0)
HEADER = 20  # pixels of the label strip above a sweep grid


@dataclass
class DemoOutputs:
    folder: Path
    files: list[Path] = field(default_factory=list)


def sample_faces() -> list[Path]:
    """The sample faces bundled with the package (held-out synthetic faces)."""
    from importlib import resources

    folder = resources.files("sdic") / "data" / "samples"
    return folder_images(Path(str(folder)))


def factor_range(model: SDICModel, name: str) -> tuple[float, float]:
    """The useful factor range stored with a learned direction, else (-3, 3)."""
    return editing.factor_range(name, model.config.directions) or DEFAULT_RANGE


def sweep(model: SDICModel, inv: Inversion, direction: str | torch.Tensor,
          factors: list[float], bar: tqdm | None = None) -> list[Inversion]:
    edits = []
    for factor in factors:
        edits.append(model.edit(inv, direction, factor))
        if bar is not None:
            bar.update(1)
    return edits


def labelled(image: Image.Image, text: str) -> Image.Image:
    out = image.copy()
    ImageDraw.Draw(out).text((4, 2), text, fill="white", stroke_width=1, stroke_fill="black")
    return out


def sweep_grid(edits: list[Inversion], factors: list[float], size: int, title: str = "",
               header: int = HEADER) -> Image.Image:
    """Rows: samples; columns: factors, named in a header strip (``title``, then each factor)."""
    count = len(edits[0])
    grid = Image.new("RGB", (size * len(factors), header + size * count), "white")
    draw = ImageDraw.Draw(grid)
    for column, (edit, factor) in enumerate(zip(edits, factors)):
        label = f"{title} {factor:+.2f}" if column == 0 and title else f"{factor:+.2f}"
        draw.text((column * size + 4, 4), label, fill="black")
        for row, picture in enumerate(edit.to_pil("image")):
            grid.paste(picture.resize((size, size), Image.BILINEAR), (column * size, header + row * size))
    return grid


def sweep_gif(edits: list[Inversion], factors: list[float], path: Path, size: int) -> Path:
    """Animated GIF: all samples side by side, the factor going there and back."""
    frames = []
    for edit, factor in zip(edits, factors):
        pictures = [p.resize((size, size), Image.BILINEAR) for p in edit.to_pil("image")]
        frame = Image.new("RGB", (size * len(pictures), size), "white")
        for i, picture in enumerate(pictures):
            frame.paste(picture, (i * size, 0))
        frames.append(labelled(frame, f"{factor:+.2f}"))
    frames = shared_palette(frames + frames[-2:0:-1])
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=120, loop=0)
    return path


def shared_palette(frames: list[Image.Image]) -> list[Image.Image]:
    """The frames as palette images of one 256-colour palette (fast octree over all frames).

    Pillow's per-frame adaptive palette costs ~50 times more (most of the demo's time) and
    makes colours flicker from frame to frame.
    """
    width, height = frames[0].size
    mosaic = Image.new("RGB", (width, height * len(frames)))
    for i, frame in enumerate(frames):
        mosaic.paste(frame, (0, i * height))
    palette = mosaic.quantize(256, method=Image.Quantize.FASTOCTREE)
    return [frame.quantize(palette=palette) for frame in frames]


def run_demo(model: SDICModel, images: list[Path], folder: Path,
             directions: dict[str, str | torch.Tensor], steps: int = 7, size: int = 128) -> DemoOutputs:
    """Invert ``images``, write the inversion grid, and a grid + GIF per direction.

    ``directions`` maps output labels to bundled names or direction tensors.
    """
    folder.mkdir(parents=True, exist_ok=True)
    outputs = DemoOutputs(folder)
    with tqdm(total=1 + steps * len(directions), unit="step", desc="sdic demo") as bar:
        with torch.no_grad():
            inv = model.invert([str(p) for p in images])
        bar.update(1)
        rows = [grid_row(inv, i, size) for i in range(len(images))]
        outputs.files.append(_save(stack_rows(rows), folder / "inversion.png"))
        for name, direction in directions.items():
            low, high = factor_range(model, direction) if isinstance(direction, str) else DEFAULT_RANGE
            factors = torch.linspace(low, high, steps).tolist()
            bar.set_postfix_str(str(name))
            edits = sweep(model, inv, direction, factors, bar)
            outputs.files.append(_save(sweep_grid(edits, factors, size, str(name)), folder / f"edit_{name}.png"))
            outputs.files.append(sweep_gif(edits, factors, folder / f"edit_{name}.gif", size))
    return outputs


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path
