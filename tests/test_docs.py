"""Facts the documentation states: authors, the authors' repository, measured speed, no machine paths.

Everything is read from the repository's files (README, docs/, configs/, package data), so a
wrong name or a figure that drifted from docs/performance.md fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUTHORS = "Ziqiang Zhang, Yan Yan, Jing-Hao Xue and Hanzi Wang"


def text_files() -> list[Path]:
    """The repository's documentation and shipped text: markdown, configs, package sources."""
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("configs/*.yaml"),
             *ROOT.glob("src/sdic/**/*.md"), *ROOT.glob("src/sdic/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("tools/**/*.py")]
    return sorted(p for p in files if "node_modules" not in p.parts)


def test_the_paper_is_credited_to_its_authors_and_their_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert AUTHORS in " ".join(readme.split()) and "arXiv:2312.07079" in readme
    assert "github.com/ZzqLKED/SDIC" in readme
    wrong = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in text_files()
             for m in re.finditer(r"Tao et al|Xinhao|Stanford Cars StyleGAN2|\(Stanford Cars, 512",
                                  p.read_text(encoding="utf-8"))]
    assert wrong == []
    assert "LSUN cars, 512x512" in readme


def test_docs_name_no_path_of_the_machine_and_no_internal_issue():
    docs = [p for p in text_files() if p.suffix in (".md", ".yaml")] + sorted(ROOT.glob("tools/**/*.py"))
    found = []
    for path in docs:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?<![\w.])/(work|tmp|root|home|opt|mnt)/", line) or re.search(r"\bissues?\b", line, re.I):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def performance_table() -> dict[str, list[tuple[float, float]]]:
    """docs/performance.md's measured rows: precision -> [(s / image, ratio vs reference)]."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    block = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    rows: dict[str, list[tuple[float, float]]] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("fp32", "bf16"):
            rows.setdefault(cells[0], []).append((float(cells[2]), float(cells[5])))
    edit = float(re.search(r"inversion: ([0-9.]+)", block).group(1))
    peak = max(float(line.strip().strip("|").split("|")[-1]) for line in block.splitlines()
               if line.startswith("| fp32") or line.startswith("| bf16"))
    return {**rows, "edit": [(edit, 0.0)], "peak": [(peak, 0.0)]}


def _span(values: list[float], digits: int) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}-{high:.{digits}f}"


def test_readme_speed_figures_are_the_measured_ones():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    table = performance_table()
    assert set(table) >= {"fp32", "bf16"}
    for precision in ("fp32", "bf16"):
        seconds = _span([s for s, _ in table[precision]], 2)
        speedup = _span([1 / r for _, r in table[precision]], 1)
        assert f"{seconds} s" in readme, (precision, seconds)
        assert f"{speedup}x" in readme, (precision, speedup)
    assert f"An edit adds {table['edit'][0][0]:g} of an inversion" in readme
    assert f"at most {table['peak'][0][0]:g} GB" in readme
