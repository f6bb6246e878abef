"""Load external backbone weights (DINO, DINOv2, MAE, timm, pretrainlab) with a report.

`load_backbone_checkpoint(model, path)` never partially loads in silence: it returns and
logs a `LoadReport` naming every loaded, missing, unexpected, shape-mismatched, ignored
and interpolated key; `strict=True` raises before touching the model.

Steps:
  1. Read: `*.safetensors` with `safetensors.torch.load_file`, anything else with
     `torch.load(weights_only=True, map_location="cpu")` (argparse.Namespace, which the
     official DINO / MAE training checkpoints store under "args", is allowed).
  2. Unwrap containers: while the object is a dict that is not a flat name -> tensor dict,
     descend into the first present key of the layout's container list (for "auto":
     teacher, state_dict, model, student, module; the teacher is what DINO evaluates).
  3. Optional `prefix_remap` {old_prefix: new_prefix} on every key (longest prefix first).
  4. Target and prefix: the weights go into `model` itself or into `model.model` (the
     timm model inside pretrainlab's `TimmBackbone`). For each target, every dotted
     prefix of the checkpoint keys ("", "module.", "module.backbone.", ...) is scored by
     how many keys, once stripped, name a weight of the target. The best (target,
     prefix) wins; ties prefer a prefix containing "teacher", then the shorter prefix,
     then `model` over `model.model`.
  5. Names: DINOv2 names are mapped to timm's (`blocks.<chunk>.<i>.` -> `blocks.<i>.`,
     `mlp.w12` / `mlp.w3` -> `mlp.fc1` / `mlp.fc2`, `register_tokens` -> `reg_token`); then,
     if `model` has a `rename_checkpoint_key(key) -> str` hook, it is tried (MiT: NVlabs
     SegFormer names -> timm PVTv2 names, for `model.model`). A renamed key is used only when
     the original name is not a weight of the target and the new one is.
  6. Sort: keys outside the chosen prefix, and known non-backbone keys the target lacks
     (DINO `head.*`, DINOv2 `dino_head.*` / `ibot_head.*`, MAE `decoder*`, `mask_token`),
     are "ignored"; other keys the target lacks are "unexpected".
  7. Position embeddings (the target's top-level `pos_embed` (1, P + Gh * Gw, D), timm
     layout): the checkpoint's grid is resampled bicubically (antialiased, as timm does)
     to the target's grid `patch_embed.grid_size`; class / register positions are kept.
     A checkpoint that has a class position where the target has none (DINOv2 with
     registers -> timm `no_embed_class` models) gets it folded into `cls_token`.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pretrainlab.registry import did_you_mean

_LOGGER = logging.getLogger(__name__)

Layout = Literal["auto", "dino", "dinov2", "mae", "timm", "pretrainlab"]
MAX_LISTED_IGNORED = 12  # the report names every missing / unexpected / mismatched key, but abridges ignored ones


@dataclass(frozen=True)
class _LayoutRules:
    containers: tuple[str, ...]  # dict keys descended into, in order of preference
    ignore_prefixes: tuple[str, ...]  # known non-backbone weights
    use_dinov2_names: bool


_DINO_IGNORE = ("head.",)
_DINOV2_IGNORE = ("dino_head.", "ibot_head.", "mask_token", "head.")
_MAE_IGNORE = ("decoder", "mask_token")
_TEACHER_FIRST = ("teacher", "state_dict", "model", "student", "module")
_LAYOUTS: dict[str, _LayoutRules] = {
    "auto": _LayoutRules(_TEACHER_FIRST, _DINOV2_IGNORE + _MAE_IGNORE, use_dinov2_names=True),
    "dino": _LayoutRules(_TEACHER_FIRST, _DINO_IGNORE, use_dinov2_names=False),
    "dinov2": _LayoutRules(_TEACHER_FIRST, _DINOV2_IGNORE, use_dinov2_names=True),
    "mae": _LayoutRules(("model", "state_dict", "module"), _MAE_IGNORE, use_dinov2_names=False),
    "timm": _LayoutRules(("state_dict", "model", "module"), (), use_dinov2_names=False),
    "pretrainlab": _LayoutRules(("state_dict", "model", "module"), (), use_dinov2_names=False),
}


@dataclass
class LoadReport:
    """What happened to every key. Key names are the target's for loaded / missing / mismatched
    and the checkpoint's (after unwrapping) for unexpected / ignored."""

    source: str
    layout: str
    target: str = "model"  # "model" or "model.model"
    container: list[str] = field(default_factory=list)  # dict keys descended into, e.g. ["teacher"]
    prefix: str = ""  # prefix stripped from the checkpoint keys
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, ckpt, model)
    ignored: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how each interpolated key was changed

    @property
    def is_complete(self) -> bool:
        """True when every weight of the target was loaded and nothing unexpected was found."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The missing / unexpected / mismatched keys on one line ("" when complete)."""
        parts = []
        if self.missing:
            parts.append(f"missing {self.missing}")
        if self.unexpected:
            parts.append(f"unexpected {self.unexpected}")
        if self.mismatched:
            shapes = [f"{key}: checkpoint {ckpt} vs model {own}" for key, ckpt, own in self.mismatched]
            parts.append(f"mismatched {shapes}")
        return "; ".join(parts)

    def format(self) -> str:
        """A multi-line human-readable report."""
        container = "/".join(self.container) or "-"
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        mismatched = [f"{key}: checkpoint {ckpt} vs model {own}" for key, ckpt, own in self.mismatched]
        ignored = self.ignored[:MAX_LISTED_IGNORED]
        if len(self.ignored) > MAX_LISTED_IGNORED:
            ignored.append(f"... and {len(self.ignored) - MAX_LISTED_IGNORED} more")
        sections = [
            ("loaded", f"{len(self.loaded)} / {total} weights of {self.target}", []),
            ("missing", str(len(self.missing)), self.missing),
            ("unexpected", str(len(self.unexpected)), self.unexpected),
            ("mismatched", str(len(self.mismatched)), mismatched),
            ("interpolated", str(len(self.interpolated)), self.notes),
            ("ignored", f"{len(self.ignored)} (not backbone weights)", ignored),
        ]
        lines = [
            (
                f"checkpoint {self.source}: layout {self.layout}, container {container}, "
                f"prefix {self.prefix!r} stripped, loaded into {self.target}"
            )
        ]
        for label, summary, entries in sections:
            lines.append(f"  {label:<13}{summary}")
            lines.extend(f"    {entry}" for entry in entries)
        return "\n".join(lines)

    def log(self, logger: logging.Logger = _LOGGER) -> None:
        """Log the report: WARNING when something is missing / unexpected / mismatched, else INFO."""
        logger.log(logging.INFO if self.is_complete else logging.WARNING, "%s", self.format())


