"""FID against kimg for StyleGAN2's own discriminator and the projected one, measured in one run.

Trains ``configs/stylegan2_faces64.yaml`` (or ``--config``) twice on the same images, with the
same seed, batch and step budget: arm ``standard`` (StyleGAN2's discriminator, logistic loss,
R1), arm ``projected`` (``discriminator=projected``: Projected GAN's heads on fixed
EfficientNet-Lite0 features, hinge loss) and arm ``projected_da`` (the same with DiffAugment
color, translation and cutout, as ``configs/stylegan2_faces64_projected.yaml``), each with the
overrides of ``ARMS`` plus the command line's (``--arms`` picks which). The arms run
**interleaved**, chunk by chunk (``--resume``), so both see the same load on a shared machine;
after every chunk each arm's g_ema is scored with the project's FID (``sdic.metrics.fid``,
TF-Inception) of ``--fid-samples`` images from fixed latents against the reference images (their
features are computed once and cached in ``--out``), and with improved precision and recall
(``sdic.metrics.precision_recall``, k = 3) on the same features: FID alone cannot tell a
generator that got cleaner but less varied (precision up, recall down) from a better one. Pass a short EMA half-life
(``ema_kimg=0.16``) for budgets of a few kimg: with the default 10 kimg, g_ema is still mostly
the initial generator after 1-2 kimg and both arms score alike.

With ``init=<generator>`` the arms fine-tune that generator (``init=default``: the bundled one),
and a kimg-0 row scores it once for every arm. It prints and writes (``--out``/results.json,
results.md) for every evaluation: kimg, the arm's cumulative training seconds (the
``sdic.training.train`` calls only; evaluation excluded), FID, precision and recall, with the
machine.

    python -m benchmarks.bench_projected --data data/faces64/images \
        --reference data/faces64_heldout/images --chunks 3 --steps-per-chunk 40 --fid-samples 300 \
        --threads 1 ema_kimg=0.16 run.precision=bf16 run.channels_last=true
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARMS = {
    "standard": [],
    "projected": ["discriminator=projected", "d_optim.lr=0.0002"],
    # as configs/stylegan2_faces64_projected.yaml and the paper: with DiffAugment
    "projected_da": ["discriminator=projected", "d_optim.lr=0.0002", "diffaugment=color,translation,cutout"],
}
QUIET = ["run.progress=false", "run.tensorboard=false", "run.image_every=0", "run.val_every=0",
         "run.log_every=10", "run.keep_every=0", "data.workers=0"]


def machine(threads: int) -> str:
    from benchmarks.bench_training import machine as describe

    return describe(threads)


def load_images(folder: Path, count: int, size: int):
    """The first ``count`` images of a folder (sorted), resized to ``size``, in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:count]
    if len(files) < count:
        raise SystemExit(f"{folder}: {len(files)} images, {count} needed")
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def g_ema_samples(run_dir: Path, count: int, seed: int = 4321):
    """``count`` images of a run's g_ema export from fixed latents, in [-1, 1]."""
    from sdic import load_generator

    return generator_samples(load_generator(run_dir / "stylegan2.safetensors"), count, seed)


def generator_samples(generator, count: int, seed: int = 4321):
    """``count`` images (truncation 1, one w per image) from latents fixed by ``seed``, in [-1, 1]."""
    import torch

    generator = generator.eval()
    g = torch.Generator().manual_seed(seed)
    images = []
    with torch.no_grad():
        for start in range(0, count, 50):
            z = torch.randn(min(50, count - start), generator.z_dim, generator=g)
            w = generator.z_to_w(z)[:, None, :].expand(-1, generator.n_latent, -1)
            images.append(generator(w)[0].clamp(-1, 1))
    return torch.cat(images)


