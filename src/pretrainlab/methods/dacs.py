"""DACS: domain adaptation via cross-domain mixed sampling (Tranheden et al. 2021, arXiv:2007.08702),
following DAFormer's implementation (Hoyer et al. 2022, arXiv:2111.14887, `mmseg/models/uda/dacs.py`).

One step, on a batch (source images, source labels, target images, target labels):
1. source CE: the student on the source images, ignore index 255, mean over all pixels (MMSeg);
2. optional feature distance (FD): L2 distance of the student's last-stage source features to
   those of a frozen copy of the starting encoder, on cells whose dominant class (≥ 75 % of the
   cell) is a "thing" class; optionally also on the clean target images, on every cell;
3. pseudo labels: argmax of the EMA teacher's softmax on the un-augmented target image; their
   weight is the fraction of confident pixels (≥ 0.968) over the whole batch, set to 0 on the
   top / bottom border rows;
4. ClassMix (source i onto target i) of images, labels and weights (pasted pixels weigh 1),
   strong augmentation of the mixed images (`dacs_mix.py`), and the pixel-weighted CE of the
   student on them, mean over all pixels.
After the optimizer step the teacher's *parameters* move by EMA with DAFormer's warm start
α_t = min(1 − 1/(t + 1), α); its buffers are not averaged (its BatchNorms keep their own running
statistics). The teacher runs with BatchNorm in train mode (batch statistics), dropout and
drop-path off: DAFormer's EMA model is a child of the UDA module, so in train mode, and only its
dropout / drop-path modules are switched off before the pseudo-label forward (dacs.py l. 264-268).

Option `tent_weight` > 0 (`tent_for_dacs` in HAMLET's notes) adds TENT's term: that weight × the mean
entropy of the student's softmax on the clean target images (`methods/tent.py`), one more student forward.

Against forgetting (W2, issue 12): `ewc` adds `loss_ewc`, EWC's pull towards the source model
(`losses/ewc.py`); `detector` feeds a per-step signal (the teacher's mean confidence on the target, or
the frozen source model's disagreement with the student) to a domain-shift detector
(`eval/shift_detector.py`) before anything else, logs it, and under the `after_change` policy returns
no loss outside the training budget after a detected change: the step is then inference only.

Variants: `target_only` trains on the (strongly augmented) target image with its pseudo labels
and never reads a source label for that loss; `gt_mix` uses the target ground truth in place of
pseudo labels, weight 1 everywhere (an oracle). The model evaluated is the student, as in
DAFormer (`UDADecorator.simple_test` calls `get_model()`).

All randomness of a step (class choice, augmentation) comes from a CPU `torch.Generator` seeded
from (seed, iteration, rank), so a resumed run repeats it.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from timm.layers import DropPath
from torch import Tensor, nn

from pretrainlab.config.component import Strict
from pretrainlab.data.transforms.seg_normalize import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from pretrainlab.distributed import all_reduce_mean
from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.shift_detector import (
    ShiftDetector,
    ShiftDetectorConfig,
    mean_confidence,
    should_train,
    source_disagreement,
)
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.losses.ewc import EWCAnchor
from pretrainlab.methods.base import Method
from pretrainlab.methods.tent import entropy_loss_term
from pretrainlab.methods.dacs_mix import IGNORE_INDEX, classmix_masks, mix, strong_transform
from pretrainlab.models.backbones.base import Backbone

log = logging.getLogger(__name__)

CITYSCAPES_THING_IDS = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)  # traffic light/sign, person, rider, vehicles


def ema_momentum(iteration: int, alpha: float) -> float:
    """DAFormer's warm-started EMA momentum min(1 − 1/(iteration + 1), alpha): 0 at 0, 0.5 at 1, 0.9 at 9."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return min(1.0 - 1.0 / (iteration + 1), alpha)


