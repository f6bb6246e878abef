"""What one adaptation training step costs: time per section, peak memory, trainable parameters, and
where the backward pass goes (full finetuning vs a frozen backbone with adapters vs decoder only).

`profile_dacs_steps` runs real DACS steps outside Lightning (`methods/dacs.py`), in DAFormer's order
(`mmseg/models/uda/dacs.py`, `forward_train`) with one backward per loss group, the gradients
accumulating, which gives the update of the engine's single backward of the summed losses (up to
float rounding of the accumulation order). Its sections, in step order:

    shift detection    with a `detector`: its signal (a teacher, or source model and student, forward);
                       the profile trains whatever its policy says (it measures training steps; a
                       step the policy skips costs this section alone)
    source forward     the losses on the clean images, DAFormer's `clean_loss`: source CE, the feature
                       distances when on, TENT's entropy term when `tent_weight` > 0, EWC's penalty with
                       `ewc` (the section is absent when none is on)
    source backward    their backward
    pseudo-labelling   the EMA teacher on the clean target images (`DACS.pseudo_labels`)
    mixing             ClassMix and the strong augmentation (`DACS.mix_and_augment`)
    mixed forward      the student on the mixed images and the weighted CE
    mixed backward     its backward
    optimizer step     `optimizer.step()` and `zero_grad(set_to_none=True)`
    EMA update         `DACS.after_optimizer_step` (the teacher's EMA)

`profile_tent_steps` does the same for TENT (`methods/tent.py`): source forward / backward (only with
`source_weight` > 0), target forward (the entropy), target backward, optimizer step.

Measurement. Each section is timed with `time.perf_counter`, after `torch.cuda.synchronize` on CUDA;
a step's total runs from its first section's start to its last section's end (iteration 0 first
resets the DACS teacher, outside the sections, as `DACS.training_step` does). `warmup` steps are run
and dropped, `steps` are measured; the profile reports per-section medians and their shares of
the sum of the medians. One more real step (the *accounting step*, not timed) then counts:

* FLOPs per section, with `torch.utils.flop_counter.FlopCounterMode`: the formula count of
  matmuls, convolutions and attention (elementwise work counts 0), a deterministic measure that
  does not depend on the load of the machine. A convolution's backward counts one forward per
  gradient it computes (input, weight): torch's own formula ignores `groups` for the weight
  gradient, which overcounts a depthwise convolution (MiT's Mix-FFN) by its channel count;
* memory: `peak_memory_bytes` = the bytes resident when the step starts (the unique storages of
  the method's parameters and buffers — student, teacher, FD reference —, the optimizer state and
  the batch) + `step_memory_bytes`, the peak increase over them during the step (activations,
  gradients, temporaries). On CUDA the increase is `torch.cuda.max_memory_allocated` after
  `reset_peak_memory_stats` minus `memory_allocated` at the start. On CPU it is `cpu_peak_memory`:
  the step runs under `torch.profiler.profile(activities=[CPU], profile_memory=True)`, and the
  peak is that of the running sum, in time order, of the profiler's `[memory]` events (+bytes per
  allocation, −bytes per free) — allocations of torch's CPU allocator only (oneDNN's own scratch
  memory is not seen). Both ways, tensors outside the method (another model on the device) are
  not counted.

The batches must number `warmup + steps + 1`; `itertools.repeat(batch)` reuses one. The method and
the optimizer are trained by the profile: give it a deep copy. It runs in the caller's precision
context (wrap it in `torch.autocast` to profile mixed precision).

Where the backward goes, per training mode: `analysis/backward_split.py`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.autograd.profiler_util import MEMORY_EVENT_NAME
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.methods.dacs import DACS, weighted_segmentation_cross_entropy
from pretrainlab.methods.tent import TENT, entropy_loss_term

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # source images (B, 3, H, W), source labels (B, H, W), target both

SOURCE_FORWARD, SOURCE_BACKWARD = "source forward", "source backward"
PSEUDO_LABELLING, MIXING = "pseudo-labelling", "mixing"
MIXED_FORWARD, MIXED_BACKWARD = "mixed forward", "mixed backward"
TARGET_FORWARD, TARGET_BACKWARD = "target forward", "target backward"
OPTIMIZER_STEP, EMA_UPDATE = "optimizer step", "EMA update"
SHIFT_DETECTION = "shift detection"
MIB = 2**20


# --------------------------------------------------------------------------- measuring


def _conv_backward_flop(
    grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any, _stride: Any, _padding: Any,
    _dilation: Any, transposed: bool, _output_padding: Any, _groups: int, output_mask: list[bool], out_shape: Any,
    **kwargs: Any,
) -> int:
    """FLOPs of `aten.convolution_backward`: the forward's (whose weight shape (C_out, C_in / groups, k…)
    accounts for groups) once per gradient computed, input and weight."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` whose convolution backward counts grouped convolutions right."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _SectionClock:
    """Times the named sections of one step and, inside an active `FlopCounterMode`, counts their FLOPs."""

    def __init__(self, device: torch.device, counter: FlopCounterMode | None = None) -> None:
        self.device = device
        self.flop_counter = counter
        self.seconds: dict[str, float] = {}  # in step order
        self.flops: dict[str, int] = {}
        self.start: float | None = None  # the first section's start
        self.end: float | None = None  # the last section's end

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if name in self.seconds:
            raise ValueError(f"section {name!r} timed twice in one step")
        flops_before = self.flop_counter.get_total_flops() if self.flop_counter is not None else 0
        start = self.now()
        yield
        self.end = self.now()
        self.start = start if self.start is None else self.start
        self.seconds[name] = self.end - start
        if self.flop_counter is not None:
            self.flops[name] = self.flop_counter.get_total_flops() - flops_before

    @property
    def total(self) -> float:
        """Seconds from the first section's start to the last section's end."""
        if self.start is None or self.end is None:
            raise ValueError("no section was timed")
        return self.end - self.start


