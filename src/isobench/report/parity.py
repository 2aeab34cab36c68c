"""Text rendering of the parity table (:func:`.model.parity_table`): ``isobench parity``'s output."""
from __future__ import annotations

import textwrap
from collections.abc import Iterable

from ..results import OK, ParityResult
from . import model, words

ERROR_WIDTH = 24  # characters per line of a failed worker's error, written down its column


def parity_lines(p: model.Parity) -> list[str]:
    """The parity table in aligned columns: the heads, each column's verdict, then a row per check with its tolerance
    and its value in each column; a column whose worker did not finish has its error written down it (rows without a
    check are added where the error needs more lines than there are checks)."""
    heads = [*words.PARITY_HEAD, *(c.label for c in p.columns)]
    rows = [[words.PARITY_VERDICT, "", *map(words.parity_verdict, p.columns)]]
    rows += [[r.check, r.tolerance, *map(words.parity_value, r.values)] for r in p.rows]
    for i, c in enumerate(p.columns, len(words.PARITY_HEAD)):
        if c.status != OK:
            lines = textwrap.wrap(words.parity_failure(c), max(len(heads[i]), ERROR_WIDTH))
            rows += [[""] * len(heads) for _ in range(len(lines) - len(rows) + 1)]
            for row, line in zip(rows[1:], lines):
                row[i] = line
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    return ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [heads, *rows]]


def render_parity(result: ParityResult, notes: Iterable[str] = ()) -> str:
    """``isobench parity``'s report of one workload: the table (:func:`parity_lines`), the notes on how the check
    was made, and the verdict."""
    p = model.parity_table(result, notes)
    return "\n".join([words.parity_title(p), *(f"  {line}" for line in parity_lines(p)),
                      *(f"  note: {n}" for n in p.notes), words.parity_end(p)])
