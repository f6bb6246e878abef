"""The registry of heads on a pooled feature (B, D) and the base of their configs.

A head config knows the taps its head adds to a model (`head:<name>`, or one per task for
a multi-task head) and whether it predicts classes (then its `num_classes` may be left
null, meaning "the classes of the training set", and is resolved before building).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pretrainlab.config.component import Component
from pretrainlab.registry import Registry


class HeadConfig(Component):
    """Base of every config of a head on a pooled feature (B, D)."""

    predicts_classes: ClassVar[bool] = False

    def tap_names(self, head_name: str) -> list[str]:
        """The `head:<...>` taps this head adds when attached as `head_name`."""
        return [f"head:{head_name}"]

    def with_num_classes(self, num_classes: int) -> HeadConfig:
        """A copy whose unresolved class counts are `num_classes` (unchanged when nothing is unresolved)."""
        return self


class ClassifierHeadConfig(HeadConfig):
    """A head predicting class logits (B, K)."""

    predicts_classes: ClassVar[bool] = True
    num_classes: int | None = Field(None, ge=2, description="null = the number of classes of the training set")

    def with_num_classes(self, num_classes: int) -> ClassifierHeadConfig:
        return self if self.num_classes is not None else self.model_copy(update={"num_classes": num_classes})

    def resolved_num_classes(self) -> int:
        if self.num_classes is None:
            raise ValueError(f"head '{self.name}': num_classes is unresolved; call with_num_classes first")
        return self.num_classes


HEADS: Registry[HeadConfig] = Registry("head", HeadConfig)


def build_head(config: HeadConfig, in_dim: int):  # noqa: ANN201 - any registered head module
    """The head a config names, reading features of dimension `in_dim`."""
    return HEADS.build(config, in_dim)