StepFunction = Callable[[Any, Batch, torch.optim.Optimizer, int, _SectionClock], None]


def cpu_peak_memory(run: Callable[[], object]) -> int:
    """Peak bytes allocated by torch's CPU allocator while `run()` runs, above what was allocated before.

    The peak of the running sum, in time order, of the `[memory]` events (+bytes per allocation,
    −bytes per free) of `torch.profiler.profile(activities=[CPU], profile_memory=True)`; 0 when
    `run` only frees.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = [event for event in profiler.profiler.kineto_results.events()
              if event.name() == MEMORY_EVENT_NAME and event.device_type() == DeviceType.CPU]  # fmt: skip
    running = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _resident_bytes(method: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> int:
    """Bytes of the unique storages of `method`'s parameters, gradients and buffers, the optimizer
    state and the batch."""
    tensors = [*method.parameters(), *method.buffers(), *batch]
    tensors += [param.grad for param in method.parameters() if param.grad is not None]
    tensors += [value for state in optimizer.state.values() for value in state.values() if isinstance(value, Tensor)]
    storages = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _step_memory(run: Callable[[], object], device: torch.device) -> int:
    """Peak increase of the allocated bytes on `device` while `run()` runs (see the module docstring)."""
    if device.type == "cpu":
        return cpu_peak_memory(run)
    if device.type != "cuda":
        raise ValueError(f"step memory is measured on cpu and cuda, not {device.type}")
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start


# --------------------------------------------------------------------------- the profile


@dataclass(frozen=True)
class StepTiming:
    """One measured step: seconds per section (in step order) and the step's total."""

    sections: dict[str, float]
    total: float


