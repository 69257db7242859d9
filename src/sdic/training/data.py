"""Image-folder datasets, the deterministic train/validation split, and a resumable batch stream.

Images are found recursively (sorted by relative path), resized to the
training resolution with PIL bilinear filtering (the authors' ``Resize``) and
normalised to [-1, 1]; car-like domains are letterboxed into the square frame
(see :mod:`sdic.images`). Horizontal flips are decided per (epoch, image) by
the sampler, not by the worker processes, so the data order and augmentation
depend only on the seed and the epoch: a resumed run sees the same batches, and
N processes x batch B see the same images as one process x batch N*B.

An image that cannot be read (corrupt, not an image, or a decompression bomb:
more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` limit allows) is skipped with a
warning (the next readable image takes its place), so one bad file does not stop
a long run; a set where no image is readable is refused before training starts.
With ``data.align`` the folders are first FFHQ-aligned once (:func:`align_folder`).
"""

from __future__ import annotations

import dataclasses
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import SDICConfig
from ..errors import InputError, MissingFileError, SDICError
from ..files import atomic_write
from ..images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    content_rows_at,
    folder_images,
    letterbox,
    load_image,
    pil_to_tensor,
)
from .config import ConfigError, DataConfig
from .distributed import DistContext, barrier


class UnreadableImageWarning(UserWarning):
    """A dataset image could not be decoded and was skipped."""


class NoReadableImageError(SDICError, ValueError):
    """Not one image of a training or validation set can be read."""


def _read_training_image(path: Path) -> Image.Image:
    """``load_image``, with PIL's decompression-bomb refusal reported as an unreadable image."""
    try:
        return load_image(path)
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: refused as a possible decompression bomb ({error})") from None


def list_image_files(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted by their path relative to it."""
    return folder_images(root, recursive=True)


def split_files(files: list[Path], fraction: float, maximum: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split: a seeded permutation of the sorted list; validation gets the first part."""
    count = min(maximum, int(round(len(files) * fraction))) if fraction > 0 else 0
    if fraction > 0 and count == 0 and len(files) > 1:
        count = 1
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(order[:count])
    train = sorted(order[count:])
    return [files[i] for i in train], [files[i] for i in val]


def frame_transform(size: int, model: SDICConfig | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to ``size`` x ``size`` (or letterbox to the model's content rows) -> [3, S, S] in [-1, 1]."""
    top, bottom = content_rows_at(model, size) if model is not None else (0, size)

    def transform(image: Image.Image) -> torch.Tensor:
        return letterbox(pil_to_tensor(image.resize((size, bottom - top), Image.BILINEAR)), size, (top, bottom))

    return transform


class ImageFolder(Dataset):
    """Images of a file list; items are ``(index, flip)`` pairs (or plain indices)."""

    def __init__(self, files: list[Path], transform: Callable[[Image.Image], torch.Tensor], name: str = "") -> None:
        if not files:
            raise InputError("the image list is empty")
        self.files = list(files)
        self.name = name or "the dataset"
        self.transform = transform
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, bool]) -> torch.Tensor:
        index, flip = item if isinstance(item, tuple) else (item, False)
        last_error = None
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            if i in self._unreadable:
                continue
            try:
                image = _read_training_image(self.files[i])
            except ImageReadError as error:
                self._unreadable.add(i)
                last_error = error
                warnings.warn(f"skipping unreadable training image: {error}", UnreadableImageWarning, stacklevel=2)
                continue
            tensor = self.transform(image)
            return tensor.flip(-1) if flip else tensor
        detail = f"; the last one: {last_error}" if last_error is not None else ""
        raise NoReadableImageError(f"none of the {len(self.files)} images of {self.name} can be read{detail}")


# Seed of an epoch's flips: seed * FLIP_SEED_STRIDE + epoch + FLIP_SEED_OFFSET (primes: every
# (seed, epoch) pair of a run gets its own stream, none equal to the shuffling seed's).
FLIP_SEED_STRIDE = 1_000_003
FLIP_SEED_OFFSET = 7919
# Seed of the DataLoader's own generator (its workers' base seed; the order comes from the sampler).
LOADER_SEED = 0


def leave_stopping_to_the_trainer(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C and SIGTERM: the training process saves, then ends them.

    A signal sent to the whole process group (Ctrl-C, ``kill -- -PGID``, a scheduler pre-empting
    the job) would otherwise kill the workers first (PyTorch re-raises SIGTERM in them), and the
    trainer would die on the lost worker instead of saving its checkpoint.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class FlipSampler(DistributedSampler):
    """``DistributedSampler`` that also draws each image's flip and can start mid-epoch.

    Process ``rank`` gets positions rank, rank+W, ... of the epoch's permutation
    (torch's rule); flips are a function of (seed, epoch, image index) only.
    """

    def __init__(self, dataset: Dataset, ctx: DistContext, seed: int, shuffle: bool = True,
                 hflip: bool = False) -> None:
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.hflip = hflip
        self.start = 0  # samples of this process to skip at the beginning of the epoch

    def flips(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * FLIP_SEED_STRIDE + self.epoch + FLIP_SEED_OFFSET)
        return torch.rand(len(self.dataset), generator=g) < 0.5

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        indices = list(super().__iter__())[self.start:]
        flips = self.flips() if self.hflip else None
        for i in indices:
            yield (i, bool(flips[i])) if flips is not None else (i, False)

    def __len__(self) -> int:
        return self.num_samples - self.start


class BatchStream:
    """Endless batches, epoch after epoch; its state is (epoch, batches taken in the epoch)."""

    def __init__(self, dataset: Dataset, ctx: DistContext, batch_size: int, seed: int,
                 hflip: bool, workers: int) -> None:
        self.dataset = dataset
        self.ctx = ctx
        self.batch_size = batch_size
        self.workers = workers
        self.sampler = FlipSampler(dataset, ctx, seed, shuffle=True, hflip=hflip)
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training set has {len(dataset)} images, fewer than one global batch "
                f"({batch_size} x {ctx.world_size} processes); add images or lower run.batch_size")
        self.epoch = 0
        self.position = 0
        self._iterator: Iterator | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._iterator = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.position * self.batch_size
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=self.workers, pin_memory=self.ctx.device.type == "cuda",
            worker_init_fn=leave_stopping_to_the_trainer if self.workers else None,
            generator=torch.Generator().manual_seed(LOADER_SEED),  # keeps the global RNG untouched
        )
        self._iterator = iter(loader)

    def next(self) -> torch.Tensor:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._iterator = None
        if self._iterator is None:
            self._start_epoch()
        batch = next(self._iterator)
        self.position += 1
        if self.position >= self.batches_per_epoch:
            self._iterator = None  # let the workers of a finished epoch go
        return batch


