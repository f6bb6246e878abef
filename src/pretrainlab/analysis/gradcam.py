"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization") of a run's backbone, classified by its fitted linear probe.

For the target class c with logit y^c and the target layer's activations A (K channels, h x w grid):

    alpha_k^c = mean_{i,j} dy^c / dA_k[i, j]          (eq. 1: spatial mean of the gradient)
    L^c       = ReLU(sum_k alpha_k^c A_k)              (eq. 2)

then upsampled bilinearly to the image and min-max normalised to [0, 1] per image.

Target layer: a CNN's last feature map (`Features.maps[-1]`, what its pooled features average); a
ViT's last block's normalised input tokens (prefix tokens dropped, reshaped to the patch grid). The
classified CLS token is computed inside the last block from those tokens, whereas the last block's
own patch outputs never reach it (their gradient is zero; pytorch-grad-cam targets `blocks[-1].norm1`
for the same reason).

`pretrainlab analyze gradcam --run DIR` -> plots/gradcam.png and analysis/gradcam.md.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pretrainlab.analysis.attention import captured_inputs, tokens_to_grid, vit_of
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
    from pretrainlab.analysis.probed_model import BackboneClassifier, Weights

log = logging.getLogger(__name__)

NAME = "gradcam"
Target = Literal["predicted", "label"]


@dataclass(frozen=True)
class CamForward:
    """One forward of a classifier with its Grad-CAM target layer exposed.

    Attributes:
        logits: (B, K) class logits.
        activations: the target layer's output as the forward used it (part of the logits' graph).
        to_grid: maps `activations` (or a tensor of its shape, e.g. its gradient) to (B, C, h, w).
    """

    logits: Tensor
    activations: Tensor
    to_grid: Callable[[Tensor], Tensor]


def classifier_cam_forward(classifier: BackboneClassifier, images: Tensor) -> CamForward:
    """Run `classifier` on images (B, C, H, W), exposing the backbone's Grad-CAM target layer
    (the last feature map of a CNN, the last block's normalised input tokens of a ViT)."""
    images = images.detach().requires_grad_(True)  # the graph reaches the activations even if weights are frozen
    backbone = classifier.backbone
    vit = vit_of(backbone)
    if vit is None:
        features = backbone(images)
        return CamForward(classifier.head(features.pooled), features.maps[-1], lambda activations: activations)
    with captured_inputs(vit.blocks[-1].attn) as inputs:
        logits = classifier.head(backbone(images).pooled)
    grid = (images.shape[-2] // backbone.patch_size, images.shape[-1] // backbone.patch_size)
    return CamForward(logits, inputs[-1], partial(tokens_to_grid, num_prefix_tokens=backbone.num_prefix_tokens,
                                                  grid=grid))  # fmt: skip


def grad_cam(forward: CamForward, targets: Tensor, size: tuple[int, int]) -> Tensor:
    """Grad-CAM of each image for its target class.

    Args:
        forward: logits (B, K) and target-layer activations of one forward pass.
        targets: (B,) class index per image.
        size: (H, W) of the returned maps.

    Returns:
        (B, H, W) maps in [0, 1] (a map without positive evidence is all zero).
    """
    if targets.shape != forward.logits.shape[:1]:
        raise ValueError(f"expected one target per image, got targets {tuple(targets.shape)} for logits "
                         f"{tuple(forward.logits.shape)}")  # fmt: skip
    chosen = forward.logits.gather(1, targets[:, None].long()).sum()  # images are independent: one backward
    (gradients,) = torch.autograd.grad(chosen, forward.activations, allow_unused=True)
    if gradients is None:
        raise ValueError("Grad-CAM: the logits do not depend on the target layer's activations")
    activations = forward.to_grid(forward.activations.detach())  # (B, C, h, w)
    weights = forward.to_grid(gradients).mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): eq. 1
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))  # (B, 1, h, w): eq. 2
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    return ((cam - low) / (high - low).clamp_min(1e-12)).detach()


def choose_targets(logits: Tensor, labels: Tensor, target: Target) -> Tensor:
    """(B,) target classes: the argmax of the (B, K) logits (`predicted`) or the true labels (`label`)."""
    if target == "predicted":
        return logits.argmax(dim=1)
    if target == "label":
        return labels.long()
    raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")


def plot_gradcam(images: np.ndarray, cams: Tensor, titles: list[str], cam_titles: list[str], path: Path) -> None:
    """Images (B, H, W, 3) in the top row, their (B, H, W) Grad-CAM maps over them below."""
    with saved_figure(path, 2, len(images), figsize=(2.0 * len(images), 4.3)) as (_, axes):
        for index, image in enumerate(images):
            show_image(axes[0][index], image, title=titles[index])
            show_image(axes[1][index], image, cams[index].numpy(), title=cam_titles[index])


def analyze_gradcam(run_dir: Path, weights: Weights = "pretrained", num_images: int = 8,
                    target: Target = "predicted") -> AnalysisSection:  # fmt: skip
    """Grad-CAM of `num_images` evenly spaced val images with the run's linear probe -> plots/gradcam.png;
    the section."""
    from pretrainlab.analysis.probed_model import probed_model

    prepare_run(run_dir)
    probed = probed_model(run_dir, weights)
    images, labels = val_examples(probed.val_loader.dataset, num_images)
    with torch.enable_grad():
        forward = classifier_cam_forward(probed.classifier, images)
    probabilities = forward.logits.detach().softmax(dim=1)  # (B, K)
    predicted = probabilities.argmax(dim=1)
    targets = choose_targets(probabilities, labels, target)
    cams = grad_cam(forward, targets, (images.shape[-2], images.shape[-1]))
    names = probed.class_names
    titles = [f"{names[label]}{'' if label == guess else f' (pred. {names[guess]})'}"
              for label, guess in zip(labels.tolist(), predicted.tolist())]  # fmt: skip
    cam_titles = [f"{names[c]} p={probabilities[i, c]:.2f}" for i, c in enumerate(targets.tolist())]
    plot_gradcam(display_images(images, *probed.config.data.mean_std), cams, titles, cam_titles,
                 figure_path(run_dir, NAME))  # fmt: skip
    is_vit = vit_of(probed.classifier.backbone) is not None
    numbers = {
        "backbone": probed.config.backbone.describe(),
        "linear probe val top-1": f"{probed.probe.top1:.2f}",
        "shown images predicted right": f"{int((predicted == labels).sum())} / {len(labels)}",
        "target layer": "last block's normalised input tokens" if is_vit else "last feature map",
    }
    options = {"weights": weights, "num_images": len(images), "target": target}
    return AnalysisSection(NAME, "Grad-CAM of the linear probe's classes", options, numbers)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    add_weights_argument(parser)
    parser.add_argument("--num-images", type=positive_int, default=8, help="evenly spaced val images shown")
    parser.add_argument("--target", choices=("predicted", "label"), default="predicted",
                        help="class explained: the probe's prediction (default) or the true label")  # fmt: skip


def run_cli(args: argparse.Namespace) -> int:
    section = analyze_gradcam(args.run, args.weights, args.num_images, args.target)
    section_file = section.write(args.run)
    log.info("wrote %s and %s", figure_path(args.run, section.name), section_file)
    return 0