@dataclass(frozen=True)
class StepProfile:
    """Time per section of the measured steps, FLOPs per section, memory and parameters of one step."""

    method: str
    device: str
    warmup: int
    steps: list[StepTiming]
    flops: dict[str, int]  # per section, of the accounting step
    step_memory_bytes: int
    peak_memory_bytes: int
    trainable_params: int  # of the student
    total_params: int

    @property
    def sections(self) -> dict[str, float]:
        """Median seconds per section over the measured steps, in step order."""
        return {name: statistics.median(step.sections[name] for step in self.steps) for name in self.steps[0].sections}

    @property
    def step_seconds(self) -> float:
        """Median total seconds of a step."""
        return statistics.median(step.total for step in self.steps)

    @property
    def shares(self) -> dict[str, float]:
        """Percent of the summed section medians per section (they add up to 100)."""
        sections = self.sections
        total = sum(sections.values())
        return {name: 100.0 * seconds / total for name, seconds in sections.items()}

    def summary(self) -> dict[str, float | int]:
        """The run summary's entries: median step seconds, peak memory in MiB, trainable parameters."""
        return {"step_time_s": self.step_seconds, "peak_memory_mb": self.peak_memory_bytes / MIB,
                "trainable_params": self.trainable_params}  # fmt: skip

    def markdown(self, title: str | None = None) -> str:
        """A table section | ms | share % | GFLOP with the step's row last, then memory and parameters."""
        lines = [f"# {title}", ""] if title else []
        lines += ["| section | ms | share % | GFLOP |", "|---|---:|---:|---:|"]
        shares = self.shares
        for name, seconds in self.sections.items():
            lines.append(f"| {name} | {1e3 * seconds:.1f} | {shares[name]:.1f} | {self.flops[name] / 1e9:.3f} |")
        lines.append(f"| **step** | **{1e3 * self.step_seconds:.1f}** | **100.0** | "
                     f"**{sum(self.flops.values()) / 1e9:.3f}** |")  # fmt: skip
        resident = self.peak_memory_bytes - self.step_memory_bytes
        share = 100.0 * self.trainable_params / max(self.total_params, 1)
        lines += [
            "",
            (f"{self.method} on {self.device}: medians over {len(self.steps)} steps after {self.warmup} warm-up "
             "steps; GFLOP of one step (matmuls, convolutions, attention)."),
            (f"Peak memory {self.peak_memory_bytes / MIB:.1f} MiB: {resident / MIB:.1f} MiB resident (parameters, "
             f"optimizer state, batch) + {self.step_memory_bytes / MIB:.1f} MiB during the step."),
            f"Trainable parameters {self.trainable_params:,} of {self.total_params:,} ({share:.1f} %).",
        ]  # fmt: skip
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: the medians, shares and summary beside the raw timings."""
        return {**asdict(self), "sections": self.sections, "shares": self.shares, **self.summary()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def batch_to_device(batch: Batch, device: torch.device) -> Batch:
    return tuple(tensor.to(device, non_blocking=True) for tensor in batch)  # type: ignore[return-value]


def _next_batch(batches: Iterator[Batch], device: torch.device, taken: int, needed: int) -> Batch:
    batch = next(batches, None)
    if batch is None:
        raise ValueError(f"the batches ran out after {taken}: the profile needs warmup + steps + 1 = {needed} "
                         "(itertools.repeat(batch) reuses one)")  # fmt: skip
    return batch_to_device(batch, device)


def _profile_steps(
    method: DACS | TENT,
    run_step: StepFunction,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    warmup: int,
    steps: int,
) -> StepProfile:
    """`warmup` + `steps` timed steps and the accounting step of `run_step` (see the module docstring)."""
    if warmup < 0 or steps < 1:
        raise ValueError(f"need warmup >= 0 and steps >= 1, got warmup={warmup}, steps={steps}")
    device = next(method.student.parameters()).device
    method.train()
    optimizer.zero_grad(set_to_none=True)
    batch_iterator = iter(batches)
    needed = warmup + steps + 1
    timings = []
    for iteration in range(warmup + steps):
        clock = _SectionClock(device)
        run_step(method, _next_batch(batch_iterator, device, iteration, needed), optimizer, iteration, clock)
        if iteration >= warmup:
            timings.append(StepTiming(clock.seconds, clock.total))
    iteration = warmup + steps  # the accounting step
    batch = _next_batch(batch_iterator, device, iteration, needed)
    resident = _resident_bytes(method, optimizer, batch)
    with flop_counter() as counter:
        clock = _SectionClock(device, counter)
        step_memory = _step_memory(lambda: run_step(method, batch, optimizer, iteration, clock), device)
    params = list(method.student.parameters())
    return StepProfile(
        method=type(method).__name__, device=str(device), warmup=warmup, steps=timings, flops=clock.flops,
        step_memory_bytes=step_memory, peak_memory_bytes=resident + step_memory,
        trainable_params=sum(p.numel() for p in params if p.requires_grad), total_params=sum(p.numel() for p in params),
    )  # fmt: skip


def _loss_sum(outputs: dict[str, Tensor]) -> Tensor | None:
    """The sum of the `loss*` entries, None when there is none."""
    losses = [value for key, value in outputs.items() if key.startswith("loss")]
    return sum(losses) if losses else None


def _backward(loss: Tensor | None) -> None:
    """Backward of `loss` unless nothing in it trains (e.g. FD alone on a frozen backbone)."""
    if loss is not None and loss.requires_grad:
        loss.backward()


# --------------------------------------------------------------------------- DACS


def _has_clean_losses(method: DACS) -> bool:
    settings = method.settings
    return (method.ewc is not None or settings.source_weight > 0 or settings.use_feature_distance
            or settings.use_target_feature_distance or settings.tent_weight > 0)  # fmt: skip


def _step_values(optimizer: torch.optim.Optimizer, iteration: int) -> StepValues:
    group = optimizer.param_groups[0]
    return StepValues(iteration, 0, group["lr"], group.get("weight_decay", 0.0))


def _dacs_step(
    method: DACS, batch: Batch, optimizer: torch.optim.Optimizer, iteration: int, clock: _SectionClock
) -> None:
    """One DACS training step in DAFormer's order, each section timed by `clock`."""
    source_images, source_labels, target_images, target_labels = batch
    if iteration == 0:
        method.reset_teacher()  # as `DACS.training_step`
    if method.detector is not None:
        with clock.section(SHIFT_DETECTION):
            method.detector_allows_training(target_images, iteration, {})
    if _has_clean_losses(method):
        with clock.section(SOURCE_FORWARD):
            clean_loss = _loss_sum(method.clean_losses(source_images, source_labels, target_images))
        with clock.section(SOURCE_BACKWARD):
            _backward(clean_loss)
    with clock.section(PSEUDO_LABELLING):
        target = method.pseudo_labels(target_images, target_labels)
    with clock.section(MIXING):
        mixed = method.mix_and_augment(target, source_images, source_labels, method.generator(iteration))
    with clock.section(MIXED_FORWARD):
        logits = method.student(mixed.images).float()  # (B, K, H, W)
        mix_loss = method.settings.mix_weight * weighted_segmentation_cross_entropy(logits, mixed.labels, mixed.weights)
    with clock.section(MIXED_BACKWARD):
        _backward(mix_loss)
    with clock.section(OPTIMIZER_STEP):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with clock.section(EMA_UPDATE):
        method.after_optimizer_step(_step_values(optimizer, iteration))


