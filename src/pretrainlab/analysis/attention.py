"""The last block's CLS attention of a ViT, per head, and DINO's maps of the patches holding 60 % of it
(Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", Fig. 1 and 3).

timm's fused attention (`F.scaled_dot_product_attention`) returns no weights, so they are recomputed:
a forward pre-hook on the last block's `attn` captures its input (the block's normalised tokens) and
`attention_weights` applies the module's own q / k projection, q / k norms and scale,
softmax(q k^T * scale). The CLS row of each head, over the patch tokens, is reshaped to the patch grid
and upsampled to the image (nearest, as DINO's `visualize_attention.py` does).

`pretrainlab analyze attention --run DIR` -> plots/attention.png and analysis/attention.md.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from torch import Tensor, nn

from pretrainlab.analysis.run_analysis import (
    AnalysisSection,
    add_run_argument,
    add_weights_argument,
    display_images,
    figure_path,
    positive_int,
    prepare_run,
    saved_figure,
    show_image,
    val_examples,
)

if TYPE_CHECKING:
    from pretrainlab.analysis.probed_model import Weights

log = logging.getLogger(__name__)

NAME = "attention"
DINO_MASS = 0.6  # share of each head's attention the thresholded map keeps (DINO's --threshold)


def vit_of(backbone: nn.Module) -> nn.Module | None:
    """The timm ViT (`blocks`, `num_prefix_tokens`) inside a ViT backbone, None for any other backbone."""
    network = getattr(backbone, "network", backbone)  # a ChannelAdaptedBackbone (learned 1 -> 3 channels) wraps it
    model = getattr(network, "model", None)
    return model if getattr(network, "is_vit", False) and hasattr(model, "blocks") else None


@contextmanager
def captured_inputs(module: nn.Module) -> Iterator[list[Tensor]]:
    """Within the block, the first positional input of every call of `module` is appended to the list."""
    captured: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0]))
    try:
        yield captured
    finally:
        handle.remove()


def attention_weights(attn: Attention, tokens: Tensor) -> Tensor:
    """softmax(q k^T * scale) of timm's `Attention` for its input tokens (B, N, D) -> (B, heads, N, N).

    The output of `attn(tokens)` is `proj(norm((weights @ v) merged over heads))` (eval mode, no mask).
    """
    if not isinstance(attn, Attention):
        raise ValueError(f"attention weights are recomputed for timm's Attention (one qkv projection), "
                         f"not {type(attn).__name__}")  # fmt: skip
    batch, num_tokens, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(batch, num_tokens, 3, attn.num_heads, attn.head_dim)  # (B, N, 3, h, d)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, d)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)  # (B, h, N, N)


def tokens_to_grid(tokens: Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> Tensor:
    """(B, prefix + h * w, D) tokens in row-major patch order -> (B, D, h, w), prefix tokens dropped."""
    height, width = grid
    patches = tokens[:, num_prefix_tokens:]  # (B, h * w, D)
    if patches.shape[1] != height * width:
        raise ValueError(f"{tokens.shape[1]} tokens with {num_prefix_tokens} prefix tokens do not fill a "
                         f"{height}x{width} patch grid")  # fmt: skip
    return patches.transpose(1, 2).reshape(len(tokens), -1, height, width)


def cls_attention(backbone: nn.Module, images: Tensor) -> Tensor:
    """The last block's attention of the CLS token to every patch, per head.

    Args:
        backbone: a ViT backbone (`TimmBackbone` of a timm ViT with a class token).
        images: (B, C, H, W), H and W multiples of the patch size.

    Returns:
        (B, heads, H / patch, W / patch); each head's entries sum to 1 minus its attention to the prefix tokens.
    """
    model = vit_of(backbone)
    if model is None:
        raise ValueError(f"CLS attention needs a ViT backbone, got {type(backbone).__name__}")
    if getattr(model, "cls_token", None) is None:
        raise ValueError("CLS attention needs a ViT with a class token; this one pools without one")
    block = model.blocks[-1]
    with torch.no_grad(), captured_inputs(block.attn) as inputs:
        backbone(images)
        weights = attention_weights(block.attn, inputs[-1])  # (B, heads, N, N)
    grid = (images.shape[-2] // backbone.patch_size, images.shape[-1] // backbone.patch_size)
    cls_row = weights[:, :, 0].transpose(1, 2)  # (B, N, heads): the CLS query's weights, as tokens
    return tokens_to_grid(cls_row, backbone.num_prefix_tokens, grid)  # (B, heads, h, w)


def mass_threshold_mask(attention: Tensor, mass: float = DINO_MASS) -> Tensor:
    """The smallest set of entries holding `mass` of each row's total, as in DINO's visualize_attention.py.

    Entries are sorted largest first; an entry is kept while the mass of the larger ones is below
    `mass` (DINO: ascending cumulative sum above 1 - mass).

    Args:
        attention: (..., N) non-negative weights, each row with a positive sum.
        mass: share of the row's total to keep, in (0, 1].

    Returns:
        (..., N) bool mask.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if (attention < 0).any() or (attention.sum(dim=-1) <= 0).any():
        raise ValueError("attention must be non-negative with a positive sum per row")
    values, order = attention.sort(dim=-1, descending=True)
    values = values / values.sum(dim=-1, keepdim=True)
    mass_before = values.cumsum(dim=-1) - values  # (..., N): mass of the larger entries
    return torch.zeros_like(values, dtype=torch.bool).scatter(-1, order, mass_before < mass)


