"""What the benchmark scripts share: printing their results as a Markdown table (RESULTS.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]
Cell = str | Callable[[Row], str]


def markdown_table(rows: Iterable[Row], columns: Sequence[tuple[str, Cell, bool]]) -> str:
    """A Markdown table with one line per row.

    Parameters
    ----------
    rows : iterable of mappings
        One result per table row.
    columns : sequence of ``(header, cell, right)``
        ``cell`` is a format string filled from the row (``"{auroc:.3f}"``) or a function of the
        row that returns the cell's text; ``right`` aligns the column right (numbers).

    Returns
    -------
    str
        The header, the alignment line and the rows, joined by newlines (no trailing newline).

    Examples
    --------
    >>> print(markdown_table([{"m": "a", "x": 0.5}], [("method", "{m}", False), ("x", "{x:.2f}", True)]))
    | method | x |
    | --- | ---: |
    | a | 0.50 |
    """

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [line(h for h, _, _ in columns), line("---:" if right else "---" for _, _, right in columns)]
    for r in rows:
        lines.append(line(c.format_map(r) if isinstance(c, str) else c(r) for _, c, _ in columns))
    return "\n".join(lines)


def print_markdown_table(rows: Iterable[Row], columns: Sequence[tuple[str, Cell, bool]]) -> None:
    """Print :func:`markdown_table` of ``rows`` to stdout."""
    print(markdown_table(rows, columns))
