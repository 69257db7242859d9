"""What a run reports: a progress bar with ETA, TensorBoard scalars and image grids,
``metrics.jsonl`` (always written, TensorBoard or not), sample PNGs and ``run.log``
(events: resumes with what changed, NaN stops).

Only the main process writes; the others get a silent monitor.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from .config import RunConfig

RUN_LOG = "run.log"


def make_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile [B, 3, H, W] images in [-1, 1] into one [3, H', W'] image in [0, 1]."""
    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    b, c, h, w = images.shape
    columns = columns or max(1, int(math.ceil(math.sqrt(b))))
    rows = int(math.ceil(b / columns))
    grid = images.new_ones(c, rows * (h + padding) + padding, columns * (w + padding) + padding)
    for i in range(b):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top: top + h, left: left + w] = images[i]
    return grid


def rows_grid(columns: list[torch.Tensor]) -> torch.Tensor:
    """One row per sample, one column per tensor (e.g. input | e4e | SDIC), resized to the first's size."""
    size = columns[0].shape[-2:]
    resized = [torch.nn.functional.interpolate(c.detach().float().cpu(), size=size, mode="area")
               if c.shape[-2:] != size else c.detach().float().cpu() for c in columns]
    interleaved = torch.stack(resized, dim=1).flatten(0, 1)
    return make_grid(interleaved, columns=len(columns))


def _open_tensorboard(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: TensorBoard logging is off because the `tensorboard` package is missing "
              "(pip install tensorboard, or pip install 'sdic[train]'); scalars still go to "
              "metrics.jsonl", file=sys.stderr)
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


class Monitor:
    """Progress bar, scalar and image logging for one run (no-op unless ``active``)."""

    def __init__(self, run_dir: Path, config: RunConfig, stage: str, start_step: int, active: bool) -> None:
        self.active = active
        self.run_dir = run_dir
        self.config = config
        self.writer = None
        self.bar = None
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last_time = time.perf_counter()
        self.last_step = start_step
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if config.tensorboard:
            self.writer = _open_tensorboard(run_dir / "tb", purge_step=start_step or None)
        if config.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=config.steps, initial=start_step, desc=f"train {stage}", unit="step",
                            dynamic_ncols=True, smoothing=0.05)

    # ------------------------------------------------------------ scalars
    def accumulate(self, terms: dict[str, float]) -> None:
        for name, value in terms.items():  # lazily computed terms are averaged over their own steps
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def step(self, step: int) -> None:
        """Advance the bar; every ``log_every`` steps write the means since the last write."""
        if not self.active:
            return
        if self.bar is not None:
            self.bar.update(1)
        if step % self.config.log_every and step != self.config.steps:
            return
        means = {k: v / self.counts[k] for k, v in self.sums.items()}
        now = time.perf_counter()
        means["steps_per_second"] = (step - self.last_step) / max(1e-9, now - self.last_time)
        self.last_time, self.last_step = now, step
        self.sums, self.counts = {}, {}
        self.scalars(step, means, prefix="train")
        if self.bar is not None:
            shown = {k: f"{v:.3g}" for k, v in list(means.items())[:4]}
            self.bar.set_postfix(shown, refresh=False)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if not self.active:
            return
        record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    # ------------------------------------------------------------- images
    def images(self, step: int, grids: dict[str, torch.Tensor]) -> None:
        """Log [3, H, W] grids in [0, 1] to TensorBoard and ``samples/<name>_<step>.png``."""
        if not self.active:
            return
        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        for name, grid in grids.items():
            array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(folder / f"{name}_{step:08d}.png")
            if self.writer is not None:
                self.writer.add_image(name, grid, step)

    def message(self, text: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def event(self, text: str, echo: bool = True) -> None:
        """Append ``text``, with the UTC time, to the run folder's ``run.log`` (and print it)."""
        if not self.active:
            return
        if echo:
            self.message(text)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.run_dir / RUN_LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {text}\n")

    def close(self) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.jsonl.close()
