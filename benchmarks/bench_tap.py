"""What the tap resolution buys: SDIC trained at tap 16 and at tap 32 on the same frozen e4e, then scored.

Both arms train DIPN + DICN from scratch with ``configs/sdic_faces64.yaml`` on the frozen
generator and e4e of ``--e4e`` (default: the bundled model, whose file holds both), with the
same seed, data, batch and steps; only ``model.tap_resolution`` differs (16: v0's choice; 32:
the compensated feature replaces the generator's 32x32 activation: four times the positions,
the same 128 channels in the bundled model, so DICN costs about four times more). The arms run **interleaved**, chunk by chunk
(``--resume``), so both see the same load on a shared machine. After every chunk each arm's
export is scored on the first ``--heldout-count`` held-out faces with the protocol of
``sdic evaluate`` (docs/evaluation.md; PSNR, MSE, LPIPS-alex of the e4e reconstruction and
the SDIC result at the model's input size), and the cumulative training seconds are recorded.

It prints and writes (``--out``/results.json, results.md) one row per arm and chunk.

    python -m benchmarks.bench_tap --data /work/data/faces64/images \
        --heldout /work/data/faces64_heldout/images --chunks 4 --steps-per-chunk 500 --heldout-count 300 --threads 1

A tiny run (proves the script, measures nothing): ``--chunks 1 --steps-per-chunk 3 --heldout-count 8``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARMS = {"tap16": ["model.tap_resolution=16"], "tap32": ["model.tap_resolution=32"]}
QUIET = ["run.progress=false", "run.tensorboard=false", "run.image_every=0", "run.val_every=0",
         "run.log_every=10", "run.keep_every=0", "data.workers=0"]
METRICS = ("mse", "psnr", "lpips_alex")


def arm_config(args: argparse.Namespace, arm: str, steps: int):
    from sdic.training import config as C

    overrides = [f"e4e={args.e4e}", f"data.path={args.data}", f"data.val_path={args.heldout}",
                 f"run.out={args.out / arm}", f"run.steps={steps}", f"run.batch_size={args.batch_size}",
                 f"run.threads={args.threads}", f"run.checkpoint_every={args.steps_per_chunk}", *QUIET,
                 *ARMS[arm], *args.overrides]
    return C.load("sdic", args.config, overrides)


def bundled_e4e() -> str:
    """The bundled model's file (it holds the generator, e4e and latent_avg the arms share)."""
    from sdic.checkpoints.bundled import bundled_path

    return str(bundled_path("default"))


def heldout_scores(model_path: Path, files: list[Path], metric_fns, batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Mean e4e and SDIC scores of ``files`` (the ``sdic evaluate`` protocol)."""
    import sdic
    from sdic.evaluation import STAGES, score, scored_views

    model = sdic.load(model_path)
    rows = []
    for start in range(0, len(files), batch_size):
        inv = model.invert([str(f) for f in files[start:start + batch_size]])
        rows += score(scored_views(inv, model.config), metric_fns)
    return {stage: {m: sum(r[stage][m] for r in rows) / len(rows) for m in metric_fns} for stage in STAGES}


def main(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.bench_training import machine
    from sdic.evaluation import build_metrics
    from sdic.images import folder_images
    from sdic.runtime import keep_freed_memory
    from sdic.training import train

    keep_freed_memory()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    args.e4e = args.e4e or bundled_e4e()
    args.out.mkdir(parents=True, exist_ok=True)
    files = folder_images(args.heldout)[:args.heldout_count]
    if len(files) < args.heldout_count:
        raise SystemExit(f"{args.heldout}: {len(files)} images, {args.heldout_count} needed")
    metric_fns = build_metrics(METRICS, torch.device("cpu"))
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    rows, seconds = [], dict.fromkeys(arms, 0.0)
    print(machine(torch.get_num_threads()), flush=True)
    for chunk in range(1, args.chunks + 1):
        steps = chunk * args.steps_per_chunk
        for arm in arms:
            start = time.perf_counter()
            train("sdic", arm_config(args, arm, steps), resume=True)
            seconds[arm] += time.perf_counter() - start
            means = heldout_scores(args.out / arm / "sdic.safetensors", files, metric_fns)
            row = {"arm": arm, "step": steps, "images": steps * args.batch_size, "train_seconds": round(seconds[arm], 1),
                   **{f"{stage}_{m}": round(v, 4) for stage, values in means.items() for m, v in values.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(
                {"machine": machine(torch.get_num_threads()), "command": " ".join(sys.argv),
                 "heldout_images": len(files), "rows": rows}, indent=1))
    write_table(args.out / "results.md", rows)


def write_table(path: Path, rows: list[dict]) -> None:
    lines = ["| arm | step | train s | e4e PSNR | SDIC PSNR | e4e LPIPS-alex | SDIC LPIPS-alex | SDIC vs e4e MSE |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        gain = (r["sdic_mse"] / r["e4e_mse"] - 1) * 100 if r["e4e_mse"] else float("nan")
        lines.append(f"| {r['arm']} | {r['step']} | {r['train_seconds']:.0f} | {r['e4e_psnr']:.2f} | {r['sdic_psnr']:.2f} | "
                     f"{r['e4e_lpips_alex']:.4f} | {r['sdic_lpips_alex']:.4f} | {gain:+.0f} % |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="training image folder")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out image folder (scored, never trained on)")
    parser.add_argument("--e4e", default="", help="e4e or SDIC file with the frozen parts (default: the bundled model)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sdic_faces64.yaml")
    parser.add_argument("--out", type=Path, default=Path("bench_tap"), help="run folders and results")
    parser.add_argument("--arms", default="tap16,tap32", help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--chunks", type=int, default=4, help="evaluations per arm")
    parser.add_argument("--steps-per-chunk", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=4, help="v0's SDIC batch (default 4)")
    parser.add_argument("--heldout-count", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every arm")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
