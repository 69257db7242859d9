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


class Clock:
    """Wall seconds and CPU seconds of this process (all threads) since the last lap.

    On a machine shared with other jobs the wall time stretches; the CPU time much less.
    """

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


def _encode_png(pictures) -> None:
    for picture in pictures:  # what Gradio does before sending a picture to the page
        picture.save(io.BytesIO(), format="png")


def measure(studio, photo: Path, direction: str, factor: float) -> dict[str, float]:
    """Wall and CPU seconds of one first result, one slider move and one bare inversion."""
    from sdic.ui.core import Session, views

    session = Session()
    clock = Clock()
    studio.open_upload(session, photo, align=False)
    _encode_png([*views(session.inversion).values(), studio.result_picture(session, session.inversion, False)])
    first = clock.lap()
    result, _ = studio.edited(session, {direction: factor})
    _encode_png([studio.result_picture(session, result, False)])
    move = clock.lap()
    studio.model.invert(session.faces[0].image)
    invert = clock.lap()
    session.close()
    return {"first_result": first[0], "slider_move": move[0], "invert": invert[0],
            "first_result_cpu": first[1], "slider_move_cpu": move[1], "invert_cpu": invert[1]}


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
    print("wall seconds (CPU seconds of all threads in brackets)\n")
    print("| model | first result | slider move | model.invert alone | move / invert |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, timings in runs.items():
        med = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        size = studios[name].model.config.generator.size
        cells = [f"{med[k]:.2f} ({med[k + '_cpu']:.2f})" for k in ("first_result", "slider_move", "invert")]
        print(f"| {name} ({size}x{size}, slider {plans[name][0]}) | {' | '.join(cells)} | "
              f"{med['slider_move'] / med['invert']:.2f} |")


if __name__ == "__main__":
    main()
