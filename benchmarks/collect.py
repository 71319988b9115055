"""Rebuild BENCHMARKS.md: its hand-written head (goals at a glance, the demo) followed by every
area's ``benchmarks/<area>/RESULTS.md``, headings shifted one level down.

    python -m benchmarks.collect
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- Below: copied from benchmarks/<area>/RESULTS.md by `python -m benchmarks.collect`. -->"
AREAS = ("embed", "select", "weight", "quality", "review", "train", "beam", "reliability", "scale")


def main() -> None:
    target = ROOT / "BENCHMARKS.md"
    head = target.read_text(encoding="utf-8").split(MARKER)[0].rstrip() + "\n\n" + MARKER + "\n"
    parts = []
    for area in AREAS:
        text = (ROOT / "benchmarks" / area / "RESULTS.md").read_text(encoding="utf-8")
        parts.append(re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M).strip())
    target.write_text(head + "\n" + "\n\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
