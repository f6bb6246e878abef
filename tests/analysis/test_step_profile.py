"""Step profile (analysis/step_profile.py) on a tiny MiT-B0 + SegFormer segmentor: sections that add up
to the step, shares to 100 %, the CPU peak memory against a known allocation, a frozen backbone's
cheaper backward (counted in FLOPs, not timed), profiled steps that update the weights as the
methods' own steps do, and the backward split behind the adapter puzzle."""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from pretrainlab.analysis.step_profile import (
    EMA_UPDATE,
    MIXED_BACKWARD,
    MIXED_FORWARD,
    MIXING,
    OPTIMIZER_STEP,
    PSEUDO_LABELLING,
    SHIFT_DETECTION,
    SOURCE_BACKWARD,
    SOURCE_FORWARD,
    TARGET_BACKWARD,
    TARGET_FORWARD,
    cpu_peak_memory,
    flop_counter,
    profile_dacs_steps,
    profile_tent_steps,
)
from pretrainlab.analysis.backward_split import BACKWARD_SETS, backward_split
from pretrainlab.engine.freeze import set_trainable
from pretrainlab.engine.optim import OptimConfig, build_optimizer, set_lr_and_weight_decay
from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.eval.shift_detector import ShiftDetectorConfig
from pretrainlab.losses.ewc import EWCAnchor
from pretrainlab.methods.dacs import DACS, DACSSettings
from pretrainlab.methods.tent import TENT, TENTSettings
from pretrainlab.models.adapters import (
    AdaptersConfig,
    adapter_parameter_names,
    inject_adapters,
    trainable_patterns,
)
from pretrainlab.models.backbones.mit import MiTBackbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_segformer import SegFormerHeadConfig

