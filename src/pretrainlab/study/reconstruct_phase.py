"""Phase `reconstruct`: what the run's pretrained MAE makes of the first `num_images` images ->
reconstructions.png in the phase folder (`report/reconstructions.py` draws it).

Each image is taken whole (no crop, no flip), with the segment the method's `masks.format` and
`coverage_ratio` choose, and the masking noise of epoch 0: every evaluation of a run masks the
same pixels, so the figures of successive epochs compare directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from pretrainlab.config.schema import Config
    from pretrainlab.run_dir import Phase

FIGURE = "reconstructions.png"


class ReconstructPhaseConfig(PhaseConfig):
    """Reconstructions of `num_images` images by the current pretrained state of a method that reconstructs (MAE)."""

    name: Literal["reconstruct"]
    summary_keys: ClassVar[tuple[str, ...]] = ("reconstructions",)
    num_images: int = Field(4, ge=1)
    images: Path | None = Field(None, description="image folder; relative = under data.root; null = the method's")
    masks: Path | None = Field(None, description="segment mask folder; relative = under data.root; null = the "
                               "method's (its masks.format and coverage_ratio apply; unused by patches)")  # fmt: skip

    def check(self, config: Config, key: str) -> None:
        if not config.method.reconstructs:
            raise ValueError(f"{key}: phase reconstruct needs a method that reconstructs images (mae); "
                             f"method {config.method.name} does not")  # fmt: skip

def to_rgb(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(B, 3, S, S) normalised pixels -> (B, S, S, 3) float RGB in [0, 1] (not clipped)."""
    import torch

    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]  # (3, 1, 1)
    return (images.detach().float().cpu() * std_t + mean_t).permute(0, 2, 3, 1).numpy()


@PHASES.register(ReconstructPhaseConfig)
def run_reconstruct_phase(phase: ReconstructPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    import torch

    from pretrainlab.data.masked_images import collate_masked
    from pretrainlab.report.reconstructions import plot_reconstructions

    started = time.perf_counter()
    config = context.config
    dataset = config.method.masked_images(config, images=phase.images, masks=phase.masks, whole_images=True)
    indices = range(min(phase.num_images, len(dataset)))
    method = context.method("pretrained")
    device = next(method.parameters()).device
    batch = tuple(part.to(device) for part in collate_masked([dataset[(0, index)] for index in indices]))
    was_training = method.training
    method.eval()
    with torch.no_grad():
        images = method.reconstruct(batch)  # each (B, 3 | 1, S, S)
    method.train(was_training)
    mean, std = config.data.mean_std
    path = place.dir / FIGURE
    plot_reconstructions(
        to_rgb(images["target"], mean, std), to_rgb(images["reconstruction"], mean, std),
        images["removed"][:, 0].bool().cpu().numpy(), [dataset.stem(index) for index in indices],
        f"{config.method.name} ({config.method.mask_method} masking) after epoch {context.epoch}", path,
    )  # fmt: skip
    return {
        "epoch": context.epoch,
        "reconstructions": str(path.relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }
