"""TENT: fully test-time adaptation by entropy minimisation (Wang et al. 2021, ICLR,
arXiv:2006.10726), for a `Segmentor`, as the official `tent.py` (DequanWang/tent) and
HAMLET's segmentation variant (Colomer et al. 2023, "To Adapt or Not to Adapt? Real-Time
Adaptation for Semantic Segmentation", ICCV; `mmseg/models/uda/tent.py`).

Configuration (`configure_tent`, applied once, in place, when the method is built):
* every BatchNorm normalises with the statistics of the batch it sees, in train and in eval
  mode, and keeps none: `track_running_stats = False`, `running_mean = running_var = None`
  (official `configure_model`; the source statistics are dropped, so the segmentor's state
  dict no longer holds them — load source weights *before* configuring);
* only the affine parameters (weight, bias) of the normalisation layers train: BatchNorm
  (Tent's choice), LayerNorm (HAMLET, after CoTTA, for transformers such as MiT, whose only
  BatchNorm is the SegFormer decoder's `linear_fuse.bn`) and GroupNorm. Their names come from
  `tent_trainable_patterns`, and `engine/freeze.py`'s `set_trainable` applies them, so what
  trains is still decided in one place.

One step, on the batch DACS takes (source images, source labels, target images, target labels):
1. with `source_weight > 0` (HAMLET's TENT replays labelled source images): the student's CE on
   the source images, ignore index 255, mean over all pixels (MMSeg), × `source_weight`;
2. `loss_entropy`: `entropy_weight` × the mean per-pixel entropy of the student's softmax on the
   target images (`losses/entropy.py`). The source and target images go through the student in
   separate forwards, so each BatchNorm normalises each domain with its own statistics.
The target labels are never part of a loss: they only give the logged `target_accuracy`, the
pixel accuracy of the student's argmax on the valid (≠ 255) pixels. The student runs in the
mode the engine sets (train: dropout and drop-path on, as the official Tent's `model.train()`).
The model evaluated is the adapted student, whose BatchNorms use the statistics of the
evaluation batch.

`entropy_loss_term` is the entropy term alone, for another method (DACS) to add to its step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import Field
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from pretrainlab.config.component import Strict
from pretrainlab.engine.freeze import TrainableSet, set_trainable
from pretrainlab.engine.optim import Beta
from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.losses.entropy import softmax_entropy
from pretrainlab.methods.base import Method
from pretrainlab.methods.dacs_mix import IGNORE_INDEX
from pretrainlab.models.backbones.base import Backbone

log = logging.getLogger(__name__)

NORM_TYPES = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)  # timm's LayerNorm2d / GroupNorm1 are subclasses


class TENTSettings(Strict):
    """TENT options; `lr` and `betas` are for the Adam(W) optimizer the runner builds."""

    entropy_weight: float = Field(1.0, gt=0.0, description="weight of the target entropy (also DACS's TENT term)")
    source_weight: float = Field(0.0, ge=0.0, description="weight of the source-replay CE (0: pure TENT)")
    lr: float = Field(6e-5 / 8, gt=0.0, description="lr of the norm parameters")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="Adam betas")


def tent_trainable_patterns(model: nn.Module) -> list[str]:
    """Names (relative to `model`) of the affine weight and bias of every BatchNorm, LayerNorm and
    GroupNorm in `model`: the `train` patterns of `set_trainable` for TENT."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            prefix = f"{module_name}." if module_name else ""
            names.extend(prefix + name for name, _ in module.named_parameters(recurse=False))
    if not names:
        raise ValueError(f"{type(model).__name__} has no normalisation layer with affine parameters: "
                         "TENT would train nothing")  # fmt: skip
    return names


def use_batch_statistics_(model: nn.Module) -> None:
    """Every BatchNorm of `model` normalises with its input batch's statistics in train and eval
    mode and keeps no running statistics (they are deleted, not only ignored)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None


def configure_tent(segmentor: Segmentor, freeze: Sequence[str] = ()) -> TrainableSet:
    """BatchNorms on batch statistics, and only the norm affine parameters training (minus `freeze`
    patterns, as `set_trainable`'s); in place. Returns the trainable / frozen split."""
    use_batch_statistics_(segmentor)
    return set_trainable(segmentor, tent_trainable_patterns(segmentor), freeze)


def entropy_loss_term(target_logits: Tensor, weight: float) -> dict[str, Tensor]:
    """TENT's term for a step's outputs: `loss_entropy` = weight × mean softmax entropy, and the
    unweighted entropy as `target_entropy` (logged only).

    Args:
        target_logits: (B, K, H, W) logits on target images.
    """
    if weight <= 0:
        raise ValueError(f"entropy weight must be > 0, got {weight}")
    entropy = softmax_entropy(target_logits)
    return {"loss_entropy": weight * entropy, "target_entropy": entropy.detach()}


class TENT(Method):
    """A `Segmentor` (`student.*`) adapted by TENT; only its norm affine parameters train."""

    def __init__(self, segmentor: Segmentor, settings: TENTSettings | None = None, freeze: Sequence[str] = ()) -> None:
        super().__init__()
        self.settings = settings or TENTSettings()
        self.student = segmentor
        self.trainable = configure_tent(self.student, freeze)

    def segmentor(self) -> Segmentor:
        """The model to evaluate: the adapted student."""
        return self.student

    def eval_backbone(self) -> Backbone:
        return self.student.backbone

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor, Tensor], step: StepValues) -> dict[str, Tensor]:
        source_images, source_labels, target_images, target_labels = batch
        settings = self.settings
        outputs: dict[str, Tensor] = {}
        if settings.source_weight > 0:
            maps = self.student.backbone_maps(source_images)
            source_logits = self.student.decode(maps, tuple(source_labels.shape[-2:])).float()  # (B, K, H, W)
            outputs["loss_source"] = settings.source_weight * segmentation_cross_entropy(
                source_logits, source_labels, avg_non_ignore=False
            )
        target_logits = self.student(target_images).float()  # (B, K, H, W)
        outputs.update(entropy_loss_term(target_logits, settings.entropy_weight))
        valid = target_labels != IGNORE_INDEX  # (B, H, W): for logging only
        if bool(valid.any()):
            prediction = target_logits.detach().argmax(dim=1)  # (B, H, W)
            outputs["target_accuracy"] = (prediction == target_labels)[valid].float().mean()
        return outputs


def build_tent(segmentor: Segmentor, settings: TENTSettings, freeze: Sequence[str] = ()) -> TENT:
    """TENT on `segmentor`, configured in place (load its weights first: its BatchNorms lose their
    running statistics here)."""
    method = TENT(segmentor, settings, freeze)
    log.info("TENT: %d norm parameter tensors train (%d frozen), entropy weight %.3g, source weight %.3g",
             len(method.trainable.trainable), len(method.trainable.frozen), settings.entropy_weight,
             settings.source_weight)  # fmt: skip
    return method