def read_checkpoint(path: Path | str) -> object:
    """Read a checkpoint file (.safetensors or torch pickle) into Python objects on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(
                f"reading {path} needs the 'safetensors' package: pip install safetensors"
            ) from error
        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle.UnpicklingError or RuntimeError, depending on the cause
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"cannot read {path} with torch.load(weights_only=True): {first_line} "
            "Only tensors and plain types are loaded; save the weights as a plain state dict (or .safetensors)."
        ) from error


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def unwrap_state_dict(obj: object, containers: tuple[str, ...]) -> tuple[dict[str, Tensor], list[str]]:
    """Descend through container dicts to the name -> tensor dict; returns it and the keys descended into."""
    path: list[str] = []
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping):
            raise ValueError(f"checkpoint entry {'/'.join(path) or '<top>'} is a {type(obj).__name__}, expected a dict")  # noqa: TRY004 -- bad file content, reported like every other checkpoint problem
        key = next((k for k in containers if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
            if tensors:
                return dict(tensors), path
            raise ValueError(
                f"no state dict found in checkpoint entry {'/'.join(path) or '<top>'}: keys {sorted(obj)[:20]}, "
                f"expected tensors or one of the containers {list(containers)}"
            )
        path.append(key)
        obj = obj[key]
    return dict(obj), path


def _remap_prefixes(state: dict[str, Tensor], prefix_remap: Mapping[str, str]) -> dict[str, Tensor]:
    ordered = sorted(prefix_remap.items(), key=lambda item: len(item[0]), reverse=True)
    remapped: dict[str, Tensor] = {}
    for key, value in state.items():
        for old, new in ordered:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        remapped[key] = value
    return remapped


_DINOV2_RENAMES = (
    (re.compile(r"^blocks\.\d+\.(\d+)\."), r"blocks.\1."),  # block chunks (FSDP training checkpoints)
    (re.compile(r"^(blocks\.\d+\.mlp\.)w12\."), r"\1fc1."),  # SwiGLU, packed as in timm's SwiGLUPacked
    (re.compile(r"^(blocks\.\d+\.mlp\.)w3\."), r"\1fc2."),
    (re.compile(r"^register_tokens$"), "reg_token"),
)


KeyRename = Callable[[str], str]


def _dinov2_name(key: str) -> str:
    for pattern, replacement in _DINOV2_RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _key_renames(model: nn.Module, use_dinov2_names: bool) -> tuple[KeyRename, ...]:
    """The renames tried, in order, on a checkpoint key the target lacks (module docstring, step 5)."""
    renames: list[KeyRename] = [_dinov2_name] if use_dinov2_names else []
    hook = getattr(model, "rename_checkpoint_key", None)
    if callable(hook):
        renames.append(hook)
    return tuple(renames)


def _rename(key: str, model_keys: set[str], renames: tuple[KeyRename, ...]) -> str:
    """The target's name for a (prefix-stripped) checkpoint key; the key itself when nothing fits better."""
    if key in model_keys:
        return key
    for rename in renames:
        renamed = rename(key)
        if renamed in model_keys:
            return renamed
    return key