def build_datasets(config: DataConfig, transform: Callable[[Image.Image], torch.Tensor]) -> tuple[ImageFolder, ImageFolder | None]:
    """Training and validation sets from ``data.path`` (and ``data.val_path``)."""
    if not config.path:
        raise ConfigError("data.path is not set: give the folder of training images (data.path=...)")
    files = list_image_files(config.path)
    if not files:
        raise MissingFileError(f"{config.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    if config.val_path:
        train_files, val_files = files, list_image_files(config.val_path)
    else:
        train_files, val_files = split_files(files, config.val_fraction, config.val_max, config.split_seed)
    if not train_files:
        raise ConfigError(f"{config.path}: every image went to validation; lower data.val_fraction")
    val = ImageFolder(val_files, transform, f"the validation set ({config.val_path or config.path})") \
        if val_files else None
    train = ImageFolder(train_files, transform, f"the training set ({config.path})")
    train[0]  # fails here, before training, when no image is readable
    if val is not None:
        try:
            val[0]
        except NoReadableImageError as error:
            warnings.warn(f"{error}: training without validation", UnreadableImageWarning, stacklevel=2)
            val = None
    return train, val


def validation_batches(dataset: ImageFolder | None, batch_size: int, count: int) -> Iterator[torch.Tensor]:
    """The first ``count`` batches of the validation set, in order, unflipped."""
    if dataset is None or count <= 0:
        return
    n = min(len(dataset), batch_size * count)
    for start in range(0, n, batch_size):
        yield torch.stack([dataset[i] for i in range(start, min(n, start + batch_size))])


def align_folder(source: str | Path, target: Path, size: int) -> Path:
    """FFHQ-align the largest face of every image below ``source`` into ``target`` (PNG).

    Finished files are kept, so an interrupted run resumes; an image without a
    readable face is skipped with a warning.
    """
    from ..alignment import NoFaceFoundError, align_faces

    source = Path(source)
    target.mkdir(parents=True, exist_ok=True)
    for file in list_image_files(source):
        out = (target / file.relative_to(source)).with_suffix(".png")
        if out.exists():
            continue
        try:
            face = align_faces(load_image(file), output_size=size, max_faces=1)[0]
        except (ImageReadError, NoFaceFoundError) as error:
            warnings.warn(f"{file}: skipped for training ({error})", UnreadableImageWarning, stacklevel=2)
            continue
        atomic_write(out, lambda tmp, image=face.image: image.save(tmp, format="PNG"), durable=False)
    return target


def aligned_config(config: DataConfig, run_dir: Path, size: int, ctx: DistContext) -> DataConfig:
    """``config`` with its folders replaced by aligned copies (made by rank 0) when ``align`` is set."""
    if not config.align:
        return config
    folders = {"path": run_dir / "aligned" / "train", "val_path": run_dir / "aligned" / "val"}
    if ctx.is_main:
        for key, folder in folders.items():
            if getattr(config, key):
                align_folder(getattr(config, key), folder, size)
    barrier(ctx)
    changes = {key: str(folder) for key, folder in folders.items() if getattr(config, key)}
    return dataclasses.replace(config, **changes)
