"""Process settings: glibc keeps freed memory for reuse after keep_freed_memory()."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A fresh interpreter (the setting is process-wide): allocate, free and allocate 256 MB
# again; print the page faults of the second allocation's first touch.
PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from sdic.runtime import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = np.ones(64 << 20, np.float32); del x
before = faults(); y = np.ones(64 << 20, np.float32); print(faults() - before)
"""


def _second_touch_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt is Linux-only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    # By default glibc unmaps a block this large on free: the next one is faulted in
    # afresh (65,536 pages, or 128 huge pages with transparent huge pages).
    assert _second_touch_faults("default") >= 100
    assert _second_touch_faults("keep") < 20


def test_the_command_line_applies_it(monkeypatch, tmp_path, capsys):
    import sdic.cli.main as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "out.safetensors")]) == 2
    assert calls == [True]
    assert "missing.pt" in capsys.readouterr().err
