"""Input handling shared by the commands: expand inputs, read images, skip bad ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..images import ImageReadError, list_images, load_image


@dataclass
class Item:
    path: Path
    name: str  # unique output stem


def find_items(inputs: list[str]) -> list[Item]:
    paths = list_images(inputs)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(inputs)}")
    used: dict[str, int] = {}
    items = []
    for path in paths:
        count = used.get(path.stem, 0)
        used[path.stem] = count + 1
        items.append(Item(path, path.stem if count == 0 else f"{path.stem}_{count}"))
    return items


def batches(items: list[Item], size: int, failures: list[str], bar: tqdm) -> Iterator[tuple[list[Item], list]]:
    """Yield (items, PIL images) batches; unreadable images are reported and skipped."""
    batch: list[Item] = []
    pictures: list = []
    for item in items:
        try:
            pictures.append(load_image(item.path))
            batch.append(item)
        except ImageReadError as error:
            failures.append(str(error))
            tqdm.write(f"skipped: {error}", file=sys.stderr)
            bar.update(1)
        if len(batch) == size:
            yield batch, pictures
            batch, pictures = [], []
    if batch:
        yield batch, pictures