def _candidate_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    targets = [("model", model)]
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        targets.append(("model.model", inner))
    return targets


def _best_prefix(keys: list[str], model_keys: set[str], renames: tuple[KeyRename, ...]) -> tuple[int, str]:
    """(number of matching keys, prefix) of the best dotted prefix of `keys` for `model_keys`."""
    scores: dict[str, int] = {"": 0}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[:i]) + "." if i else ""
            if _rename(".".join(parts[i:]), model_keys, renames) in model_keys:
                scores[prefix] = scores.get(prefix, 0) + 1
    best = max(scores, key=lambda prefix: _prefix_rank(scores[prefix], prefix))
    return scores[best], best


def _prefix_rank(score: int, prefix: str) -> tuple[int, bool, int]:
    """More matching keys first, then a teacher's weights, then the shorter prefix."""
    return score, "teacher" in prefix.split("."), -len(prefix)


def _choose_target(model: nn.Module, keys: list[str], renames: tuple[KeyRename, ...]) -> tuple[str, nn.Module, str]:
    """(target name, target module, prefix to strip) that matches the checkpoint keys best."""
    ranked = []
    for order, (name, module) in enumerate(_candidate_targets(model)):
        score, prefix = _best_prefix(keys, set(module.state_dict()), renames)
        ranked.append(((*_prefix_rank(score, prefix), -order), name, module, prefix))
    _, name, module, prefix = max(ranked, key=lambda entry: entry[0])
    return name, module, prefix


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _model_position_layout(target: nn.Module, length: int) -> tuple[int, tuple[int, int]] | None:
    """(number of prefix positions, (Gh, Gw)) of the target's pos_embed of `length` positions."""
    grid = getattr(getattr(target, "patch_embed", None), "grid_size", None)
    if grid is not None:
        grid_h, grid_w = int(grid[0]), int(grid[1])
        num_prefix = length - grid_h * grid_w
        return (num_prefix, (grid_h, grid_w)) if num_prefix >= 0 else None
    for num_prefix in range(9):
        if _is_square(length - num_prefix):
            side = math.isqrt(length - num_prefix)
            return num_prefix, (side, side)
    return None


def _checkpoint_prefix_count(length: int, preferred: int) -> int | None:
    """Number of prefix positions of a checkpoint pos_embed with a square grid."""
    if _is_square(length - preferred):
        return preferred
    return next((p for p in range(9) if _is_square(length - p)), None)


def resample_grid(grid: Tensor, new_size: tuple[int, int]) -> Tensor:
    """Bicubic resampling of patch position embeddings (1, Gh * Gw, D), square Gh = Gw -> (1, Hn * Wn, D)."""
    _, num_patches, dim = grid.shape
    side = math.isqrt(num_patches)
    maps = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()  # (1, D, Gh, Gw)
    maps = F.interpolate(maps, size=new_size, mode="bicubic", align_corners=False, antialias=True)
    return maps.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(grid.dtype)  # (1, Hn * Wn, D)


