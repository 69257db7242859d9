"""Put a trained SDIC run and its learned directions into the package as the bundled model.

    python -m tools.package_default_model runs/faces64/sdic/sdic.safetensors \
        runs/faces64/directions --name faces64 --directions-set facesjs

Writes ``src/sdic/data/models/<name>.safetensors`` (our format, the model's config naming the
direction set; large weight tensors stored as float16 to fit the package budget) and copies the direction files (only ``*.safetensors``, not the reports) to
``src/sdic/data/directions/<set>/``. ``sdic.checkpoints.bundled.BUNDLED_MODELS`` maps ``default`` to the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from sdic.checkpoints import Kind, read_native, save_model

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "src" / "sdic" / "data"


def package(model_file: Path, directions: Path, name: str, direction_set: str, data: Path = PACKAGE_DATA) -> Path:
    """Copy the directions, then write the model with ``config.directions = direction_set``."""
    checkpoint = read_native(model_file)
    if checkpoint.kind != Kind.SDIC:
        raise SystemExit(f"{model_file}: a {checkpoint.kind} file, not an SDIC model")
    files = sorted(directions.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"{directions}: no direction files (*.safetensors)")
    target = data / "directions" / direction_set
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in files:
        shutil.copy2(file, target / file.name)

    import torch

    from sdic.model import SDICModel

    config = dataclasses.replace(checkpoint.config, name=name, directions=direction_set)
    model = SDICModel(config)
    model.load_state_dict(checkpoint.tensors)
    with torch.no_grad():
        return save_model(model, data / "models" / f"{name}.safetensors", config, half=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="sdic.safetensors of a finished SDIC run")
    parser.add_argument("directions", type=Path, help="output folder of `sdic directions train`")
    parser.add_argument("--name", default="faces64", help="model file name inside the package")
    parser.add_argument("--directions-set", dest="direction_set", default="facesjs",
                        help="folder name of the direction set inside the package")
    args = parser.parse_args()
    path = package(args.model, args.directions, args.name, args.direction_set)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {args.direction_set} directions")


if __name__ == "__main__":
    main()