@torch.no_grad()
def ema_update_parameters_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student, for parameters only (buffers untouched)."""
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError(f"teacher has {len(teacher_params)} parameters, student {len(student_params)}")
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)


def confident_fraction(probs: Tensor, threshold: float) -> Tensor:
    """Scalar fraction of the B·H·W pixels of `probs` (B, K, H, W) whose top probability is ≥ `threshold`."""
    return (probs.amax(dim=1) >= threshold).float().mean()


def pseudo_label_weight(probs: Tensor, threshold: float, ignore_top: int, ignore_bottom: int) -> tuple[Tensor, Tensor]:
    """Pseudo labels and their per-pixel weight, as DAFormer (`dacs.py` l. 272-286).

    The weight is one number for the whole batch: the fraction of all B·H·W pixels whose
    top probability is ≥ `threshold` (border rows included in that count); it is then set to 0
    on the first `ignore_top` and the last `ignore_bottom` rows of every image.

    Args:
        probs: (B, K, H, W) class probabilities.

    Returns:
        pseudo labels (B, H, W) int64 and weights (B, H, W) float32.
    """
    if probs.ndim != 4:
        raise ValueError(f"expected probabilities (B, K, H, W), got {tuple(probs.shape)}")
    height = probs.shape[2]
    if ignore_top < 0 or ignore_bottom < 0 or ignore_top + ignore_bottom > height:
        raise ValueError(
            f"ignored rows top={ignore_top}, bottom={ignore_bottom} do not fit an image of height {height}"
        )
    confidence, pseudo_label = probs.max(dim=1)  # (B, H, W) each
    weight = confident_fraction(probs, threshold).expand(confidence.shape).clone()
    weight[:, :ignore_top] = 0.0
    weight[:, height - ignore_bottom :] = 0.0
    return pseudo_label, weight


def weighted_segmentation_cross_entropy(
    logits: Tensor, labels: Tensor, weights: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Σ weight · CE over the pixels, divided by all B·H·W pixels (MMSeg's `seg_weight` reduction).

    Args:
        logits: (B, K, H, W); labels: (B, H, W) in [0, K) or `ignore_index`; weights: (B, H, W).
    """
    if logits.ndim != 4 or labels.shape != weights.shape or (logits.shape[0], *logits.shape[2:]) != labels.shape:
        raise ValueError(f"expected logits (B, K, H, W) with labels and weights (B, H, W), got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(weights.shape)}")  # fmt: skip
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # (B, H, W)
    return (per_pixel * weights).sum() / max(labels.numel(), 1)


def thing_cell_mask(
    labels: Tensor, feature_size: tuple[int, int], thing_ids: Sequence[int], min_ratio: float, num_classes: int
) -> Tensor:
    """Feature cells whose dominant label is a thing class covering ≥ `min_ratio` of the cell.

    DAFormer's `downscale_label_ratio` (average-pooled one-hot labels, the ignore index as an
    extra class) followed by the class filter (`calc_feat_dist`). Cells are the adaptive-pooling
    bins of `feature_size`; when the label size is a multiple of it, this is DAFormer's pooling.

    Args:
        labels: (B, H, W) integer labels in [0, num_classes) or 255.
        feature_size: (h, w) of the feature map.

    Returns:
        (B, h, w) bool.
    """
    if labels.ndim != 3 or labels.is_floating_point():
        raise ValueError(f"expected integer labels (B, H, W), got {labels.dtype} {tuple(labels.shape)}")
    classes = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, num_classes), labels)
    one_hot = F.one_hot(classes, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, K + 1, H, W)
    ratio, dominant = F.adaptive_avg_pool2d(one_hot, feature_size).max(dim=1)  # (B, h, w) each
    is_thing = torch.isin(dominant, torch.as_tensor(list(thing_ids), device=labels.device, dtype=dominant.dtype))
    return is_thing & (ratio >= min_ratio)