def _adapt_position_embedding(
    matched: dict[str, Tensor], target: nn.Module, own_shapes: dict[str, torch.Size], report: LoadReport
) -> None:
    """Fit matched["pos_embed"] (and cls_token, if needed) to the target, in place; see the module docstring."""
    if "pos_embed" not in matched or matched["pos_embed"].shape == own_shapes["pos_embed"]:
        return
    ckpt, own = matched["pos_embed"], own_shapes["pos_embed"]
    if ckpt.ndim != 3 or len(own) != 3 or ckpt.shape[-1] != own[-1]:
        return
    own_layout = _model_position_layout(target, own[1])
    if own_layout is None:
        return
    own_prefix, own_grid = own_layout
    ckpt_prefix = _checkpoint_prefix_count(ckpt.shape[1], own_prefix)
    if ckpt_prefix is None:
        return
    if ckpt_prefix == own_prefix + 1 and own_prefix == 0 and "cls_token" in matched:
        matched["cls_token"] = matched["cls_token"] + ckpt[:, :1]
        ckpt = ckpt[:, 1:]
        ckpt_prefix = 0
        report.interpolated.append("cls_token")
        report.notes.append("cls_token: + pos_embed[:, 0] (class position folded in; the model has no_embed_class)")
    if ckpt_prefix != own_prefix:
        return
    side = math.isqrt(ckpt.shape[1] - ckpt_prefix)
    grid = ckpt[:, ckpt_prefix:]
    if (side, side) != own_grid:
        grid = resample_grid(grid, own_grid)
        report.notes.append(f"pos_embed: grid {side}x{side} -> {own_grid[0]}x{own_grid[1]} (bicubic)")
    else:
        report.notes.append("pos_embed: class position removed")
    matched["pos_embed"] = torch.cat([ckpt[:, :ckpt_prefix], grid], dim=1)
    report.interpolated.append("pos_embed")


def load_backbone_checkpoint(
    model: nn.Module,
    path: Path | str,
    *,
    layout: Layout = "auto",
    strict: bool = False,
    prefix_remap: dict[str, str] | None = None,
) -> LoadReport:
    """Load the backbone weights of a checkpoint file into `model` (or `model.model`) and report.

    Args:
        model: the module to fill; a wrapper holding the real network as `.model` (pretrainlab's
            `TimmBackbone`) is filled through whichever of the two matches the checkpoint best.
        path: `.safetensors` or a torch checkpoint (`.pth`, `.pt`, `.ckpt`, ...).
        layout: where the checkpoint comes from; "auto" tries every known layout's rules.
        strict: raise ValueError naming the missing / unexpected / mismatched keys instead of
            loading (the model is left untouched).
        prefix_remap: {old prefix: new prefix} applied to checkpoint keys before matching.

    Returns:
        The `LoadReport`, also logged (WARNING when incomplete).
    """
    if layout not in _LAYOUTS:
        known = list(get_args(Layout))
        raise ValueError(f"unknown checkpoint layout {layout!r}{did_you_mean(str(layout), known)} known: {known}")
    rules = _LAYOUTS[layout]
    state, container = unwrap_state_dict(read_checkpoint(path), rules.containers)
    if prefix_remap:
        state = _remap_prefixes(state, prefix_remap)

    keys = list(state)
    renames = _key_renames(model, rules.use_dinov2_names)
    target_name, target, prefix = _choose_target(model, keys, renames)
    own_shapes = {key: value.shape for key, value in target.state_dict().items()}
    own_keys = set(own_shapes)
    report = LoadReport(source=str(path), layout=layout, target=target_name, container=container, prefix=prefix)
    matched: dict[str, Tensor] = {}
    for key in keys:
        if not key.startswith(prefix):
            report.ignored.append(key)
            continue
        name = _rename(key[len(prefix) :], own_keys, renames)
        if name in own_shapes and name not in matched:
            matched[name] = state[key]
        elif name.startswith(rules.ignore_prefixes):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)

    _adapt_position_embedding(matched, target, own_shapes, report)
    to_load: dict[str, Tensor] = {}
    for name, value in matched.items():
        if value.shape == own_shapes[name]:
            to_load[name] = value
            report.loaded.append(name)
        else:
            report.mismatched.append((name, tuple(value.shape), tuple(own_shapes[name])))
    report.missing = [name for name in own_shapes if name not in matched]

    report.log()
    if strict and not report.is_complete:
        raise ValueError(f"checkpoint {path} does not fit the model (strict=True): {report.problems()}")
    target.load_state_dict(to_load, strict=False)  # to_load holds only target keys of the right shape
    return report
