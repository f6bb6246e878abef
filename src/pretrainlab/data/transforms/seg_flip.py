"""Random horizontal flip of an image and its label map (MMSegmentation `RandomFlip(prob=0.5)`).

mmcv draws the direction with `np.random.choice([dir, None], p=[prob, 1 − prob])`, i.e. it
flips when a uniform draw falls below `prob`; here the same rule uses `rng.random() < prob`.
"""

from __future__ import annotations

import cv2
import numpy as np


def sample_flip(rng: np.random.Generator, prob: float = 0.5) -> bool:
    """Whether to flip: one `rng.random()` draw, True with probability `prob`."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"flip probability must be in [0, 1], got {prob}")
    return bool(rng.random() < prob)


def hflip(array: np.ndarray) -> np.ndarray:
    """Mirror an (H, W) or (H, W, C) array left-right; returns a new C-contiguous array."""
    if array.ndim == 3 and array.shape[2] > 4:  # cv2.flip handles at most 4 channels
        return np.ascontiguousarray(array[:, ::-1])
    return cv2.flip(array, 1).reshape(array.shape)  # cv2 drops the axis of (H, W, 1)


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Flip `image` (H, W, C) and `label` (H, W) together with probability `prob`."""
    if sample_flip(rng, prob):
        return hflip(image), hflip(label)
    return image, label
