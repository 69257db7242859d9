"""Make the test copy of NVIDIA's reference pickle: its bytes with every tensor's values zeroed.

``sg2ada_paper64.pkl`` (written by NVIDIA's code, 75 MB of random weights) is too large for the
repository. Its weights come from seeded random initialisation (make_nvidia_ref.py), so the
tests rebuild them (tests/nvidia_reference.py) and write them back into this skeleton; the
rebuilt file must have the original's SHA-256, i.e. be NVIDIA's file byte for byte.

    python tools/nvidia_skeleton.py ../shared/reference/nvidia/sg2ada_paper64.pkl tests/data/nvidia

writes ``<name>_skeleton.pkl.xz`` and ``<name>_skeleton.json`` (the original's hash and size,
and where each tensor's values lie: network, tensor name, byte offset, byte count).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import pickletools
from pathlib import Path

from sdic.checkpoints.nvidia import NETWORKS, NetworkRecord, read_network_pickle

LENGTH_BYTES = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8}


def storage_payloads(data: bytes) -> list[tuple[int, bytes]]:
    """(offset in the file, bytes) of every bytes argument of the pickle stream, in order."""
    found = []
    for opcode, arg, pos in pickletools.genops(data):
        if opcode.name in LENGTH_BYTES:
            found.append((pos + 1 + LENGTH_BYTES[opcode.name], arg))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pickle", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    data = bytearray(args.pickle.read_bytes())
    networks = read_network_pickle(args.pickle)
    owner = {}  # payload bytes -> (network, tensor name, tensor)
    for net in NETWORKS:
        record = networks.get(net)
        if isinstance(record, NetworkRecord):
            for name, ref in record.refs().items():
                owner[ref.payload] = (net, name, ref)
    regions = []
    for offset, payload in storage_payloads(bytes(data)):
        if payload not in owner:
            continue
        net, name, ref = owner[payload]
        values = ref.load().contiguous().numpy().tobytes()
        nbytes = len(values)
        start = offset + len(payload) - nbytes  # legacy torch.save: the raw values come last
        assert bytes(data[start:offset + len(payload)]) == values, name
        data[start:start + nbytes] = bytes(nbytes)
        regions.append([net, name, start, nbytes])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.pickle.stem
    (args.out / f"{stem}_skeleton.pkl.xz").write_bytes(lzma.compress(bytes(data), preset=9))
    original = args.pickle.read_bytes()
    info = {"source": args.pickle.name, "sha256": hashlib.sha256(original).hexdigest(), "size": len(original),
            "tensors": regions}
    (args.out / f"{stem}_skeleton.json").write_text(json.dumps(info, indent=0) + "\n")
    print(f"{len(regions)} tensors zeroed; skeleton {(args.out / f'{stem}_skeleton.pkl.xz').stat().st_size} bytes")


if __name__ == "__main__":
    main()