def profile_dacs_steps(
    method: DACS, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, *, warmup: int = 2, steps: int = 5
) -> StepProfile:
    """Profile of DACS steps from iteration 0 (see the module docstring); trains `method`: pass a copy.

    Args:
        batches: at least warmup + steps + 1 batches (source images (B, 3, H, W), source labels
            (B, H, W), target images, target labels), moved to the student's device.
        optimizer: over the student's trainable parameters, lr and weight decay already set.
    """
    return _profile_steps(method, _dacs_step, batches, optimizer, warmup, steps)


# --------------------------------------------------------------------------- TENT


def _tent_step(
    method: TENT, batch: Batch, optimizer: torch.optim.Optimizer, iteration: int, clock: _SectionClock
) -> None:
    """One TENT training step (`TENT.training_step`'s losses), each section timed by `clock`."""
    source_images, source_labels, target_images, _ = batch
    settings = method.settings
    if settings.source_weight > 0:
        with clock.section(SOURCE_FORWARD):
            maps = method.student.backbone_maps(source_images)
            logits = method.student.decode(maps, tuple(source_labels.shape[-2:])).float()  # (B, K, H, W)
            source_loss = settings.source_weight * segmentation_cross_entropy(logits, source_labels,
                                                                              avg_non_ignore=False)  # fmt: skip
        with clock.section(SOURCE_BACKWARD):
            _backward(source_loss)
    with clock.section(TARGET_FORWARD):
        target_logits = method.student(target_images).float()  # (B, K, H, W)
        entropy_loss = entropy_loss_term(target_logits, settings.entropy_weight)["loss_entropy"]
    with clock.section(TARGET_BACKWARD):
        _backward(entropy_loss)
    with clock.section(OPTIMIZER_STEP):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def profile_tent_steps(
    method: TENT, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, *, warmup: int = 2, steps: int = 5
) -> StepProfile:
    """Profile of TENT steps (see the module docstring); trains `method`: pass a copy. Arguments as
    `profile_dacs_steps`'s."""
    return _profile_steps(method, _tent_step, batches, optimizer, warmup, steps)