def feature_distance(features: Tensor, reference: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over cells (all, or those in `mask`) of the L2 distance between feature vectors.

    Args:
        features, reference: (B, D, h, w). mask: (B, h, w) bool or None.

    Returns:
        Scalar; 0 (connected to `features`, zero gradient) when the mask selects no cell,
        where DAFormer's mean of an empty tensor gives NaN.
    """
    if features.shape != reference.shape or features.ndim != 4:
        raise ValueError(
            f"features {tuple(features.shape)} and reference {tuple(reference.shape)} must be equal (B, D, h, w)"
        )
    distances = torch.linalg.vector_norm(features.float() - reference.float(), dim=1)  # (B, h, w)
    if mask is not None:
        distances = distances[mask]
    if distances.numel() == 0:
        return features.sum() * 0.0
    return distances.mean()


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """A 32-bit seed for the step's generator, a function of (seed, iteration, rank) only."""
    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])


def scaled_rows(rows: int, height: int, reference_height: int) -> int:
    """`rows` given at `reference_height`, rounded to the nearest row at `height`."""
    return math.floor(rows * height / reference_height + 0.5)


def _rank() -> int:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if distributed else 0


class DACSSettings(Strict):
    """DACS options; defaults are DAFormer's GTA→Cityscapes ones (without FD, which is opt-in)."""

    alpha: float = Field(0.999, ge=0.0, lt=1.0, description="teacher EMA momentum after the warm start")
    pseudo_threshold: float = Field(0.968, gt=0.0, le=1.0, description="confidence counted in the pseudo weight")
    pseudo_weight_ignore_top: int = Field(15, ge=0, description="top rows of weight 0, at `ignore_rows_height`")
    pseudo_weight_ignore_bottom: int = Field(120, ge=0, description="bottom rows of weight 0, at `ignore_rows_height`")
    ignore_rows_height: int = Field(512, ge=1, description="image height the ignored rows are given for")
    source_weight: float = Field(1.0, ge=0.0, description="weight of the source CE (0: no source CE)")
    mix_weight: float = Field(1.0, gt=0.0, description="weight of the mixed (or target-only) CE")
    color_jitter_strength: float = Field(0.2, ge=0.0, le=0.5, description="brightness, contrast, saturation, hue")
    color_jitter_probability: float = Field(0.8, ge=0.0, le=1.0, description="chance a batch is jittered")
    blur_probability: float = Field(0.5, ge=0.0, le=1.0, description="chance a batch is blurred (0: no blur)")
    blur_sigma: tuple[float, float] = Field((0.15, 1.15), description="range of the blur's σ")
    use_feature_distance: bool = Field(False, description="FD on source thing-class cells to the starting encoder")
    use_target_feature_distance: bool = Field(False, description="FD on the clean target images, every cell")
    fd_lambda: float = Field(0.005, gt=0.0, description="weight of each feature distance")
    fd_thing_ids: list[int] | None = Field(
        default_factory=lambda: list(CITYSCAPES_THING_IDS), description="source FD classes; null: every cell"
    )
    fd_min_ratio: float = Field(0.75, gt=0.0, le=1.0, description="share of a cell its dominant class must cover")
    target_only: bool = Field(False, description="train on the target with pseudo labels, no mixing")
    gt_mix: bool = Field(False, description="target ground truth instead of pseudo labels (weight 1)")
    tent_weight: float = Field(0.0, ge=0.0, description="TENT's entropy of the student on the clean target images "
                               "(`tent_for_dacs`); 0 = off")  # fmt: skip

    @model_validator(mode="after")
    def _check(self) -> DACSSettings:
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        if self.pseudo_weight_ignore_top + self.pseudo_weight_ignore_bottom >= self.ignore_rows_height:
            raise ValueError(f"pseudo_weight_ignore_top + pseudo_weight_ignore_bottom must be below "
                             f"ignore_rows_height={self.ignore_rows_height}")  # fmt: skip
        return self


@dataclass
class MixedBatch:
    """What the student trains on in the mixed loss (`DACS.mix_and_augment`), or the clean target
    batch with its labels before mixing (`DACS.pseudo_labels`)."""

    images: Tensor  # (B, 3, H, W) normalised; mixed and strongly augmented after `mix_and_augment`
    labels: Tensor  # (B, H, W) int64
    weights: Tensor  # (B, H, W) float32
    pseudo_weight: Tensor  # scalar: confident fraction (1 with gt_mix)
    pseudo_labels: Tensor | None  # (B, H, W) teacher labels on the clean target (None with gt_mix)