def plot_attention(images: np.ndarray, attention: Tensor, masks: Tensor, mass: float, titles: list[str],
                   path: Path) -> None:  # fmt: skip
    """Two rows per image: the image and each head's attention over it; the mean over heads and each
    head's thresholded map (kept patches bright).

    Args:
        images: (B, H, W, 3) RGB in [0, 1].
        attention: (B, heads, H, W) attention upsampled to the image.
        masks: (B, heads, H, W) bool thresholded maps.
        mass: the share of attention the thresholded maps keep (for their titles).
        titles: B image titles.
    """
    num_images, num_heads = attention.shape[:2]
    peak = attention.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    shown = (attention / peak).numpy()  # (B, heads, H, W), each map scaled to a maximum of 1
    mean = attention.mean(dim=1)
    mean = (mean / mean.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).numpy()  # (B, H, W)
    figsize = (1.9 * (num_heads + 1), 3.9 * num_images)
    with saved_figure(path, 2 * num_images, num_heads + 1, figsize=figsize) as (_, axes):
        for index, image in enumerate(images):
            top, bottom = axes[2 * index], axes[2 * index + 1]
            show_image(top[0], image, title=titles[index])
            show_image(bottom[0], image, mean[index], title="mean of heads")
            for head in range(num_heads):
                show_image(top[head + 1], image, shown[index, head], title=f"head {head}")
                kept = masks[index, head].numpy()[..., None]  # (H, W, 1)
                show_image(bottom[head + 1], image * (0.25 + 0.75 * kept), title=f"head {head}: {mass:.0%} mass")


def analyze_attention(run_dir: Path, weights: Weights = "pretrained", num_images: int = 4,
                      mass: float = DINO_MASS) -> AnalysisSection:  # fmt: skip
    """CLS attention maps of `num_images` evenly spaced val images -> plots/attention.png; the section."""
    from pretrainlab.analysis.probed_model import load_backbone
    from pretrainlab.data.loaders import build_eval_loaders

    prepare_run(run_dir)
    config, backbone = load_backbone(run_dir, weights)
    if vit_of(backbone) is None:
        raise ValueError(f"attention needs a ViT backbone, run {run_dir} has {config.backbone.describe()}")
    dataset = build_eval_loaders(config)[1].dataset
    images, labels = val_examples(dataset, num_images)
    attention = cls_attention(backbone, images)  # (B, heads, h, w)
    masks = mass_threshold_mask(attention.flatten(2), mass).reshape(attention.shape)  # (B, heads, h, w)
    size = images.shape[-2:]
    upsampled = F.interpolate(attention, size=size, mode="nearest")  # (B, heads, H, W)
    upsampled_masks = F.interpolate(masks.float(), size=size, mode="nearest").bool()
    titles = [dataset.classes[label] for label in labels.tolist()]
    plot_attention(display_images(images, *config.data.mean_std), upsampled, upsampled_masks, mass, titles,
                   figure_path(run_dir, NAME))  # fmt: skip
    kept = masks.flatten(2).float().mean(dim=2).mean(dim=0)  # (heads,): share of patches kept, mean over images
    numbers = {"backbone": config.backbone.describe(), "patch grid": f"{attention.shape[2]} x {attention.shape[3]}"}
    numbers |= {f"head {head}: patches holding {mass:.0%} of the CLS attention": f"{share:.1%}"
                for head, share in enumerate(kept.tolist())}  # fmt: skip
    options = {"weights": weights, "num_images": len(images), "threshold": mass}
    return AnalysisSection(NAME, "Last-block CLS attention per head", options, numbers)


def unit_fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_weights_argument(parser)
    parser.add_argument("--num-images", type=positive_int, default=4, help="evenly spaced val images shown")
    parser.add_argument("--threshold", type=unit_fraction, default=DINO_MASS,
                        help="share of each head's attention mass the thresholded map keeps (DINO: 0.6)")  # fmt: skip


def run_cli(args: argparse.Namespace) -> int:
    section = analyze_attention(args.run, args.weights, args.num_images, args.threshold)
    section_file = section.write(args.run)
    log.info("wrote %s and %s", figure_path(args.run, section.name), section_file)
    return 0
