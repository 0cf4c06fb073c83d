"""Which columns of a table fit a terminal: never a word or an id broken across lines (pure; no Rich here).

A column is shown at its natural width (its longest cell or header) or not at all. Columns are dropped in the
table's documented order (`drop_first`) until the rest fits, then the ones dropped are taken back, most important
first, where they still fit (a long job name dropped late leaves room for the period dropped before it). One column
may instead be cut short with an ellipsis (`shortenable`: free text such as a run's error) when at least
`MIN_SHORTENED` characters of it still fit. The caller prints a note naming what was left out (`TableFit.note`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GAP = 3  # characters between two columns (Rich's SIMPLE_HEAD box, show_edge=False: padding, divider, padding)
MIN_SHORTENED = 20


@dataclass(frozen=True)
class TableFit:
    shown: list[int]  # column indexes, in the table's order
    dropped: list[str]  # headers left out, in the table's order
    shortened_to: int | None  # the shortenable column's width when it is cut short

    def note(self, width: int) -> str | None:
        """One line for the reader, or None when every column is shown whole."""
        if not self.dropped:
            return None
        return f"not shown at {width} columns: {', '.join(self.dropped)} (a wider terminal, or --json, shows them)"


def natural_widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(header), *(len(row[index]) for row in rows)]) for index, header in enumerate(headers)]


def fit(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    drop_first: Sequence[str],
    shortenable: str | None = None,
) -> TableFit:
    """The columns to show within `width` characters. Headers not in `drop_first` are never dropped."""
    widths = natural_widths(headers, rows)
    shown = list(range(len(headers)))

    def needed(columns: list[int]) -> int:
        return sum(widths[index] for index in columns) + GAP * max(len(columns) - 1, 0)

    dropped: list[int] = []
    for header in drop_first:
        if needed(shown) <= width:
            break
        index = headers.index(header)
        if header == shortenable:
            room = widths[index] - (needed(shown) - width)
            if room >= MIN_SHORTENED:
                return TableFit(shown, [headers[i] for i in range(len(headers)) if i not in shown], room)
        shown.remove(index)
        dropped.append(index)
    for index in reversed(dropped):  # a wide column dropped later may have made room for a narrow one dropped earlier
        if needed(sorted([*shown, index])) <= width:
            shown = sorted([*shown, index])
    return TableFit(shown, [headers[i] for i in range(len(headers)) if i not in shown], None)