def init_source(overrides: list[str]) -> str | None:
    """The generator a fine-tune starts from (the ``init=`` override), if any."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("init=")]
    return values[-1] if values and values[-1] else None


def arm_config(args, arm: str, steps: int):
    from sdic.training import config as C

    overrides = [f"data.path={args.data}", f"run.out={args.out / arm}", f"run.steps={steps}",
                 f"run.threads={args.threads}", f"run.checkpoint_every={args.steps_per_chunk}", *QUIET,
                 *ARMS[arm], *args.overrides]
    return C.load("stylegan2", args.config, overrides)


def main(args: argparse.Namespace) -> None:
    import torch

    import numpy as np

    from sdic.metrics.fid import InceptionFeatures, compute_features, feature_statistics, frechet_distance
    from sdic.metrics.precision_recall import precision_recall
    from sdic.runtime import keep_freed_memory
    from sdic.training import train

    keep_freed_memory()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    args.out.mkdir(parents=True, exist_ok=True)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    size = arm_config(args, arms[0], 1).model["generator"]["size"]
    inception = InceptionFeatures(input_range=(-1.0, 1.0))
    cache = args.out / f"reference_features_{args.fid_samples}.npy"
    if cache.is_file():
        real = np.load(cache)
    else:
        real = compute_features(load_images(args.reference, args.fid_samples, size), inception)
        np.save(cache, real)
    reference = feature_statistics(real)

    def scores(fakes) -> dict:
        fake = compute_features(fakes, inception)
        precision, recall = precision_recall(real, fake)
        return {"fid": round(frechet_distance(*feature_statistics(fake), *reference), 2),
                "precision": round(precision, 3), "recall": round(recall, 3)}
    batch = arm_config(args, arms[0], 1).run.batch_size
    rows, seconds = [], dict.fromkeys(arms, 0.0)
    print(machine(torch.get_num_threads()), flush=True)

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps({"machine": machine(torch.get_num_threads()),
                                                           "command": " ".join(sys.argv), "rows": rows}, indent=1))

    source = init_source(args.overrides)
    if source is not None:  # a fine-tune: kimg 0 is the generator both arms start from
        from sdic import load_generator

        start_scores = scores(generator_samples(load_generator(source), args.fid_samples))
        for arm in arms:
            record({"arm": arm, "step": 0, "kimg": 0.0, "train_seconds": 0.0, **start_scores})
    for chunk in range(1, args.chunks + 1):
        steps = chunk * args.steps_per_chunk
        for arm in arms:
            start = time.perf_counter()
            train("stylegan2", arm_config(args, arm, steps), resume=True)
            seconds[arm] += time.perf_counter() - start
            record({"arm": arm, "step": steps, "kimg": steps * batch / 1000,
                    "train_seconds": round(seconds[arm], 1), **scores(g_ema_samples(args.out / arm, args.fid_samples))})
    write_table(args.out / "results.md", rows, arms)


def write_table(path: Path, rows: list[dict], arms: list[str]) -> None:
    """results.md: one line per kimg, FID / precision / recall / train seconds per arm."""
    header = "| kimg | " + " | ".join(f"{a} FID | {a} P | {a} R | {a} s" for a in arms) + " |"
    lines = [header, "| ---: |" + " ---: | ---: | ---: | ---: |" * len(arms)]
    for kimg in sorted({r["kimg"] for r in rows}):
        cells = []
        for arm in arms:
            row = next((r for r in rows if r["arm"] == arm and r["kimg"] == kimg), None)
            cells += ([f"{row['fid']:.1f}", f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                       f"{row['train_seconds']:.0f}"] if row else [""] * 4)
        lines.append(f"| {kimg:g} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="training image folder")
    parser.add_argument("--reference", type=Path, required=True, help="held-out images for FID")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "stylegan2_faces64.yaml")
    parser.add_argument("--out", type=Path, default=Path("bench_projected"), help="run folders and results")
    parser.add_argument("--arms", default="standard,projected", help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--chunks", type=int, default=6, help="evaluations per arm")
    parser.add_argument("--steps-per-chunk", type=int, default=60)
    parser.add_argument("--fid-samples", type=int, default=1000, help="generated and reference images for FID")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every arm")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
