"""Heads by name (`dino`, `linear`, `cls`, `multi_task`), built for a feature dimension.

Classification heads need `num_classes` resolved first (`resolve_num_classes`); the
config leaves it null to mean "the number of classes of the training set".
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pretrainlab.config.schema import (
    ClsHeadConfig,
    DINOHeadConfig,
    LinearHeadConfig,
    MultiTaskHeadConfig,
)
from pretrainlab.models.heads.cls import ClsHead
from pretrainlab.models.heads.dino import DINOHead
from pretrainlab.models.heads.linear import LinearHead
from pretrainlab.models.heads.multi_task import MultiTaskHead
from pretrainlab.registry import Registry

HeadConfig = DINOHeadConfig | LinearHeadConfig | ClsHeadConfig | MultiTaskHeadConfig
HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


def _num_classes(config: LinearHeadConfig | ClsHeadConfig) -> int:
    if config.num_classes is None:
        raise ValueError(f"head '{config.name}': num_classes is unresolved; call resolve_num_classes first")
    return config.num_classes


@HEADS.register("dino")
def build_dino_head(config: DINOHeadConfig, in_dim: int) -> DINOHead:
    return DINOHead(in_dim, **config.model_dump(exclude={"name"}))


@HEADS.register("linear")
def build_linear_head(config: LinearHeadConfig, in_dim: int) -> LinearHead:
    return LinearHead(in_dim, _num_classes(config), use_bn=config.use_bn)


@HEADS.register("cls")
def build_cls_head(config: ClsHeadConfig, in_dim: int) -> ClsHead:
    return ClsHead(
        in_dim,
        _num_classes(config),
        hidden_dim=config.hidden_dim,
        activation=config.activation,
        use_bn=config.use_bn,
        dropout=config.dropout,
    )


@HEADS.register("multi_task")
def build_multi_task_head(config: MultiTaskHeadConfig, in_dim: int) -> MultiTaskHead:
    heads = {task: build_head(head, in_dim) for task, head in config.tasks.items()}
    return MultiTaskHead(heads, config.weights)


def build_head(config: HeadConfig, in_dim: int) -> nn.Module:
    """The head a config names, reading features of dimension `in_dim`."""
    return HEADS.get(config.name)(config, in_dim)


def resolve_num_classes(config: HeadConfig, num_classes: int) -> HeadConfig:
    """A copy of `config` whose classification heads with `num_classes: null` get `num_classes`."""
    if isinstance(config, MultiTaskHeadConfig):
        tasks = {task: resolve_num_classes(head, num_classes) for task, head in config.tasks.items()}
        return config.model_copy(update={"tasks": tasks})
    if isinstance(config, LinearHeadConfig | ClsHeadConfig) and config.num_classes is None:
        return config.model_copy(update={"num_classes": num_classes})
    return config


__all__ = ["HEADS", "ClsHead", "DINOHead", "LinearHead", "MultiTaskHead", "build_head", "resolve_num_classes"]
