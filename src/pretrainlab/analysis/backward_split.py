"""Where the backward goes: the cost of the backward pass per training mode (`AdaptersConfig.train`).

Freezing the backbone and training adapters cuts the trainable parameters (47 M -> 3 M in issue 12's runs) far more than the backward time (1.5×). A
backward computes, layer by layer, the gradient of its input (dX), which carries the gradient
further down, and of its weights (dW); for a linear layer or a convolution each costs about one
forward. Freezing a weight saves its dW only: dX still flows through every block between the loss
and the first adapted block. Decoder-only training (backbone frozen, no adapters) records no graph
in the backbone, so its backward stops at the head. `backward_split` measures this on one mixed
batch: one forward of the student with every parameter and the images requiring gradients, then
`torch.autograd.grad` of the mixed loss with respect to each set in turn — autograd runs only the
nodes on a path to the requested tensors and skips the dW of any weight not requested, so each is
the backward of that training mode:

    all        every student parameter (full finetuning): dX + dW everywhere, ≈ 2 × forward
    adapters   the head and the adapters (when the student has some): dX from the loss down to the
               first adapted block, dW of the adapters and the head
    decoder    the head only: the backward stops at the head
    input      the images only, no parameter: dX through the whole network, no dW at all

For each: the parameters whose gradient it computes, its FLOPs (FlopCounterMode), its FLOPs over the
forward's, and its median wall time over `repeats` runs.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pretrainlab.analysis.step_profile import Batch, batch_to_device, flop_counter, synchronize
from pretrainlab.methods.dacs import DACS, weighted_segmentation_cross_entropy
from pretrainlab.models.adapters import AdaptersConfig, adapter_parameter_names, trainable_patterns
from pretrainlab.name_patterns import matches

BACKWARD_SETS: dict[str, str] = {
    "all": "every parameter (full finetuning)",
    "adapters": "head + adapters (backbone frozen)",
    "decoder": "head only (backbone frozen, no adapters)",
    "input": "the images only (input gradient, no weight gradient)",
}


@dataclass(frozen=True)
class BackwardCost:
    """The backward of the mixed loss with respect to one set of tensors (`BACKWARD_SETS`)."""

    name: str
    parameters: int  # parameters whose gradient it computes (0 for `input`)
    flops: int
    seconds: float  # median wall time
    is_configured: bool  # the set that trains in the method as given


@dataclass(frozen=True)
class BackwardSplit:
    """Backward costs of the training modes on one mixed batch, beside the forward's FLOPs."""

    forward_flops: int
    rows: list[BackwardCost]

    def row(self, name: str) -> BackwardCost:
        found = [row for row in self.rows if row.name == name]
        if not found:
            raise KeyError(f"no backward row {name!r}; rows: {', '.join(row.name for row in self.rows)}")
        return found[0]

    def markdown(self, title: str | None = None) -> str:
        """A table gradients of | parameters | GFLOP | × forward | ms, then how to read it."""
        lines = [f"# {title}", ""] if title else []
        lines += ["| gradients of | parameters | GFLOP | × forward | ms |", "|---|---:|---:|---:|---:|"]
        for row in self.rows:
            name = f"**{row.name}** (this run)" if row.is_configured else f"`{row.name}`"
            lines.append(f"| {name}: {BACKWARD_SETS[row.name]} | {row.parameters:,} | {row.flops / 1e9:.3f} | "
                         f"{row.flops / max(self.forward_flops, 1):.2f} | {1e3 * row.seconds:.1f} |")  # fmt: skip
        lines += ["", f"Backward of the mixed loss on one batch; its forward: {self.forward_flops / 1e9:.3f} GFLOP."]
        full, dx_only = self.row("all"), self.row("input")
        lines.append(f"The input gradient alone (`input`: through the whole network, no weight gradient) costs "
                     f"{_percent(dx_only.flops, full.flops)} of the full backward's FLOPs: freezing a weight saves "
                     "its weight gradient only; the input gradient still flows through every block between the loss "
                     "and the first trained parameter.")  # fmt: skip
        if any(row.name == "adapters" for row in self.rows):
            adapters = self.row("adapters")
            lines.append(f"`adapters` computes the gradients of {_percent(adapters.parameters, full.parameters)} of "
                         f"the parameters for {_percent(adapters.flops, full.flops)} of the FLOPs "
                         f"({_percent(adapters.seconds, full.seconds)} of the time).")  # fmt: skip
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def _gradient_sets(student: nn.Module) -> dict[str, list[str]]:
    """Parameter names per training mode of `AdaptersConfig.train`, as `trainable_patterns` selects them."""
    names = [name for name, _ in student.named_parameters()]
    adapter_names = adapter_parameter_names(student)
    sets = {}
    for mode in ("all", "adapters", "decoder"):
        if mode == "adapters" and not adapter_names:
            continue
        # trainable_patterns reads only `train`; the config's kind is irrelevant to it
        patterns = trainable_patterns(AdaptersConfig.model_construct(train=mode), adapter_names)
        sets[mode] = names if patterns == "all" else [n for n in names if any(matches(n, p) for p in patterns)]
    return sets


def _backward_cost(loss: Tensor, inputs: list[Tensor], device: torch.device, repeats: int) -> tuple[int, float]:
    """FLOPs (of a first, untimed run) and median seconds of `repeats` runs of d loss / d inputs."""
    with flop_counter() as counter:
        torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(seconds)


def backward_split(method: DACS, batch: Batch, *, repeats: int = 3, iteration: int = 0) -> BackwardSplit:
    """Backward cost of the mixed loss per training mode (`all`, `adapters` when the student has
    adapters, `decoder`, `input`; see the module docstring), on a copy of `method`.

    Args:
        batch: one batch as `profile_dacs_steps` takes; its mixed batch uses the generator of `iteration`.
        repeats: timed runs per mode (their median is reported), after one untimed run counting FLOPs.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    work = copy.deepcopy(method).train()
    student = work.student
    device = next(student.parameters()).device
    source_images, source_labels, target_images, target_labels = batch_to_device(batch, device)
    configured = [name for name, param in student.named_parameters() if param.requires_grad]
    sets = _gradient_sets(student)
    student.requires_grad_(True)  # one graph through everything; each backward asks for its own set
    mixed = work.mixed_batch(source_images, source_labels, target_images, target_labels, work.generator(iteration))
    images = mixed.images.detach().requires_grad_(True)  # (B, 3, H, W)
    with flop_counter() as counter:
        logits = student(images).float()  # (B, K, H, W)
        loss = work.settings.mix_weight * weighted_segmentation_cross_entropy(logits, mixed.labels, mixed.weights)
    params = dict(student.named_parameters())
    rows = []
    for name, names in [*sets.items(), ("input", [])]:
        inputs = [params[n] for n in names] if names else [images]
        flops, seconds = _backward_cost(loss, inputs, device, repeats)
        count = sum(params[n].numel() for n in names)
        rows.append(BackwardCost(name, count, flops, seconds, is_configured=bool(names) and names == configured))
    return BackwardSplit(counter.get_total_flops(), rows)
