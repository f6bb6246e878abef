"""The MAE reconstruction figure: one row per image, columns masked input | reconstruction | original.

The original is also the target (MAE predicts the pixels of the image it masked), so it is shown
once. What the encoder did not see is painted a flat grey in the masked input.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HIDDEN_GREY = 0.6


def plot_reconstructions(
    original: np.ndarray, reconstruction: np.ndarray, removed: np.ndarray, names: list[str], title: str, path: Path
) -> None:
    """Write the figure to `path` (PNG).

    Args:
        original: (N, H, W, 3) RGB in [0, 1] (clipped), the input image and the target.
        reconstruction: (N, H, W, 3) RGB, the model's pixels where removed, the original elsewhere.
        removed: (N, H, W) bool, the pixels the model had to reconstruct.
        names: N row labels (e.g. image file names).
        title: the figure's title.
    """
    if not (original.shape == reconstruction.shape and original.shape[:3] == removed.shape and original.ndim == 4):
        raise ValueError(f"expected original and reconstruction (N, H, W, 3) and removed (N, H, W); got "
                         f"{original.shape}, {reconstruction.shape}, {removed.shape}")  # fmt: skip
    if len(names) != len(original):
        raise ValueError(f"{len(names)} row names for {len(original)} images")
    masked = np.where(removed[..., None], HIDDEN_GREY, original)  # (N, H, W, 3)
    columns = {"masked input": masked, "reconstruction": reconstruction, "original (target)": original}
    rows = len(original)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 2.2 * rows + 0.4), squeeze=False)
    for row in range(rows):
        for col, (column, images) in enumerate(columns.items()):
            ax = axes[row][col]
            ax.imshow(np.clip(images[row], 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(column, fontsize=9)
        axes[row][0].set_ylabel(names[row], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
