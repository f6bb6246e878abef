"""DACS's domain mixing and strong augmentation (Tranheden et al. 2021, arXiv:2007.08702), as
pure tensor functions; the semantics are those of DAFormer's `mmseg/models/utils/dacs_transforms.py`
(Hoyer et al. 2022), which runs kornia 0.5.8 for the colour jitter and the blur.

ClassMix: for each source image, ⌈n/2⌉ of the n classes present in its label (the ignore
index excluded) are chosen uniformly at random; their pixels form the mask that pastes source
onto target. DAFormer draws the classes from `torch.unique` over the *whole batch's* labels,
255 included (`get_class_masks`, line 93); here they come from the image's own label, without
255, as in the DACS paper.

Strong augmentation of a normalised batch: un-normalise to [0, 1], colour jitter, Gaussian
blur, re-normalise. Colour jitter (kornia 0.5.8 `ColorJitter`): per image, factors
b, c, s ~ U(1 − strength, 1 + strength) and h ~ U(−strength, strength), applied in a random
order per image: brightness x + (b − 1), contrast x · c (no mean blend, unlike torchvision),
saturation S · s in HSV, hue H + h turns in HSV, each clamped to [0, 1]. Blur: a separable
Gaussian with σ ~ U(σ_min, σ_max) per image and kernel size `blur_kernel_size` (about a tenth
of the side, odd) with reflect padding. Whether the batch is jittered, and whether it is
blurred, is one draw per batch (DAFormer draws `random.uniform` once per step for both).
All randomness comes from the `torch.Generator` passed in (a CPU generator: the draws are
the same on every device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def classmix_masks(source_labels: Tensor, generator: torch.Generator, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """ClassMix masks: per image, the pixels of ⌈n/2⌉ of its n present classes.

    Args:
        source_labels: (B, H, W) integer labels; `ignore_index` pixels are never chosen.
        generator: CPU generator for the class choice (one `randperm` per image, in batch order).

    Returns:
        (B, 1, H, W) bool, True where the source pixel is pasted.
    """
    if source_labels.ndim != 3 or source_labels.is_floating_point():
        raise ValueError(
            f"expected integer source labels (B, H, W), got {source_labels.dtype} {tuple(source_labels.shape)}"
        )
    masks = []
    for label in source_labels:  # label: (H, W)
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]
        num_classes = classes.numel()
        order = torch.randperm(num_classes, generator=generator).to(classes.device)
        chosen = classes[order[: (num_classes + 1) // 2]]
        masks.append(torch.isin(label, chosen))
    return torch.stack(masks).unsqueeze(1)  # (B, 1, H, W)


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """`source` where `mask`, else `target`.

    Args:
        mask: (B, 1, H, W) bool.
        source, target: (B, C, H, W) images or (B, H, W) label / weight maps, of one shape.
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ in shape")
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask (B, 1, H, W), got {mask.dtype} {tuple(mask.shape)}")
    return torch.where(mask if source.ndim == 4 else mask[:, 0], source, target)


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with hue in turns [0, 1), saturation and value in [0, 1]."""
    red, green, blue = rgb.unbind(-3)
    value = rgb.amax(-3)
    chroma = value - rgb.amin(-3)
    saturation = torch.where(value > 0, chroma / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # the sector of the largest channel (red first on ties, like kornia's argmax), in sixths of a turn
    sector = torch.where(
        value == red,
        (green - blue) / safe,
        torch.where(value == green, (blue - red) / safe + 2, (red - green) / safe + 4),
    )
    hue = torch.where(chroma > 0, torch.remainder(sector / 6.0, 1.0), torch.zeros_like(sector))
    return torch.stack([hue, saturation, value], dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of `rgb_to_hsv`: channel n = V − V·S·clamp(min(k, 4 − k), 0, 1), k = (n + 6H) mod 6,
    with n = 5, 3, 1 for red, green, blue."""
    hue, saturation, value = hsv.unbind(-3)
    channels = []
    for offset in (5.0, 3.0, 1.0):  # red, green, blue
        k = torch.remainder(offset + 6.0 * hue, 6.0)
        channels.append(value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=-3)


def adjust_brightness(image: Tensor, factor: float) -> Tensor:
    """kornia 0.5.8: additive, x + (factor − 1), clamped to [0, 1]."""
    return (image + (factor - 1.0)).clamp(0.0, 1.0)


def adjust_contrast(image: Tensor, factor: float) -> Tensor:
    """kornia 0.5.8: x · factor, clamped to [0, 1]."""
    return (image * factor).clamp(0.0, 1.0)


def adjust_saturation(image: Tensor, factor: float) -> Tensor:
    """HSV saturation times `factor`, clamped to [0, 1]."""
    hue, saturation, value = rgb_to_hsv(image).unbind(-3)
    return hsv_to_rgb(torch.stack([hue, (saturation * factor).clamp(0.0, 1.0), value], dim=-3))


def adjust_hue(image: Tensor, shift: float) -> Tensor:
    """HSV hue shifted by `shift` turns (kornia: `shift · 2π` radians), wrapped."""
    hue, saturation, value = rgb_to_hsv(image).unbind(-3)
    return hsv_to_rgb(torch.stack([torch.remainder(hue + shift, 1.0), saturation, value], dim=-3))


def color_jitter(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """kornia 0.5.8 `ColorJitter(strength, strength, strength, strength)` on each image of (B, 3, H, W) in [0, 1].

    Draws per image, in batch order: 4 uniforms (brightness, contrast, saturation, hue) and
    a random order of the four operations.
    """
    if not 0.0 <= strength <= 0.5:
        raise ValueError(f"jitter strength must be in [0, 0.5] (hue shifts up to half a turn), got {strength}")
    low, high = 1.0 - strength, 1.0 + strength
    out = []
    for image in images:  # (3, H, W)
        brightness, contrast, saturation, hue = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        ops = [
            (adjust_brightness, low + brightness * (high - low)),
            (adjust_contrast, low + contrast * (high - low)),
            (adjust_saturation, low + saturation * (high - low)),
            (adjust_hue, -strength + hue * 2.0 * strength),
        ]
        for index in torch.randperm(4, generator=generator).tolist():
            adjust, factor = ops[index]
            image = adjust(image, factor)
        out.append(image)
    return torch.stack(out)


def blur_kernel_size(side: int) -> int:
    """DAFormer's kernel size for a side of `side` pixels: ⌈side / 10⌉, minus 1 when even (always odd)."""
    size = math.ceil(0.1 * side)
    return size if size % 2 == 1 else size - 1


def gaussian_kernel1d(size: int, sigma: Tensor) -> Tensor:
    """(N, size) normalised Gaussians exp(−x² / 2σ²) on x = −size//2 … size//2, one per σ in `sigma` (N,)."""
    x = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    weights = torch.exp(-(x[None] ** 2) / (2.0 * sigma[:, None] ** 2))  # (N, size)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W), σ per image (`sigma` (B,)), reflect padding,
    kernel `blur_kernel_size` of H (vertical) and of W (horizontal)."""
    batch, channels, height, width = images.shape
    size_y, size_x = blur_kernel_size(height), blur_kernel_size(width)
    sigma = sigma.to(device=images.device, dtype=images.dtype)
    kernel_y = gaussian_kernel1d(size_y, sigma).repeat_interleave(channels, dim=0)  # (B * C, size_y)
    kernel_x = gaussian_kernel1d(size_x, sigma).repeat_interleave(channels, dim=0)  # (B * C, size_x)
    padded = F.pad(images, (size_x // 2, size_x // 2, size_y // 2, size_y // 2), mode="reflect")
    grouped = padded.reshape(1, batch * channels, *padded.shape[-2:])  # one group per (image, channel)
    grouped = F.conv2d(grouped, kernel_y.view(batch * channels, 1, size_y, 1), groups=batch * channels)
    grouped = F.conv2d(grouped, kernel_x.view(batch * channels, 1, 1, size_x), groups=batch * channels)
    return grouped.view(batch, channels, height, width)


def strong_transform(
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    *,
    jitter_strength: float = 0.2,
    jitter_probability: float = 0.8,
    blur_probability: float = 0.5,
    blur_sigma: tuple[float, float] = (0.15, 1.15),
) -> Tensor:
    """DACS's strong augmentation of normalised RGB images (DAFormer `strong_transform` without the mix).

    Args:
        images: (B, 3, H, W) normalised as (x − mean) / std, x in 0..255.
        mean, std: the three per-channel values of that normalisation (0..255 scale, RGB).
        generator: CPU generator. Draws, in order: two uniforms (jitter and blur coins for the
            batch), the jitter draws of `color_jitter` when jittered, B uniforms for σ when blurred.
        jitter_probability: chance that the batch is jittered (DAFormer's `color_jitter_probability`
            0.2 is the threshold a uniform must *exceed*, so it means 0.8 here).
        blur_probability: chance that the batch is blurred (DAFormer: 0.5 with `blur=True`).

    Returns:
        (B, 3, H, W) augmented images, normalised the same way.
    """
    if images.ndim != 4 or images.shape[1] != 3 or len(mean) != 3 or len(std) != 3:
        raise ValueError(f"strong_transform needs RGB images (B, 3, H, W) and 3 mean / std values, got "
                         f"{tuple(images.shape)}, mean {list(mean)}, std {list(std)}")  # fmt: skip
    jitter_coin, blur_coin = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = (images * std_t + mean_t) / 255.0  # (B, 3, H, W) in [0, 1]
    if jitter_coin < jitter_probability:
        pixels = color_jitter(pixels, jitter_strength, generator)
    if blur_coin < blur_probability:
        low, high = blur_sigma
        sigma = low + (high - low) * torch.rand(images.shape[0], generator=generator, dtype=torch.float64)
        pixels = gaussian_blur(pixels, sigma)
    return (pixels * 255.0 - mean_t) / std_t
