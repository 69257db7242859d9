"""The project's FID of one or more generators against a folder of real images, in one run.

    python -m tools.generator_fid default runs/v1/stylegan2/stylegan2.safetensors \
        --reference DATA/faces64_heldout/images --count 5000 --stats-cache DATA/heldout_5000.npz

Each generator draws ``--count`` images from seeds ``0 .. count-1`` (NVIDIA's z of a seed,
truncation 1, constant noise: ``sdic generate``'s images); their TF-Inception statistics
(``sdic.metrics.fid``) are compared with those of the first ``--count`` reference images
(sorted by name), computed once and kept in ``--stats-cache``. The model card's generator FID
is this command at 5,000 samples against the 5,000 held-out faces. Prints one JSON line per
generator and, with ``--out``, writes them all to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def reference_statistics(folder: Path, count: int, model, cache: Path | None):
    """``(mu, sigma)`` of the first ``count`` images of ``folder``; read from / written to ``cache``."""
    from sdic.errors import InputError
    from sdic.metrics.fid import compute_features, feature_statistics, list_images, load_statistics, save_statistics

    if cache is not None and cache.is_file():
        return load_statistics(cache)
    files = list_images(folder)[:count]
    if len(files) < count:
        raise InputError(f"{folder}: {len(files)} images, --count {count} needs as many")
    stats = feature_statistics(compute_features(files, model))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_statistics(cache, *stats)
    return stats


def generator_statistics(source: str, count: int, model, batch_size: int = 50):
    """``(mu, sigma)`` of ``count`` images of a generator file or bundled name, seeds ``0..count-1``."""
    from sdic import load_generator
    from sdic.metrics.fid import compute_features, feature_statistics
    from sdic.sampling import generate

    generator = load_generator(source)
    batches = (s.images.clamp(-1, 1) for s in generate(generator, list(range(count)), batch_size=batch_size))
    return feature_statistics(compute_features(batches, model))


def generator_fids(sources: list[str], reference: Path, count: int, cache: Path | None = None) -> list[dict]:
    """One row ``{"generator", "samples", "fid", "seconds"}`` per source."""
    from sdic.metrics.fid import InceptionFeatures, frechet_distance

    model = InceptionFeatures(input_range=(-1.0, 1.0))
    # Folder images are read in [0, 1] and mapped to the model's range by compute_features.
    ref = reference_statistics(reference, count, model, cache)
    rows = []
    for source in sources:
        start = time.perf_counter()
        fid = frechet_distance(*generator_statistics(source, count, model), *ref)
        rows.append({"generator": source, "samples": count, "fid": round(fid, 2),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
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
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2 (FID needs a covariance)")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = generator_fids(args.generators, args.reference, args.count, args.stats_cache)
    except SDICError as error:
        print(f"generator_fid: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
