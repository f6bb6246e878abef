"""Losses attached to named taps of a model (`backbone`, `neck`, `head:<name>`), each with a weight,
and their registry: a loss usable on a tap is a config class and a builder registered here.

A method computes its taps, then `tap_losses(...)` adds, for every attached loss,
    loss_<name>_<tap>   weight * value   (summed into the objective by the engine)
    <name>_<tap>        value, detached  (logged unweighted)
with ':' in the tap written as '_' (`loss_koleo_head_dino`).

KoLeo is computed per crop block (rows [g*B, (g+1)*B) of a (G*B, D) tap) so two views
of one image are never nearest neighbours (DINOv2 applies it per global crop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor

from pretrainlab.config.component import Component
from pretrainlab.losses.cross_entropy import classification_cross_entropy
from pretrainlab.losses.koleo import koleo_per_crop
from pretrainlab.registry import Registry

TAP_PATTERN = r"^(backbone|neck|head:\w+)$"

LossFn = Callable[[Tensor, int, Tensor | None], Tensor]  # (tap (G*B, D), G crops, labels (B,) | None) -> scalar


@dataclass(frozen=True)
class TapLoss:
    """One loss on one tap: `fn(tap_value, num_crops, labels)` scaled by `weight`."""

    name: str
    tap: str
    weight: float
    fn: LossFn

    @property
    def key(self) -> str:
        """`<name>_<tap>` with ':' replaced, e.g. `koleo_neck`, `koleo_head_dino`."""
        return f"{self.name}_{self.tap.replace(':', '_')}"


def koleo_on_tap(features: Tensor, num_crops: int, labels: Tensor | None, *, eps: float) -> Tensor:
    """KoLeo per crop block of features (G*B, D), in fp32; labels are not used."""
    return koleo_per_crop(features.float(), num_crops, eps)


def cross_entropy_on_tap(logits: Tensor, num_crops: int, labels: Tensor | None, *, label_smoothing: float) -> Tensor:
    """Cross-entropy of logits (G*B, K) against labels (B,), repeated for each of the G crops, in fp32."""
    if labels is None:
        raise ValueError("cross_entropy on a tap needs labels; this method passes none")
    return classification_cross_entropy(logits.float(), labels.repeat(num_crops), label_smoothing)


class TapLossConfig(Component):
    """Base of every loss on a tap: where it attaches and its weight."""

    needs_labels: ClassVar[bool] = False
    tap: str = Field("backbone", pattern=TAP_PATTERN, description="backbone | neck | head:<name>")
    weight: float = Field(1.0, ge=0.0)


TAP_LOSSES: Registry[TapLossConfig] = Registry("loss", TapLossConfig)


class KoLeoLossConfig(TapLossConfig):
    """KoLeo regulariser (DINOv2) on a tap, computed per global crop (`losses/koleo.py`)."""

    name: Literal["koleo"]
    weight: float = Field(0.1, ge=0.0)
    eps: float = Field(1e-8, gt=0.0)


class CrossEntropyLossConfig(TapLossConfig):
    """Classification cross-entropy on a head tap against the image labels (methods with labels only)."""

    name: Literal["cross_entropy"]
    needs_labels: ClassVar[bool] = True
    tap: str = Field(pattern=r"^head:\w+$", description="head:<name>: class logits")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@TAP_LOSSES.register(KoLeoLossConfig)
def build_koleo_on_tap(config: KoLeoLossConfig) -> TapLoss:
    return TapLoss(config.name, config.tap, config.weight, partial(koleo_on_tap, eps=config.eps))


@TAP_LOSSES.register(CrossEntropyLossConfig)
def build_cross_entropy_on_tap(config: CrossEntropyLossConfig) -> TapLoss:
    fn = partial(cross_entropy_on_tap, label_smoothing=config.label_smoothing)
    return TapLoss(config.name, config.tap, config.weight, fn)


def build_tap_loss(config: TapLossConfig) -> TapLoss:
    """The TapLoss a (validated) loss config describes."""
    return TAP_LOSSES.build(config)


def check_taps(losses: Sequence[TapLossConfig], taps: Sequence[str], *, has_labels: bool, key: str) -> None:
    """Every loss sits on one of `taps`, and needs labels only where the method has them.

    `key` is the dotted config path of the list (errors name `<key>.<i>.tap`).
    """
    for index, loss in enumerate(losses):
        if loss.tap not in taps:
            hint = " (neck.name is 'none')" if loss.tap == "neck" else ""
            raise ValueError(f"{key}.{index}.tap: no tap '{loss.tap}'{hint}; known taps: {', '.join(taps)}")
        if loss.needs_labels and not has_labels:
            raise ValueError(f"{key}.{index}.name: '{loss.name}' needs labels; this method has none")


def tap_losses(
    losses: Sequence[TapLoss], taps: dict[str, Tensor], num_crops: int, labels: Tensor | None = None
) -> dict[str, Tensor]:
    """Weighted and unweighted value of every loss on its tap.

    Args:
        losses: the attached losses.
        taps: {tap: (G*B, ...)} with crop g in rows [g*B, (g+1)*B).
        num_crops: G.
        labels: (B,) class labels, for losses that need them.

    Returns:
        {"loss_<key>": weight * value, "<key>": value.detach()} for every loss.
    """
    outputs: dict[str, Tensor] = {}
    for loss in losses:
        if loss.tap not in taps:
            raise KeyError(f"loss '{loss.name}' is attached to tap '{loss.tap}'; the model has {', '.join(taps)}")
        value = loss.fn(taps[loss.tap], num_crops, labels)
        outputs[f"loss_{loss.key}"] = loss.weight * value
        outputs[loss.key] = value.detach()
    return outputs
