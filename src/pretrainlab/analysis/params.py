"""Per-module parameter and FLOP table of a model (`pretrainlab analyze params`).

Parameters are counted per module (trainable = `requires_grad`), FLOPs per image with
`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2 FLOPs, as in
fvcore / PyTorch; only matmul / convolution / attention kernels are counted).

For a config, the table lists the method as built for pretraining (student, EMA teacher,
heads, ...), and the FLOPs are those of one image at `data.image_size` through the
evaluated network: the `Model` (backbone -> neck -> heads) holding `Method.eval_backbone()`
(DINO's teacher), or that backbone alone for methods without a `Model`. Modules that
forward does not run (the student, which costs the same per crop) have no FLOPs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pretrainlab.config.schema import Config
from pretrainlab.study.run import random_init_method
from pretrainlab.methods import Method
from pretrainlab.models.model import Model
from pretrainlab.run_dir import write_text

TOTAL = "(total)"


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


@dataclass(frozen=True)
class ModuleStats:
    """One row: dotted module name (`(total)` for the whole model), nesting depth, counts."""

    name: str
    depth: int
    params: ParamCount
    flops_per_image: float | None  # None: the measured forward did not run this module


def count_parameters(module: nn.Module) -> ParamCount:
    """Parameters of `module` and its children (shared parameters counted once)."""
    params = list(module.parameters())
    return ParamCount(sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))


def flops_per_module(root: nn.Module, forward: Callable[[], object], batch_size: int) -> dict[str, float]:
    """FLOPs per image of every module `forward` runs, by dotted name relative to `root` ("" = root).

    Args:
        root: the module whose forward `forward` calls (names are relative to it).
        forward: runs one batch of `batch_size` images through `root`.
        batch_size: images in that batch; counts are divided by it.
    """
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        forward()
    prefix = type(root).__name__
    flops: dict[str, float] = {}
    for name, per_op in counter.get_flop_counts().items():
        if name == prefix:
            relative = ""
        elif name.startswith(prefix + "."):
            relative = name[len(prefix) + 1 :]
        else:
            continue  # "Global" and modules outside `root`
        flops[relative] = sum(per_op.values()) / batch_size
    return flops


def module_table(model: nn.Module, flops: dict[str, float], max_depth: int = 2) -> list[ModuleStats]:
    """Rows for the whole model and every submodule down to `max_depth` levels (1 = direct children)."""
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    rows = [ModuleStats(TOTAL, 0, count_parameters(model), flops.get(""))]
    for name, module in model.named_modules():
        depth = name.count(".") + 1
        if not name or depth > max_depth:
            continue
        params = count_parameters(module)
        module_flops = flops.get(name, _children_flops(name, flops))
        if params.total or module_flops is not None:  # parameter-free modules the forward did not run are noise
            rows.append(ModuleStats(name, depth, params, module_flops))
    return rows


def _children_flops(name: str, flops: dict[str, float]) -> float | None:
    """FLOPs of a container that is never called itself (ModuleDict / ModuleList): sum of its outermost
    descendants that ran; None when none did."""
    inside = [key for key in flops if key.startswith(name + ".")]
    outermost = [key for key in inside if not any(key.startswith(other + ".") for other in inside)]
    return sum(flops[key] for key in outermost) if outermost else None


def evaluated_network(method: Method) -> nn.Module:
    """The `Model` (backbone -> neck -> heads) holding `method.eval_backbone()`, else that backbone."""
    backbone = method.eval_backbone()
    models = (module for module in method.modules() if isinstance(module, Model) and module.backbone is backbone)
    return next(models, backbone)


def encoder_num_params(method: Method) -> int:
    """Parameters of the evaluated backbone plus its neck, if any (what a downstream task inherits)."""
    network = evaluated_network(method)
    neck = network.neck if isinstance(network, Model) else None
    return count_parameters(method.eval_backbone()).total + (count_parameters(neck).total if neck else 0)


def analyze_config(config: Config, *, max_depth: int = 2, image_size: int | None = None) -> list[ModuleStats]:
    """Build the config's method (no data is read) and tabulate it; see the module docstring."""
    method = random_init_method(config)
    method.eval()
    network = evaluated_network(method)
    size = image_size or config.data.image_size
    images = torch.zeros(2, method.eval_backbone().in_chans, size, size)  # (B, C, H, W); 2: BatchNorm-safe
    network_name = next(name for name, module in method.named_modules() if module is network)
    network_flops = flops_per_module(network, lambda: network(images), batch_size=len(images))
    flops = {_join(network_name, name): value for name, value in network_flops.items()}
    flops[""] = network_flops[""]  # the total is that of the measured forward
    return module_table(method, flops, max_depth)


def _join(prefix: str, name: str) -> str:
    return ".".join(part for part in (prefix, name) if part)


# --------------------------------------------------------------------------- rendering

HEADER = ("module", "params", "trainable", "frozen", "MFLOPs / image")


def _row_values(row: ModuleStats) -> tuple[str, int, int, int, float | None]:
    mflops = None if row.flops_per_image is None else row.flops_per_image / 1e6
    return row.name, row.params.total, row.params.trainable, row.params.frozen, mflops


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def params_markdown(rows: list[ModuleStats], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        name, total, trainable, frozen, mflops = _row_values(row)
        indented = "&nbsp;&nbsp;" * (row.depth - 1) + f"`{_leaf(name)}`" if row.depth else f"**{name}**"
        flops = "" if mflops is None else f"{mflops:,.2f}"
        lines.append(f"| {indented} | {total:,} | {trainable:,} | {frozen:,} | {flops} |")
    return "\n".join(lines) + "\n"


def params_csv(rows: list[ModuleStats]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["module", "depth", "params", "trainable", "frozen", "flops_per_image"])
    for row in rows:
        flops = "" if row.flops_per_image is None else f"{row.flops_per_image:.0f}"
        writer.writerow([row.name, row.depth, row.params.total, row.params.trainable, row.params.frozen, flops])
    return buffer.getvalue()


def params_rich_table(rows: list[ModuleStats], title: str) -> Table:
    table = Table(title=title)
    for i, header in enumerate(HEADER):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        name, total, trainable, frozen, mflops = _row_values(row)
        flops = "" if mflops is None else f"{mflops:,.2f}"
        table.add_row("  " * max(row.depth - 1, 0) + _leaf(name), f"{total:,}", f"{trainable:,}", f"{frozen:,}", flops)
    return table


def write_params_table(rows: list[ModuleStats], out_dir: Path, title: str) -> tuple[Path, Path]:
    """`out_dir/params.md` and `out_dir/params.csv`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / "params.md", out_dir / "params.csv"
    write_text(md_path, params_markdown(rows, title))
    write_text(csv_path, params_csv(rows))
    return md_path, csv_path
