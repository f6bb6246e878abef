"""Parameter table of a model: what it holds and what trains, per top-level module, adapters apart.

One row per top-level module of the model (a Segmentor: `backbone`, `head`; DACS: `student`,
`teacher`, ...) counting its parameters but its adapters, followed, when it holds adapters
(`models/adapters.py`), by a row `<module> (adapters)` counting those; parameters the model holds
directly form the row `(own)`. Rows come in `named_parameters` order; the last row, `total`, sums
them. Each parameter is counted once (`named_parameters` skips shared ones), so the rows add up
to the total. Trainable means `requires_grad` (decided by `engine/freeze.set_trainable`).

`param_rows` gives the data; `param_table_markdown` (`params.md`), `param_table_text` (the log) and
`param_table_rich` (a terminal) render it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from torch import nn

from pretrainlab.models.adapters import adapter_parameter_names

TOTAL = "total"
OWN = "(own)"
HEADER = ("module", "parameters", "trainable", "frozen")


@dataclass(frozen=True)
class ParamRow:
    """One row: a module (or `total`), its number of parameters and how many of them train."""

    module: str
    parameters: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.parameters - self.trainable


def param_rows(model: nn.Module) -> list[ParamRow]:
    """Rows per top-level module, adapters apart, and the `total` row last (see the module docstring)."""
    adapters = set(adapter_parameter_names(model))
    counts: dict[str, list[int]] = {}  # row name -> [parameters, trainable], in order of first appearance
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0] if "." in name else OWN
        counts.setdefault(top, [0, 0])
        row = counts.setdefault(f"{top} (adapters)", [0, 0]) if name in adapters else counts[top]
        row[0] += param.numel()
        row[1] += param.numel() if param.requires_grad else 0
    rows = [ParamRow(name, total, trainable) for name, (total, trainable) in counts.items() if total]
    rows.append(ParamRow(TOTAL, sum(row.parameters for row in rows), sum(row.trainable for row in rows)))
    return rows


def _cells(row: ParamRow) -> tuple[str, str, str, str]:
    return row.module, f"{row.parameters:,}", f"{row.trainable:,}", f"{row.frozen:,}"


def param_table_markdown(rows: list[ParamRow], title: str | None = None) -> str:
    """A Markdown table (the `total` row in bold), under `# title` when given."""
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|"]
    for row in rows:
        cells = _cells(row)
        if row.module == TOTAL:
            cells = tuple(f"**{cell}**" for cell in cells)
        else:
            cells = (f"`{cells[0]}`", *cells[1:])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def param_table_text(rows: list[ParamRow]) -> str:
    """Aligned plain text for the log: the module left-aligned, the counts right-aligned."""
    table = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADER))]
    lines = []
    for line in table:
        cells = [cell.ljust(width) if column == 0 else cell.rjust(width)
                 for column, (cell, width) in enumerate(zip(line, widths))]  # fmt: skip
        lines.append("  ".join(cells))
    return "\n".join(lines)


def param_table_rich(rows: list[ParamRow], title: str | None = None) -> Table:
    """A rich table, the `total` row set apart by a line."""
    table = Table(title=title)
    for column, header in enumerate(HEADER):
        table.add_column(header, justify="left" if column == 0 else "right")
    for row in rows:
        if row.module == TOTAL:
            table.add_section()
        table.add_row(*_cells(row))
    return table
