"""What trains, decided in one place (DESIGN.md, "What trains").

A parameter trains when its dotted name matches one of the `train` patterns (or `train`
is "all") and none of the `freeze` patterns. A pattern names a parameter or a module
prefix (`head`, `backbone.model.layer4`) or is a glob over dotted names (`*.norm.*`,
`backbone.*bias`). A pattern that matches no parameter is an error, so a typo cannot
silently train (or freeze) nothing.

The optimizer builder (`engine/optim.py`) then sees only parameters with
`requires_grad`, and a module whose parameters are all frozen runs in eval mode under
`torch.no_grad()` (`is_frozen`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from pretrainlab.name_patterns import matches
from pretrainlab.registry import did_you_mean

log = logging.getLogger(__name__)

FinetuneMode = Literal["frozen", "full"]
MODE_TRAINS: dict[str, tuple[str, ...] | Literal["all"]] = {"frozen": ("head",), "full": "all"}


def check_patterns(names: Sequence[str], patterns: Iterable[str], what: str) -> None:
    """Raise ValueError for a pattern that matches none of `names` (with a did-you-mean over module prefixes)."""
    prefixes = sorted({".".join(name.split(".")[:depth]) for name in names for depth in (1, 2)})
    for pattern in patterns:
        if not any(matches(name, pattern) for name in names):
            raise ValueError(
                f"{what} pattern '{pattern}' matches no parameter{did_you_mean(pattern, prefixes)} "
                f"top-level modules: {', '.join(sorted({name.split('.')[0] for name in names}))}"
            )


@dataclass(frozen=True)
class TrainableSet:
    """Parameter names that train and that are frozen (disjoint; together: every parameter)."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]


def set_trainable(
    model: nn.Module, train: Sequence[str] | Literal["all"], freeze: Sequence[str] = ()
) -> TrainableSet:
    """Set `requires_grad` of every parameter of `model`; returns the resulting split.

    Args:
        model: the whole model (e.g. a `Segmentor` with `backbone` and `head`).
        train: patterns of what trains, or "all".
        freeze: patterns frozen even when `train` selects them.
    """
    names = [name for name, _ in model.named_parameters()]
    check_patterns(names, [] if train == "all" else train, "train")
    check_patterns(names, freeze, "freeze")
    trainable, frozen = [], []
    for name, param in model.named_parameters():
        selected = train == "all" or any(matches(name, pattern) for pattern in train)
        trains = selected and not any(matches(name, pattern) for pattern in freeze)
        param.requires_grad_(trains)
        (trainable if trains else frozen).append(name)
    if not trainable:
        raise ValueError(f"nothing trains: train={train!r}, freeze={list(freeze)!r}")
    log.info("%d parameter tensors train, %d are frozen", len(trainable), len(frozen))
    return TrainableSet(tuple(trainable), tuple(frozen))


def set_trainable_for_mode(model: nn.Module, mode: FinetuneMode, freeze: Sequence[str] = ()) -> TrainableSet:
    """`frozen`: only `head.*` trains; `full`: everything trains; `freeze` patterns are frozen in both."""
    return set_trainable(model, MODE_TRAINS[mode], freeze)


def is_frozen(module: nn.Module) -> bool:
    """True when no parameter of `module` trains (it should then run in eval mode under no_grad)."""
    return not any(param.requires_grad for param in module.parameters())
