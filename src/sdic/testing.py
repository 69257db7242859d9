"""Deterministic stand-in weights from a tensor manifest, for tests and benchmarks.

The authors' weights cannot be downloaded everywhere, so compatibility and
parity are checked with weights anyone can regenerate from a manifest
(name -> shape, dtype, init statistics). The rule, per tensor, drawing from
its own numpy PCG64 stream seeded with (seed, crc32(name)):

* ``init.value`` present -> that value (fixed filter kernels);
* integer dtype -> zeros;
* name ends with ``running_var`` -> exp(0.2 * N(0, 1));
* init std == 0 (constant init c) -> c + 0.1 * N(0, 1);
* otherwise -> mean + std * N(0, 1).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def standin_tensor(name: str, entry: dict[str, Any], seed: int = 0) -> torch.Tensor:
    """One tensor of a manifest, filled by the rule above."""
    shape = tuple(entry["shape"])
    dtype = getattr(torch, str(entry["dtype"]).removeprefix("torch."))
    init = entry.get("init") or {}
    if "value" in init:
        return torch.tensor(init["value"], dtype=dtype).reshape(shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    z = _stream(seed, name).standard_normal(shape)
    if name.endswith("running_var"):
        values = np.exp(0.2 * z)
    elif init.get("std", 0.0) == 0.0:
        values = init.get("mean", 0.0) + 0.1 * z
    else:
        values = init["mean"] + init["std"] * z
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(dtype)


def standin_state(manifest: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of a manifest (``{"tensors": {name: entry}}``)."""
    return {name: standin_tensor(name, entry, seed) for name, entry in manifest["tensors"].items()}


def read_manifest(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)


def authors_checkpoint(manifest: dict[str, Any], seed: int = 0, opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stand-in in the authors' SDIC layout: state_dict, latent_avg, opts."""
    state = standin_state(manifest, seed)
    latent_avg = state.pop("latent_avg")
    return {"state_dict": state, "latent_avg": latent_avg, "opts": dict(opts or {})}
