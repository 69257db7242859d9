"""The project's FID of one or more generators against a folder of real images, in one run.

    python -m tools.generator_fid default runs/v1/stylegan2/stylegan2.safetensors \
        --reference DATA/faces64_heldout/images --count 5000 --stats-cache DATA/heldout_5000.npz

Each generator draws ``--count`` images from seeds ``0 .. count-1`` (NVIDIA's z of a seed,
truncation 1, constant noise: ``sdic generate``'s images); their TF-Inception statistics
(``sdic.metrics.fid``) are compared with those of the first ``--count`` reference images
(sorted by name), computed once and kept in ``--stats-cache``. The model card's generator FID
is this command at 5,000 samples against the 5,000 held-out faces. Prints one JSON line per
generator and, with ``--out``, writes them all to a JSON file. ``--precision-recall`` adds
improved precision and recall (``sdic.metrics.precision_recall``) on the same features, to
tell a generator that got cleaner from one that got more varied. ``--diversity PAIRS`` adds the
mean LPIPS-alex over that many random pairs of each generator's samples
(``sdic.metrics.diversity``), and a first row ``reference`` with the same measure of the
reference images: a collapsing generator falls far below it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def reference_features(folder: Path, count: int, model):
    """TF-Inception features of the first ``count`` images of ``folder`` (sorted by name)."""
    from sdic.errors import InputError
    from sdic.metrics.fid import compute_features, list_images

    files = list_images(folder)[:count]
    if len(files) < count:
        raise InputError(f"{folder}: {len(files)} images, --count {count} needs as many")
    return compute_features(files, model)


def reference_statistics(folder: Path, count: int, model, cache: Path | None, features=None):
    """``(mu, sigma)`` of the reference images; read from / written to ``cache``."""
    from sdic.metrics.fid import feature_statistics, load_statistics, save_statistics

    if cache is not None and cache.is_file():
        return load_statistics(cache)
    stats = feature_statistics(reference_features(folder, count, model) if features is None else features)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_statistics(cache, *stats)
    return stats


def generator_images(source: str, count: int, batch_size: int = 50):
    """``count`` images of a generator file or bundled name, seeds ``0..count-1``, in [-1, 1]."""
    import torch

    from sdic import load_generator
    from sdic.sampling import generate

    generator = load_generator(source)
    return torch.cat([s.images.clamp(-1, 1) for s in generate(generator, list(range(count)), batch_size=batch_size)])


def reference_images(folder: Path, count: int):
    """The first ``count`` images of ``folder`` (sorted by name), RGB in [-1, 1]."""
    import numpy as np
    import torch

    from sdic.images import load_image
    from sdic.metrics.fid import list_images

    arrays = [np.asarray(load_image(f)) for f in list_images(folder)[:count]]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def generator_fids(sources: list[str], reference: Path, count: int, cache: Path | None = None,
                   with_precision_recall: bool = False, diversity_pairs: int = 0) -> list[dict]:
    """One row ``{"generator", "samples", "fid", "seconds"}`` per source (and precision, recall,
    diversity); with ``diversity_pairs`` first a ``reference`` row with the real images' diversity."""
    from sdic.metrics.diversity import pairwise_lpips
    from sdic.metrics.fid import InceptionFeatures, compute_features, feature_statistics, frechet_distance
    from sdic.metrics.precision_recall import precision_recall

    model = InceptionFeatures(input_range=(-1.0, 1.0))
    # Folder images are read in [0, 1] and mapped to the model's range by compute_features.
    real = reference_features(reference, count, model) if with_precision_recall else None
    ref = reference_statistics(reference, count, model, cache, real)
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    if diversity_pairs:
        emit({"generator": "reference", "samples": count,
              "diversity": round(pairwise_lpips(reference_images(reference, count), diversity_pairs), 4)})
    for source in sources:
        start = time.perf_counter()
        images = generator_images(source, count)
        fake = compute_features(images, model)
        row = {"generator": source, "samples": count,
               "fid": round(frechet_distance(*feature_statistics(fake), *ref), 2)}
        if with_precision_recall:
            precision, recall = precision_recall(real, fake)
            row.update(precision=round(precision, 3), recall=round(recall, 3))
        if diversity_pairs:
            row["diversity"] = round(pairwise_lpips(images, diversity_pairs), 4)
        emit({**row, "seconds": round(time.perf_counter() - start, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    from sdic.errors import SDICError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generators", nargs="+", help="generator files or bundled names (default)")
    parser.add_argument("--reference", type=Path, required=True, help="folder of real images")
    parser.add_argument("--count", type=int, default=5000, help="samples and reference images (default 5000)")
    parser.add_argument("--stats-cache", type=Path, help=".npz of the reference statistics (read if present)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--precision-recall", action="store_true",
                        help="also improved precision and recall (k = 3; reference features are computed, not cached)")
    parser.add_argument("--diversity", type=int, default=0, metavar="PAIRS",
                        help="also the mean LPIPS-alex of PAIRS random sample pairs, and of the reference images")
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2 (FID needs a covariance)")
    if args.diversity < 0:
        parser.error("--diversity must be a number of pairs >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = generator_fids(args.generators, args.reference, args.count, args.stats_cache,
                              args.precision_recall, args.diversity)
    except SDICError as error:
        print(f"generator_fid: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
