"""How long the web UI takes: the first result after an upload, and a slider move.

Times the functions the page calls (``sdic.ui.core``), for the bundled default model and for a
stand-in 1024x1024 faces checkpoint (the authors' layout filled from the manifest):

* first result: read the upload, invert (e4e, generator, DIPN, DICN, generator), the four panels
  and the result picture, plus the PNG encoding of the five pictures the page is sent;
* slider move: the cached inversion moved along one direction (generator only) and the result
  picture with its PNG encoding;
* baseline, in the same run: ``model.invert`` alone, so the slider move is also given as a
  fraction of an inversion.

Medians of ``--repeats`` interleaved runs after one warm-up, each with a fresh session (no cache).

    python -m benchmarks.bench_ui                       # default model and the 1024 stand-in
    python -m benchmarks.bench_ui --models default

(run from the repository root).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench_inference import checkpoint_path, machine

REFERENCE_FACE = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces" / "astronaut.jpg"


def _png_seconds(pictures) -> float:
    start = time.perf_counter()
    for picture in pictures:
        picture.save(io.BytesIO(), format="png")
    return time.perf_counter() - start


def measure(studio, photo: Path, direction: str, factor: float) -> dict[str, float]:
    """Seconds of one first result, one slider move and one bare inversion."""
    from sdic.ui.core import Session, views

    session = Session()
    start = time.perf_counter()
    studio.open_upload(session, photo, align=False)
    pictures = [*views(session.inversion).values(), studio.result_picture(session, session.inversion, False)]
    first = time.perf_counter() - start + _png_seconds(pictures)
    start = time.perf_counter()
    result, _ = studio.edited(session, {direction: factor})
    picture = studio.result_picture(session, result, False)
    move = time.perf_counter() - start + _png_seconds([picture])
    start = time.perf_counter()
    studio.model.invert(session.faces[0].image)
    invert = time.perf_counter() - start
    session.close()
    return {"first_result": first, "slider_move": move, "invert": invert}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,standin1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "sdic-bench"))
    args = parser.parse_args()
    import sdic
    from sdic.runtime import keep_freed_memory
    from sdic.ui.core import Studio

    keep_freed_memory()  # as `sdic ui` does (the CLI applies it at start)
    torch.manual_seed(0)
    studios = {}
    for name in args.models.split(","):
        model = sdic.load(checkpoint_path(Path(args.cache)) if name == "standin1024" else name)
        studios[name] = Studio(model, name)
    plans = {name: (s.sliders[0].name, s.sliders[0].high / 2) for name, s in studios.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in studios}
    for repeat in range(args.repeats + 1):
        for name, studio in studios.items():
            timing = measure(studio, REFERENCE_FACE, *plans[name])
            if repeat:  # the first round is the warm-up
                runs[name].append(timing)
    info = machine()
    print(f"machine: {info.get('cpu')}, {info.get('cores')} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeats} runs")
    print("| model | first result (s) | slider move (s) | model.invert alone (s) | move / invert |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, timings in runs.items():
        med = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        size = studios[name].model.config.generator.size
        print(f"| {name} ({size}x{size}, slider {plans[name][0]}) | {med['first_result']:.2f} | "
              f"{med['slider_move']:.2f} | {med['invert']:.2f} | {med['slider_move'] / med['invert']:.2f} |")


if __name__ == "__main__":
    main()
