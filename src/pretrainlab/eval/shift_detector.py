"""Domain-shift detection on a monitored per-step signal, the training policy it drives, and its scoring.

After HAMLET's domain indicator (Colomer et al. 2023, "To Adapt or Not to Adapt? Real-Time
Adaptation for Semantic Segmentation", ICCV, arXiv:2307.15063; `online_src/
domain_indicator_orchestrator.py`): a scalar computed at every online step is averaged over
windows of `window` steps (HAMLET: 75), and a jump of the average beyond a threshold (HAMLET:
±0.23 on its signal) is a domain change, after which the model trains for a budget of steps
and otherwise only infers.

Signals (`ShiftDetectorConfig.signal`, computed by the runner from one target batch):
* `teacher_confidence`: the mean over pixels of the teacher's top softmax probability
  (`mean_confidence`); it drops when the target domain moves away from what the model knows;
* `source_disagreement` (HAMLET's): the mean CE of a frozen source model's logits against the
  adapted model's argmax labels (`source_disagreement`); it rises as the domain moves away from
  the source.

Detection (`ShiftDetector.update`, once per step): with `r` the mean of the last `window` values
and `p` the mean of the `window` values before them, a `DomainChange(step, p, r)` fires at the
first step where |r − p| > threshold (`measure: absolute`) or |r − p| / |p| > threshold
(`measure: relative`). Both windows must lie after the start and after the previous event:
firing clears the history, so no event can follow within 2·window − 1 steps (the refractory
period: a fresh reference window, then a fresh recent window). A step of height Δ > threshold
(absolute) that starts at step b, after at least 2·window constant values, fires at step b + k − 1
with k the fewest new values for which k·Δ / window > threshold: within `window` steps. HAMLET
compares consecutive non-overlapping blocks every `window` steps instead, which delays a detection
by up to another window.

Policy (`should_train`): `always` trains at every step; `after_change` trains in the
`train_steps_after_change` steps after each detected change (the step of a change has already
run when the change is known) and only infers otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from pretrainlab.config.component import Strict

ShiftSignal = Literal["teacher_confidence", "source_disagreement"]
TrainPolicy = Literal["always", "after_change"]


class ShiftDetectorConfig(Strict):
    """Domain-shift detector and the training policy it drives; defaults are HAMLET's (Cityscapes → rain)."""

    signal: ShiftSignal = Field("source_disagreement", description="the per-step scalar that is monitored")
    window: int = Field(75, ge=1, description="steps averaged in each of the two compared windows")
    threshold: float = Field(0.23, gt=0.0, description="jump of the window mean that is a domain change")
    measure: Literal["absolute", "relative"] = Field("absolute", description="jump as |r − p| or |r − p| / |p|")
    policy: TrainPolicy = Field("always", description="after_change: train only after a detected change")
    train_steps_after_change: int = Field(750, ge=1, description="after_change: steps trained after each change")


@dataclass(frozen=True)
class DomainChange:
    """A detected change: at `step`, the window mean went from `signal_before` to `signal_after`."""

    step: int
    signal_before: float
    signal_after: float


class ShiftDetector:
    """Sliding-window jump detector over one scalar per step (see the module docstring)."""

    def __init__(self, config: ShiftDetectorConfig) -> None:
        self.config = config
        self.values: deque[float] = deque(maxlen=2 * config.window)  # since the start or the last event
        self.events: list[DomainChange] = []
        self.last_step: int | None = None

    def jump(self, before: float, after: float) -> float:
        """The change from `before` to `after` in the configured measure (relative: inf from 0 to non-0)."""
        difference = abs(after - before)
        if self.config.measure == "absolute":
            return difference
        if before == 0.0:
            return 0.0 if difference == 0.0 else math.inf
        return difference / abs(before)

    def update(self, step: int, value: float) -> DomainChange | None:
        """Record the signal of `step` (steps strictly increasing); the change it completes, if any."""
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"step {step} does not follow the last step {self.last_step}")
        if not math.isfinite(value):
            raise ValueError(f"signal value at step {step} is not finite: {value}")
        self.last_step = step
        self.values.append(float(value))
        window = self.config.window
        if len(self.values) < 2 * window:
            return None
        values = list(self.values)
        before = math.fsum(values[:window]) / window
        after = math.fsum(values[window:]) / window
        if self.jump(before, after) <= self.config.threshold:
            return None
        change = DomainChange(step, before, after)
        self.events.append(change)
        self.values.clear()
        return change

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue a resumed run (plain JSON-able values)."""
        return {"values": list(self.values), "last_step": self.last_step, "events": [asdict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` written by a detector with the same config."""
        capacity = 2 * self.config.window
        if len(state["values"]) > capacity:
            raise ValueError(f"state holds {len(state['values'])} values, more than 2 · window = {capacity}")
        self.values = deque((float(v) for v in state["values"]), maxlen=capacity)
        self.last_step = state["last_step"]
        self.events = [DomainChange(**event) for event in state["events"]]