K = 4
SIZE = 32
LR = 1e-3
Batch = tuple[Tensor, Tensor, Tensor, Tensor]
DACS_SECTIONS = [SOURCE_FORWARD, SOURCE_BACKWARD, PSEUDO_LABELLING, MIXING, MIXED_FORWARD, MIXED_BACKWARD,
                 OPTIMIZER_STEP, EMA_UPDATE]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine an OpenMP barrier waiting for a descheduled
    thread makes a step ten times slower. The counted FLOPs and bytes do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _segmentor() -> Segmentor:
    """Built once, seeded, leaving the global RNG as the calling test had it."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    backbone = MiTBackbone("b0")  # drop-path 0.1: the student's forwards draw from the global RNG
    head_config = SegFormerHeadConfig(embed_dim=32, dropout=0.0)
    head = build_seg_head(head_config, backbone.out_channels, backbone.strides, K, decoder_width=backbone.decoder_width)
    torch.set_rng_state(generator_state)
    return Segmentor(backbone, head)


def mit_segmentor() -> Segmentor:
    """A fresh copy of one MiT-B0 + SegFormer head with K classes."""
    return copy.deepcopy(_segmentor())


def tiny_batch(seed: int = 0) -> Batch:
    """Two source images with labels in blocks of 16 × 16 pixels, two target images with labels."""
    g = torch.Generator().manual_seed(seed)
    source_labels = torch.randint(0, K, (2, SIZE // 16, SIZE // 16), generator=g)
    source_labels = source_labels.repeat_interleave(16, 1).repeat_interleave(16, 2)  # (2, SIZE, SIZE)
    return (
        torch.randn(2, 3, SIZE, SIZE, generator=g),
        source_labels,
        torch.randn(2, 3, SIZE, SIZE, generator=g),
        torch.randint(0, K, (2, SIZE, SIZE), generator=g),
    )


def runner_optimizer(method: DACS | TENT, name: str) -> torch.optim.Optimizer:
    """As the online runner builds it: over the trainable parameters, head lr × 10, lr and decay set."""
    multipliers = {"student.head": 10.0} if isinstance(method, DACS) else {}
    config = OptimConfig(name=name, lr=LR, min_lr=LR, warmup_epochs=0.0, weight_decay=0.01, weight_decay_end=0.01,
                         momentum=0.0, clip_grad=None, scale_lr_with_batch=False,
                         lr_multipliers=multipliers)  # fmt: skip
    optimizer = build_optimizer(method, config)
    set_lr_and_weight_decay(optimizer, LR, 0.01)
    return optimizer


def adamw(method: DACS | TENT) -> torch.optim.Optimizer:
    return runner_optimizer(method, "adamw")


def sgd(method: DACS | TENT) -> torch.optim.Optimizer:
    """Plain SGD for comparing updates: an attention key bias has a gradient that is zero but for rounding
    (softmax ignores a shift of all its logits), which Adam's normalisation would turn into lr-sized steps
    that differ with the order the gradients are accumulated in."""
    return runner_optimizer(method, "sgd")


def dacs(train: str = "all", settings: DACSSettings | None = None) -> DACS:
    segmentor = mit_segmentor()
    if train == "decoder":
        set_trainable(segmentor, ["head"])
    return DACS(segmentor, settings, seed=3)


# --- measuring --------------------------------------------------------------------------------------


def test_cpu_peak_memory_matches_a_known_allocation() -> None:
    def allocate() -> tuple[Tensor, Tensor]:
        first = torch.ones(2_000_000)  # 8 MB
        second = torch.ones(1_000_000)  # 4 MB: 12 MB while both live
        del first
        third = torch.ones(500_000)  # 2 MB: 6 MB live, below the peak
        return second, third

    expected = 12_000_000
    assert abs(cpu_peak_memory(allocate) - expected) <= 0.1 * expected
    held = torch.ones(1_000_000)
    assert cpu_peak_memory(lambda: held.resize_(0)) == 0  # freeing only: no increase


def test_a_depthwise_convolution_backward_counts_two_forwards() -> None:
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)  # MiT's Mix-FFN convolution
    images = torch.randn(2, 16, 8, 8, requires_grad=True)
    with flop_counter() as forward:
        output = conv(images)
    with flop_counter() as backward:
        output.sum().backward()
    assert forward.get_total_flops() == 2 * 2 * 16 * 8 * 8 * 9  # 2 FLOPs per multiply-add, 9 taps per pixel
    assert backward.get_total_flops() == 2 * forward.get_total_flops()  # input and weight gradients


# --- the DACS profile -------------------------------------------------------------------------------


def test_dacs_profile_sections_add_up_and_shares_make_100() -> None:
    method = dacs()
    profile = profile_dacs_steps(method, itertools.repeat(tiny_batch()), adamw(method), warmup=1, steps=2)
    assert list(profile.sections) == DACS_SECTIONS and len(profile.steps) == 2
    for step in profile.steps:
        assert list(step.sections) == DACS_SECTIONS
        assert sum(step.sections.values()) == pytest.approx(step.total, rel=0.05)
    assert sum(profile.shares.values()) == pytest.approx(100.0)
    assert all(share > 0 for share in profile.shares.values())
    # full finetuning: the backward computes input and weight gradients, about two forwards
    assert 1.5 < profile.flops[MIXED_BACKWARD] / profile.flops[MIXED_FORWARD] < 2.5
    assert profile.flops[OPTIMIZER_STEP] == profile.flops[EMA_UPDATE] == 0
    student_params = sum(p.numel() for p in method.student.parameters())
    assert profile.trainable_params == profile.total_params == student_params
    student_bytes = 4 * student_params  # fp32
    resident = profile.peak_memory_bytes - profile.step_memory_bytes
    assert 4 * student_bytes <= resident <= 4 * student_bytes + 2**20  # student, teacher, AdamW's 2 moments, batch
    assert profile.step_memory_bytes > 0
    markdown = profile.markdown("DACS step")
    assert all(f"| {name} |" in markdown for name in DACS_SECTIONS) and "| **step** |" in markdown
    saved = json.loads(profile.to_json())
    assert saved["trainable_params"] == student_params and len(saved["steps"]) == 2
    assert saved["peak_memory_mb"] == pytest.approx(profile.peak_memory_bytes / 2**20)
    assert set(profile.summary()) == {"step_time_s", "peak_memory_mb", "trainable_params"}


def test_a_frozen_backbone_makes_the_backward_sections_cheaper() -> None:
    """FLOPs decide (wall time on a loaded machine would not): with the backbone frozen and no
    adapters, no graph is recorded in the backbone and both backward passes stop at the head."""
    profiles = {}
    for train in ("all", "decoder"):
        method = dacs(train)
        profiles[train] = profile_dacs_steps(method, itertools.repeat(tiny_batch()), adamw(method), warmup=0, steps=1)
    full, decoder = profiles["all"], profiles["decoder"]
    for section in (SOURCE_BACKWARD, MIXED_BACKWARD):
        assert 0 < decoder.flops[section] < 0.5 * full.flops[section]
    assert decoder.flops[PSEUDO_LABELLING] == full.flops[PSEUDO_LABELLING]  # the teacher's forward is the same
    assert decoder.trainable_params < full.trainable_params == decoder.total_params
    assert decoder.peak_memory_bytes < full.peak_memory_bytes


def test_profiled_dacs_steps_update_the_weights_as_training_step_does() -> None:
    """Two steps (one measured, the accounting step) against `training_step` + one summed backward +
    the optimizer step + the EMA, with every loss on (source CE, both feature distances, TENT's term,
    EWC) and the shift detector's student forward first."""
    settings = DACSSettings(use_feature_distance=True, use_target_feature_distance=True, fd_thing_ids=[0, 1],
                            fd_min_ratio=0.25, tent_weight=0.5, pseudo_threshold=0.3)  # fmt: skip
    batches = [tiny_batch(0), tiny_batch(1)]
    segmentor = mit_segmentor()
    named = dict(segmentor.named_parameters())
    ewc = EWCAnchor({name: torch.ones_like(p) for name, p in named.items() if "head" in name},
                    {name: p.detach() + 0.1 for name, p in named.items() if "head" in name}, weight=1.0)  # fmt: skip
    detector = ShiftDetectorConfig(signal="source_disagreement", window=2)
    start = DACS(segmentor, settings, seed=3, ewc=ewc, detector=detector)
    profiled, reference = copy.deepcopy(start), copy.deepcopy(start)

    torch.manual_seed(5)  # drop-path draws
    profile = profile_dacs_steps(profiled, iter(batches), sgd(profiled), warmup=0, steps=1)
    assert list(profile.sections) == [SHIFT_DETECTION, *DACS_SECTIONS]

    torch.manual_seed(5)
    optimizer = sgd(reference)
    reference.train()
    for iteration, batch in enumerate(batches):
        step = StepValues(iteration, 0, LR, 0.01)
        outputs = reference.training_step(batch, step)
        assert {"loss_ewc", "loss_source", "loss_fd_source", "loss_fd_target", "loss_entropy", "loss_mix"} <= set(
            outputs
        )
        optimizer.zero_grad(set_to_none=True)
        sum(value for key, value in outputs.items() if key.startswith("loss")).backward()
        optimizer.step()
        reference.after_optimizer_step(step)

    moved = [not torch.equal(a, b) for a, b in zip(start.student.parameters(), profiled.student.parameters())]
    assert sum(moved) > 0.9 * len(moved)  # not a comparison of unmoved weights
    for (name, a), b in zip(profiled.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_the_profile_needs_its_batches() -> None:
    method = dacs()
    with pytest.raises(ValueError, match=r"warmup \+ steps \+ 1 = 3"):
        profile_dacs_steps(method, [tiny_batch()], adamw(method), warmup=1, steps=1)
    with pytest.raises(ValueError, match="steps >= 1"):
        profile_dacs_steps(method, itertools.repeat(tiny_batch()), adamw(method), warmup=0, steps=0)


# --- TENT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_weight", "sections"),
    [(0.0, [TARGET_FORWARD, TARGET_BACKWARD, OPTIMIZER_STEP]),
     (0.5, [SOURCE_FORWARD, SOURCE_BACKWARD, TARGET_FORWARD, TARGET_BACKWARD, OPTIMIZER_STEP])],
)  # fmt: skip
def test_profiled_tent_steps_have_their_sections_and_update_as_training_step(
    source_weight: float, sections: list[str]
) -> None:
    start = TENT(mit_segmentor(), TENTSettings(source_weight=source_weight))
    profiled, reference = copy.deepcopy(start), copy.deepcopy(start)
    batches = [tiny_batch(0), tiny_batch(1)]

    torch.manual_seed(5)
    profile = profile_tent_steps(profiled, iter(batches), sgd(profiled), warmup=0, steps=1)

    torch.manual_seed(5)
    optimizer = sgd(reference)
    reference.train()
    for iteration, batch in enumerate(batches):
        outputs = reference.training_step(batch, StepValues(iteration, 0, LR, 0.01))
        optimizer.zero_grad(set_to_none=True)
        sum(value for key, value in outputs.items() if key.startswith("loss")).backward()
        optimizer.step()

    assert list(profile.sections) == sections
    norm_params = sum(p.numel() for p in profiled.student.parameters() if p.requires_grad)
    assert 0 < profile.trainable_params == norm_params < profile.total_params
    for (name, a), b in zip(profiled.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


# --- where the backward goes ------------------------------------------------------------------------


def test_backward_split_shows_the_input_gradient_still_flows_through_the_adapted_stages() -> None:
    segmentor = mit_segmentor()
    config = AdaptersConfig(kind="adaptformer", train="adapters", stages="half")  # adapters in stages 2 and 3
    names = inject_adapters(segmentor, config)
    set_trainable(segmentor, trainable_patterns(config, names))
    method = DACS(segmentor, seed=3)
    trains_before = [p.requires_grad for p in method.parameters()]

    split = backward_split(method, tiny_batch(), repeats=1)

    rows = {row.name: row for row in split.rows}
    assert list(rows) == list(BACKWARD_SETS)
    assert [row.is_configured for row in split.rows] == [False, True, False, False]
    student = method.student
    head = sum(p.numel() for p in student.head.parameters())
    assert rows["all"].parameters == sum(p.numel() for p in student.parameters())
    assert rows["adapters"].parameters == head + sum(student.get_parameter(n).numel() for n in names)
    assert rows["decoder"].parameters == head and rows["input"].parameters == 0
    assert rows["decoder"].flops < rows["adapters"].flops < rows["all"].flops
    assert rows["input"].flops < rows["all"].flops
    # the puzzle: the backward shrinks far less than the trainable parameters
    assert rows["adapters"].parameters / rows["all"].parameters < 0.5 * rows["adapters"].flops / rows["all"].flops
    assert 1.5 < rows["all"].flops / split.forward_flops < 2.5  # input and weight gradients: two forwards
    assert [p.requires_grad for p in method.parameters()] == trains_before  # measured on a copy
    assert adapter_parameter_names(student) == names
    markdown = split.markdown()
    assert "**adapters** (this run)" in markdown and "`input`" in markdown
    assert json.loads(split.to_json())["rows"][0]["name"] == "all"