class DACS(Method):
    """Student `Segmentor` trained by DACS; the teacher (and the FD reference encoder) are copies of it.

    Parameter names: `student.*` trains; `teacher.*` and `reference_backbone.*` do not.
    """

    def __init__(
        self,
        segmentor: Segmentor,
        settings: DACSSettings | None = None,
        *,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN_RGB,
        std: Sequence[float] = IMAGENET_STD_RGB,
        ewc: EWCAnchor | None = None,
        detector: ShiftDetectorConfig | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or DACSSettings()
        self.seed, self.mean, self.std = seed, tuple(mean), tuple(std)
        num_classes = segmentor.head.num_classes
        bad_ids = [i for i in self.settings.fd_thing_ids or [] if not 0 <= i < num_classes]
        if bad_ids and self.settings.use_feature_distance:
            raise ValueError(f"fd_thing_ids {bad_ids} are not classes of a {num_classes}-class head")
        self.student = segmentor
        self.teacher = copy.deepcopy(segmentor)
        self.teacher.requires_grad_(False)
        uses_reference = self.settings.use_feature_distance or self.settings.use_target_feature_distance
        self.reference_backbone = copy.deepcopy(segmentor.backbone) if uses_reference else None
        if self.reference_backbone is not None:
            self.reference_backbone.requires_grad_(False)
        self.ewc = ewc
        self.detector = ShiftDetector(detector) if detector is not None else None
        self.last_detector_signal: float | None = None  # read by the runner's per-step log
        self.last_step_trains = True
        uses_source_model = detector is not None and detector.signal == "source_disagreement"
        self.source_model = copy.deepcopy(segmentor).requires_grad_(False).eval() if uses_source_model else None

    def train(self, mode: bool = True) -> DACS:
        """Teacher: train mode (BatchNorm batch statistics) with dropout and drop-path off; FD reference: eval."""
        super().train(mode)
        nn.Module.train(self.teacher, mode)  # not `Segmentor.train`, which puts a frozen backbone in eval mode
        for module in self.teacher.modules():
            if isinstance(module, (nn.modules.dropout._DropoutNd, DropPath)):
                module.train(False)
        if self.reference_backbone is not None:
            self.reference_backbone.eval()
        if self.source_model is not None:
            self.source_model.eval()
        return self

    def segmentor(self) -> Segmentor:
        """The model to evaluate: the student (DAFormer evaluates the student, not the EMA teacher)."""
        return self.student

    def eval_backbone(self) -> Backbone:
        return self.student.backbone

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Teacher (parameters and buffers) and FD reference := the student now (DAFormer's `_init_ema_weights`)."""
        self.teacher.load_state_dict(self.student.state_dict())
        if self.reference_backbone is not None:
            self.reference_backbone.load_state_dict(self.student.backbone.state_dict())

    def update_teacher(self, momentum: float) -> None:
        ema_update_parameters_(self.teacher, self.student, momentum)

    def after_optimizer_step(self, step: StepValues) -> None:
        """EMA with α(t) for t = step.iteration + 1 optimizer steps taken: DAFormer updates at the start
        of its iteration t ≥ 1 with `_update_ema(t)`, after t steps; this is the same update, done earlier."""
        self.update_teacher(ema_momentum(step.iteration + 1, self.settings.alpha))

    def generator(self, iteration: int) -> torch.Generator:
        """The step's CPU generator, seeded from (seed, iteration, rank)."""
        return torch.Generator().manual_seed(step_seed(self.seed, iteration, _rank()))

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], step: StepValues) -> dict[str, Tensor]:
        source_images, source_labels, target_images, target_labels = batch
        if step.iteration == 0:
            self.reset_teacher()  # weights loaded into the student after construction reach teacher and reference
        settings = self.settings
        outputs: dict[str, Tensor] = {}
        if self.detector is not None and not self.detector_allows_training(target_images, step.iteration, outputs):
            return outputs  # inference only: no loss, so the engine neither updates nor moves the teacher
        outputs.update(self.clean_losses(source_images, source_labels, target_images))
        mixed = self.mixed_batch(
            source_images, source_labels, target_images, target_labels, self.generator(step.iteration)
        )
        logits = self.student(mixed.images).float()  # (B, K, H, W)
        outputs["loss_mix"] = settings.mix_weight * weighted_segmentation_cross_entropy(
            logits, mixed.labels, mixed.weights
        )
        outputs["pseudo_weight"] = mixed.pseudo_weight
        valid = target_labels != IGNORE_INDEX
        if mixed.pseudo_labels is not None and bool(valid.any()):
            outputs["target_accuracy"] = (mixed.pseudo_labels == target_labels)[valid].float().mean()
        return outputs

    def clean_losses(self, source_images: Tensor, source_labels: Tensor, target_images: Tensor) -> dict[str, Tensor]:
        """Every loss of the step but the mixed one (DAFormer's `clean_loss` group), each when on: EWC's penalty,
        source CE and source FD (`source_losses`), the target FD and TENT's entropy term."""
        settings = self.settings
        outputs: dict[str, Tensor] = {}
        if self.ewc is not None:
            outputs["loss_ewc"] = self.ewc.penalty(self.student)
        if settings.source_weight > 0 or settings.use_feature_distance:
            outputs.update(self.source_losses(source_images, source_labels))
        if settings.use_target_feature_distance:
            features = self.student.backbone_maps(target_images)[-1]  # (B, D, h, w)
            with torch.no_grad():
                reference = self.reference_backbone(target_images).maps[-1]
            outputs["loss_fd_target"] = settings.fd_lambda * feature_distance(features, reference)
        if settings.tent_weight > 0:
            outputs.update(entropy_loss_term(self.student(target_images).float(), settings.tent_weight))
        return outputs

    @torch.no_grad()
    def detector_allows_training(self, target_images: Tensor, iteration: int, outputs: dict[str, Tensor]) -> bool:
        """Feed this step's signal (averaged over processes) to the domain-shift detector, log it as
        `detector_signal` (and `domain_change` = 1 when it fires); True when the detector's policy trains now."""
        config = self.detector.config
        if config.signal == "teacher_confidence":
            signal = mean_confidence(self.teacher(target_images))
        else:
            adapted_labels = self.student(target_images).argmax(dim=1)  # (B, H, W)
            signal = source_disagreement(self.source_model(target_images), adapted_labels)
        signal = all_reduce_mean(signal.float())
        outputs["detector_signal"] = signal
        self.last_detector_signal = float(signal)
        if self.detector.update(iteration, float(signal)) is not None:
            outputs["domain_change"] = torch.ones((), device=signal.device)
        self.last_step_trains = should_train(iteration, self.detector.events, config.policy,
                                             config.train_steps_after_change)  # fmt: skip
        return self.last_step_trains

    def get_extra_state(self) -> dict:
        """The detector's window and events travel with the checkpoint, so a resumed run detects the same changes."""
        return {"detector": self.detector.state_dict() if self.detector is not None else None}

    def set_extra_state(self, state: dict) -> None:
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])

    def source_losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Weighted source CE and, when on, the thing-class feature distance on the same forward."""
        settings = self.settings
        maps = self.student.backbone_maps(images)
        losses = {}
        if settings.source_weight > 0:
            logits = self.student.decode(maps, tuple(labels.shape[-2:])).float()  # (B, K, H, W)
            losses["loss_source"] = settings.source_weight * segmentation_cross_entropy(
                logits, labels, avg_non_ignore=False
            )
        if settings.use_feature_distance:
            features = maps[-1]  # (B, D, h, w): the last stage, as DAFormer (`lay = -1`)
            with torch.no_grad():
                reference = self.reference_backbone(images).maps[-1]
            mask = None
            if settings.fd_thing_ids is not None:
                mask = thing_cell_mask(labels, tuple(features.shape[-2:]), settings.fd_thing_ids, settings.fd_min_ratio,
                                       self.student.head.num_classes)  # fmt: skip
            losses["loss_fd_source"] = settings.fd_lambda * feature_distance(features, reference, mask)
        return losses

    def mixed_batch(
        self,
        source_images: Tensor,
        source_labels: Tensor,
        target_images: Tensor,
        target_labels: Tensor,
        generator: torch.Generator,
    ) -> MixedBatch:
        """Targets of the mixed loss: `pseudo_labels` then `mix_and_augment`. Generator draws, in order:
        the ClassMix choice (unless `target_only`), then `strong_transform`'s."""
        target = self.pseudo_labels(target_images, target_labels)
        return self.mix_and_augment(target, source_images, source_labels, generator)

    @torch.no_grad()
    def pseudo_labels(self, target_images: Tensor, target_labels: Tensor) -> MixedBatch:
        """The clean target batch with its training labels, before mixing and augmentation: the EMA
        teacher's pseudo labels and weights (one teacher forward), or with `gt_mix` the ground truth
        with weight 1 (no teacher forward). Draws nothing from a generator.

        Args:
            target_images: (B, 3, H, W) normalised; target_labels: (B, H, W), read only with `gt_mix`.
        """
        settings = self.settings
        height = target_images.shape[-2]
        if settings.gt_mix:
            weights = torch.ones(target_labels.shape, device=target_labels.device)
            pseudo_weight = torch.ones((), device=target_labels.device)
            return MixedBatch(target_images, target_labels, weights, pseudo_weight, None)
        probs = torch.softmax(self.teacher(target_images).float(), dim=1)  # (B, K, H, W)
        top = scaled_rows(settings.pseudo_weight_ignore_top, height, settings.ignore_rows_height)
        bottom = scaled_rows(settings.pseudo_weight_ignore_bottom, height, settings.ignore_rows_height)
        pseudo_labels, weights = pseudo_label_weight(probs, settings.pseudo_threshold, top, bottom)
        pseudo_weight = confident_fraction(probs, settings.pseudo_threshold)
        return MixedBatch(target_images, pseudo_labels, weights, pseudo_weight, pseudo_labels)

    @torch.no_grad()
    def mix_and_augment(
        self, target: MixedBatch, source_images: Tensor, source_labels: Tensor, generator: torch.Generator
    ) -> MixedBatch:
        """ClassMix of source i onto `target` i (images, labels; pasted pixels weigh 1), skipped with
        `target_only`, then the strong augmentation of the images. Generator draws, in order: the
        ClassMix choice (unless `target_only`), then `strong_transform`'s."""
        settings = self.settings
        images, labels, weights = target.images, target.labels, target.weights
        if not settings.target_only:
            mask = classmix_masks(source_labels, generator)  # (B, 1, H, W)
            images = mix(mask, source_images, images)
            labels = mix(mask, source_labels, labels)
            weights = mix(mask, torch.ones_like(weights), weights)
        images = strong_transform(
            images, self.mean, self.std, generator, jitter_strength=settings.color_jitter_strength,
            jitter_probability=settings.color_jitter_probability, blur_probability=settings.blur_probability,
            blur_sigma=settings.blur_sigma,
        )  # fmt: skip
        return MixedBatch(images, labels, weights, target.pseudo_weight, target.pseudo_labels)


def build_dacs(
    segmentor: Segmentor,
    settings: DACSSettings,
    *,
    seed: int,
    mean: Sequence[float] = IMAGENET_MEAN_RGB,
    std: Sequence[float] = IMAGENET_STD_RGB,
    ewc: EWCAnchor | None = None,
    detector: ShiftDetectorConfig | None = None,
) -> DACS:
    """DACS on `segmentor` (its current weights start student, teacher and FD reference)."""
    method = DACS(segmentor, settings, seed=seed, mean=mean, std=std, ewc=ewc, detector=detector)
    log.info("DACS: alpha %.4g, pseudo threshold %.3g, target_only %s, gt_mix %s, FD source %s / target %s",
             settings.alpha, settings.pseudo_threshold, settings.target_only, settings.gt_mix,
             settings.use_feature_distance, settings.use_target_feature_distance)  # fmt: skip
    return method
