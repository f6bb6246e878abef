"""Model = backbone -> neck -> heads, with named taps (DESIGN.md, "Taps").

For an image batch (B, C, H, W) `Model.forward` returns the taps, each a tensor with B rows:

    backbone      (B, D_b)   the backbone's pooled vector (`Features.pooled`); for a neckless
                             model with `restore_stride`, the global average of the restored map
    neck          (B, D_n)   global average of the (restored) neck output; only with a neck
    head:<name>   (B, K)     output of head <name>; a multi-task head gives head:<task> per task

The neck reads the backbone's final map, `maps[backbone.final_map_index]` (the 1/64
context map for SEBNet, the last map otherwise). The heads read the `neck` tap when
there is a neck, else the `backbone` tap.

Resolution restore (`restore_stride` s): the map that is pooled is first resized
bilinearly (align_corners=False) to (ceil(H / s), ceil(W / s)). With a neck that is the
neck *output* (the neck itself reads the map at its own resolution, so its pooling
windows keep their meaning); without a neck it is the backbone's final map. The
restored map is `Model.feature_map`, the input a dense head would read.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pretrainlab.models.backbones.base import Backbone, global_average
from pretrainlab.models.heads.multi_task import MultiTaskHead
from pretrainlab.models.necks.base import Neck


class Model(nn.Module):
    """Backbone -> optional neck -> named heads, returning every tap.

    Args:
        backbone: any Backbone.
        heads: head name -> module reading (B, feature_dim); may be empty.
        neck: a neck built for `backbone.out_channels[backbone.final_map_index]` channels, or None.
        restore_stride: resize the pooled map to this stride of the input first (see module docstring).
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: dict[str, nn.Module] | None = None,
        neck: Neck | None = None,
        *,
        restore_stride: int | None = None,
    ) -> None:
        super().__init__()
        final_channels = backbone.out_channels[backbone.final_map_index]
        if neck is not None and neck.in_channels != final_channels:
            raise ValueError(
                f"the neck takes {neck.in_channels} channels but the backbone's final map has {final_channels}"
            )
        if restore_stride is not None and restore_stride < 1:
            raise ValueError(f"restore_stride must be >= 1, got {restore_stride}")
        self.backbone = backbone
        self.neck = neck
        self.heads = nn.ModuleDict(heads or {})
        self.restore_stride = restore_stride

    @property
    def feature_dim(self) -> int:
        """D of the vector the heads read: the `neck` tap, else the `backbone` tap."""
        return head_input_dim(self.backbone, self.neck, self.restore_stride)

    def tap_names(self) -> list[str]:
        """Names of the taps `forward` returns."""
        names = ["backbone", *(["neck"] if self.neck is not None else [])]
        for name, head in self.heads.items():
            tasks = list(head.heads) if isinstance(head, MultiTaskHead) else [name]
            names += [f"head:{task}" for task in tasks]
        return names

    def restore(self, feature_map: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(B, D, h, w) -> (B, D, ceil(H / s), ceil(W / s)) for s = restore_stride; unchanged when None."""
        if self.restore_stride is None:
            return feature_map
        size = (math.ceil(image_size[0] / self.restore_stride), math.ceil(image_size[1] / self.restore_stride))
        return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=False)

    def pooled_taps(self, images: Tensor) -> dict[str, Tensor]:
        """The `backbone` and `neck` taps of images (B, C, H, W): {tap: (B, D_tap)}."""
        features = self.backbone(images)
        final_map = features.maps[self.backbone.final_map_index]  # (B, D_f, h, w)
        image_size = (images.shape[-2], images.shape[-1])
        if self.neck is None:
            if self.restore_stride is None:
                return {"backbone": features.pooled}
            return {"backbone": global_average(self.restore(final_map, image_size))}  # (B, D_f)
        neck_map = self.restore(self.neck(final_map), image_size)  # (B, D_n, H / s, W / s)
        return {"backbone": features.pooled, "neck": global_average(neck_map)}

    def feature_map(self, images: Tensor) -> Tensor:
        """The (restored) neck output, or the backbone's (restored) final map: (B, D_map, H_s, W_s)."""
        final_map = self.backbone(images).maps[self.backbone.final_map_index]
        if self.neck is not None:
            final_map = self.neck(final_map)
        return self.restore(final_map, (images.shape[-2], images.shape[-1]))

    def head_taps(self, feature: Tensor) -> dict[str, Tensor]:
        """Every head on feature (N, feature_dim): {head:<name>: (N, K)}, multi-task heads per task."""
        taps: dict[str, Tensor] = {}
        for name, head in self.heads.items():
            output = head(feature)
            if isinstance(output, dict):
                taps.update({f"head:{task}": value for task, value in output.items()})
            else:
                taps[f"head:{name}"] = output
        return taps

    def forward(self, images: Tensor) -> dict[str, Tensor]:  # images (B, C, H, W) -> {tap: (B, ...)}
        return self.forward_views([images])

    def forward_views(self, views: list[Tensor]) -> dict[str, Tensor]:
        """Taps of several views [(B, C, H_v, W_v)]: {tap: (V * B, ...)}, view v in rows [v*B, (v+1)*B).

        Views of equal size run through backbone and neck as one batch; the heads run once on all rows.
        """
        groups = [self.pooled_taps(torch.cat(group)) for group in group_by_size(views)]
        taps = {name: torch.cat([group[name] for group in groups]) for name in groups[0]}
        return taps | self.head_taps(taps["neck" if self.neck is not None else "backbone"])


def head_input_dim(backbone: Backbone, neck: Neck | None, restore_stride: int | None) -> int:
    """D of the vector the heads of `Model(backbone, ..., neck, restore_stride=...)` read (to size heads first)."""
    if neck is not None:
        return neck.out_channels
    if restore_stride is not None:
        return backbone.out_channels[backbone.final_map_index]
    return backbone.embed_dim


def group_by_size(views: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive views of equal resolution, so each group is one batched forward."""
    groups: list[list[Tensor]] = []
    for view in views:
        if groups and groups[-1][-1].shape[-2:] == view.shape[-2:]:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups
