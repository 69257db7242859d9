"""Training benchmark: steps per second of each stage (StyleGAN2, e4e, SDIC) on CPU.

Runs the real training loop (``sdic.training.train``, what ``sdic train`` runs) with the
shipped configurations, ``configs/<stage>_tiny.yaml`` (and ``configs/<stage>_faces64.yaml``
with ``--faces64``), for ``--warmup`` + ``--steps`` steps in a temporary folder:

* the starting checkpoints e4e and SDIC need are stand-ins with seeded random weights
  (the speed of a step does not depend on the values);
* the images are a folder of synthetic 64x64 PNGs (or ``--data FOLDER``, e.g. the
  faces dataset; it is only read);
* ``run.log_every=1``, so ``metrics.jsonl`` holds the duration of every loop iteration
  (next batch, the stage's step, the all-reduce of the loss terms, the checks); the
  warm-up steps are dropped, and checkpoints, validation and image grids are left out.

It prints the median seconds per step and the throughput (steps / total time, so the
lazy regularisers -- R1 every 16 steps, path length every 4 -- are included) per stage,
with the machine, torch version and thread count.

    python benchmarks/bench_training.py                     # tiny preset, torch's thread count
    python benchmarks/bench_training.py --threads 1 --steps 20
    python benchmarks/bench_training.py --faces64           # also the faces64 configs (minutes)
    python benchmarks/bench_training.py run.precision=bf16 run.channels_last=true   # overrides for every run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STAGES = ("stylegan2", "e4e", "sdic")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def machine(threads: int) -> str:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"Machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process); "
            f"torch {torch.__version__}, {threads} threads")


# -------------------------------------------------------------- inputs
def synthetic_images(folder: Path, count: int = 64, size: int = 64) -> Path:
    """Smooth random colour fields with noise (decoding cost like real PNGs of that size)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        a, b, c = rng.uniform(0, 255, size=(3, 3))
        image = a[None, None] * (1 - xx[..., None]) + b[None, None] * yy[..., None] + c[None, None] * 0.3
        image = image + rng.normal(0, 12, size=(size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def stand_ins(folder: Path, model) -> tuple[Path, Path]:
    """(stylegan2.safetensors, e4e.safetensors) with seeded random weights for ``model`` (an SDICConfig)."""
    import torch

    from sdic.checkpoints import Kind, save_model
    from sdic.networks import Encoder4Editing, Generator
    from sdic.training.e4e import InversionExport
    from sdic.training.stylegan2 import GeneratorExport

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = Generator(model.generator, tap_resolution=model.tap_resolution)
    latent_avg = generator.mean_latent(1024).expand(model.n_latent, -1).clone()
    encoder = Encoder4Editing(model.encoder, model.n_latent, model.generator.style_dim)
    g_path = save_model(GeneratorExport(generator, latent_avg), folder / "stylegan2.safetensors", model,
                        kind=Kind.STYLEGAN2)
    e_path = save_model(InversionExport(encoder, generator, latent_avg), folder / "e4e.safetensors", model,
                        kind=Kind.E4E)
    return Path(g_path), Path(e_path)


# ---------------------------------------------------------------- runs
def step_times(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [1.0 / r["train/steps_per_second"] for r in records if "train/steps_per_second" in r]


def bench_stage(stage: str, preset: str, work: Path, data: Path, sources: dict[str, Path], args) -> dict:
    from sdic.training import config as training_config
    from sdic.training import train

    total = args.warmup + args.steps
    overrides = [
        f"data.path={data}", "data.val_path=", "data.val_fraction=0", f"run.out={work / f'{preset}_{stage}'}", f"run.steps={total}",
        "run.log_every=1", "run.image_every=0", "run.val_every=0", "run.val_batches=0",
        f"run.checkpoint_every={10 * total}", "run.keep_every=0", "run.tensorboard=false", "run.progress=false",
        f"run.threads={args.threads}", "run.device=cpu",
    ]
    if stage == "e4e":
        overrides.append(f"generator={sources['generator']}")
    if stage == "sdic":
        overrides.append(f"e4e={sources['e4e']}")
    config = training_config.load(stage, CONFIGS / f"{stage}_{preset}.yaml", overrides + list(args.overrides))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. e4e's "run.steps ends at progressive stage k"
        result = train(stage, config)
    times = step_times(result.run_dir)[args.warmup:]
    return {"stage": stage, "preset": preset, "batch": config.run.batch_size, "precision": config.run.precision,
            "median": statistics.median(times), "mean": sum(times) / len(times), "n": len(times)}


def main(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sdic.config import tiny
    from sdic.training import config as training_config

    presets = ["tiny"] + (["faces64"] if args.faces64 else [])
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdic-bench-training-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else synthetic_images(work / "images")
        for preset in presets:
            if preset == "tiny":
                model = tiny()
            else:  # the faces64 stack is described in the StyleGAN2 config
                spec = training_config.load("stylegan2", CONFIGS / "stylegan2_faces64.yaml").model
                model = training_config.resolve_model(spec)
            generator, e4e = stand_ins(work / f"{preset}_sources", model)
            for stage in stages:
                row = bench_stage(stage, preset, work, data, {"generator": generator, "e4e": e4e}, args)
                rows.append(row)
                print(f"  {preset} {stage}: {row['median']:.3f} s/step (median of {row['n']})", file=sys.stderr)
    load_after = os.getloadavg()

    command = " ".join(["python benchmarks/bench_training.py", *sys.argv[1:]])
    lines = [
        machine(torch.get_num_threads()),
        f"Command: `{command}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; load average before/after {load_before[0]:.1f}/"
        f"{load_after[0]:.1f}; {args.warmup} warm-up steps dropped, {args.steps} timed",
        "",
        "| stage | config | batch | precision | median s / step | steps / s (incl. lazy regularisers) |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['preset']} | {r['batch']} | {r['precision']} | {r['median']:.3f} "
                     f"| {1.0 / r['mean']:.2f} |")
    print("\n".join(lines))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per stage (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of stylegan2,e4e,sdic")
    parser.add_argument("--faces64", action="store_true", help="also the faces64 configs (minutes per stage)")
    parser.add_argument("--data", default="", help="image folder to read (default: synthetic 64x64 images)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every run")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


if __name__ == "__main__":
    main(parse())
