"""Continue MAE pretraining from a checkpoint of the official release (`stack`).

The release stores `{"model": state_dict}` with the encoder at the top level (`cls_token`,
`pos_embed`, `patch_embed.proj.*`, `blocks.N.*`, `norm.*`) and the decoder as `decoder_*`
and `mask_token`. Those names map onto the MAE method's `encoder.model.*` (the timm ViT,
whose block names are the release's) and `decoder.*`; the load goes through
`models/checkpoint.load_backbone_checkpoint`, so every missing / unexpected / mismatched
key is reported, never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pretrainlab.models.checkpoint import LoadReport, load_backbone_checkpoint

RELEASE_TO_METHOD = {
    "decoder_embed.": "decoder.embed.",
    "decoder_pos_embed": "decoder.pos_embed",
    "decoder_blocks.": "decoder.blocks.",
    "decoder_norm.": "decoder.norm.",
    "decoder_pred.": "decoder.pred.",
    "mask_token": "decoder.mask_token",
    "": "encoder.model.",  # everything else is the encoder (the longest matching prefix wins)
}


def load_mae_release(method: nn.Module, path: Path | str) -> LoadReport:
    """Load an official-release MAE checkpoint (encoder and decoder) into the MAE `method`; returns the report."""
    return load_backbone_checkpoint(method, path, layout="mae", prefix_remap=RELEASE_TO_METHOD)
