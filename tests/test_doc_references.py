"""Code comments cite documents in this repository only, and the sections they cite exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("recsys_matta", "tests", "scripts", "benchmarks") for p in (ROOT / d).rglob("*") if p.suffix in {".py", ".sh"}]
ARCH = ROOT / "docs" / "architecture.md"


def _text(p: Path) -> str:
    return p.read_text(errors="replace")


def test_no_references_to_documents_outside_the_repository():
    outside = re.compile(r"\b(DESIGN|FACTS)" + r"\.md\b")  # split so this file does not match itself
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES for i, ln in enumerate(_text(p).splitlines(), 1) if outside.search(ln)]
    assert not hits, hits


def test_cited_architecture_sections_exist():
    doc = ARCH.read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", doc, re.M)}
    subsections = set(re.findall(r"^### (.+)$", doc, re.M))
    cited_numbers, cited_names = set(), set()
    for p in SOURCES:
        for m in re.finditer(r"docs/architecture\.md(?: sections? ([\d]+)(?: and (\d+)|-(\d+))?)?(?:, \"([^\"]+)\")?", _text(p)):
            cited_numbers |= {int(g) for g in m.groups()[:3] if g}
            if m.group(4):
                cited_names.add(m.group(4))
    assert cited_numbers and cited_names
    assert cited_numbers <= sections, cited_numbers - sections
    assert cited_names <= subsections, cited_names - subsections