def mean_confidence(logits: Tensor) -> Tensor:
    """`teacher_confidence`: mean over the B·H·W pixels of the top softmax probability of logits (B, K, H, W)."""
    if logits.ndim != 4:
        raise ValueError(f"expected logits (B, K, H, W), got {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=1).amax(dim=1).mean()


def source_disagreement(source_logits: Tensor, labels: Tensor) -> Tensor:
    """`source_disagreement`: mean CE of a frozen source model's logits (B, K, H, W) against the adapted
    model's argmax labels (B, H, W) on the same target images (HAMLET's `static` decoder loss)."""
    if source_logits.ndim != 4 or labels.shape != (source_logits.shape[0], *source_logits.shape[2:]):
        raise ValueError(f"expected source logits (B, K, H, W) and labels (B, H, W), got "
                         f"{tuple(source_logits.shape)} and {tuple(labels.shape)}")  # fmt: skip
    return F.cross_entropy(source_logits.float(), labels.long())


def should_train(
    step: int, events: Sequence[DomainChange], policy: TrainPolicy, budget: int, first_step_trains: bool = True
) -> bool:
    """Whether the online run trains at `step`.

    `always`: every step. `after_change`: steps s + 1 … s + `budget` after every change detected at
    step s (a change during a budget restarts it: the union of the budgets, where HAMLET adds up the
    remainders); with `first_step_trains` the run's start counts as a change before step 0, so steps
    0 … budget − 1 train. Events after `step` are ignored.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if budget < 1:
        raise ValueError(f"train_steps_after_change must be >= 1, got {budget}")
    if policy == "always":
        return True
    if policy != "after_change":
        raise ValueError(f"unknown policy {policy!r}; known: always, after_change")
    if first_step_trains and step < budget:
        return True
    return any(event.step < step <= event.step + budget for event in events)


def score_detections(event_steps: Sequence[int], true_boundaries: Sequence[int], window: int) -> dict[str, Any]:
    """Detection delays and false alarms of `event_steps` against the steps where a new domain starts.

    Boundary j (strictly increasing; the run's start is not one) owns the segment
    [b_j, b_{j+1}) (the last: to the end). Its delay is e − b_j for the first event e in its
    segment, None when its segment has no event (missed). An event is a hit when it is the first
    of its segment and at most `window` steps after that segment's boundary; every other event is
    a false alarm: one before the first boundary, a second one in a segment, or a first one more
    than `window` steps late (which also shows as a delay > window).

    Returns:
        {"delays": [int | None per boundary], "missed": int, "mean_delay": float | None (over the
        detected boundaries), "false_alarm_steps": [int], "false_alarms": int}.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    boundaries = list(true_boundaries)
    if any(later <= earlier for earlier, later in itertools.pairwise(boundaries)):
        raise ValueError(f"true_boundaries must be strictly increasing, got {boundaries}")
    events = sorted(event_steps)
    delays: list[int | None] = []
    hits: set[int] = set()  # indices into `events`
    for j, boundary in enumerate(boundaries):
        end = boundaries[j + 1] if j + 1 < len(boundaries) else math.inf
        first = next((i for i, e in enumerate(events) if boundary <= e < end), None)
        delays.append(None if first is None else events[first] - boundary)
        if first is not None and events[first] - boundary <= window:
            hits.add(first)
    detected = [d for d in delays if d is not None]
    false_alarm_steps = [e for i, e in enumerate(events) if i not in hits]
    return {
        "delays": delays,
        "missed": len(delays) - len(detected),
        "mean_delay": sum(detected) / len(detected) if detected else None,
        "false_alarm_steps": false_alarm_steps,
        "false_alarms": len(false_alarm_steps),
    }
