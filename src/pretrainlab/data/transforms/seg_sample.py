"""One augmented segmentation training sample, before normalisation.

`SegTrainPipeline` stops where MMSeg's `PackSegInputs` does: uint8 image and label. The
normalisation (and MMSeg's padding) happen per batch in `seg_collate.collate_segmentation`,
which writes every sample straight into the batch tensor, as MMSeg's `SegDataPreProcessor`
does. DataLoader workers thus ship 1 byte per pixel and channel instead of 4.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from torch import Tensor

from pretrainlab.data.transforms.photometric import apply_value_map


class SegTrainSample(NamedTuple):
    """image (h, w, C) uint8 BGR(X), C = 1, 3 or 4; value_map (256,) uint8 or None; label (h, w) uint8 (255 = ignore).

    `value_map` is the photometric distortion's trailing brightness / contrast, still to be
    applied to the colour channels (all but a 4th): the collate folds it into the normalisation
    tables, so it costs no pass over the image. `augmented_image()` applies it, for checks and plots.
    """

    image: Tensor
    value_map: Tensor | None
    label: Tensor

    def augmented_image(self) -> np.ndarray:
        """(h, w, C) uint8 BGR(X): the image with `value_map` applied (MMSeg's augmented image)."""
        image = self.image.numpy()
        return image if self.value_map is None else apply_value_map(image, self.value_map.numpy())
