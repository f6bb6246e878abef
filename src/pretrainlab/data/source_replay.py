"""Which labelled source images are replayed beside the target batches of online adaptation (W2).

A buffer of N source images is replayed in one of two ways:
  uniform     the buffer is cycled in a fresh random order per pass;
  rare_class  DAFormer's rare-class sampling (Hoyer et al. 2022, `mmseg/datasets/uda_dataset.py`):
              a class c is drawn with P(c) = softmax((1 - f_c) / T) over the classes present in the
              buffer, f_c the class's share of all labelled pixels (255 excluded), then an image
              uniformly among those holding more than `min_pixels` pixels of c.
Every draw comes from one generator seeded by (seed, step), so the batch of a step does not
depend on what ran before it (a resumed run replays the same images).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

IGNORE_INDEX = 255
ReplayMode = Literal["uniform", "rare_class"]


def class_pixel_counts(label: np.ndarray) -> dict[int, int]:
    """{class: pixels} of one label map (H, W), ignore index excluded, classes with no pixel absent."""
    values, counts = np.unique(label[label != IGNORE_INDEX], return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True)}


@dataclass(frozen=True)
class RareClassTable:
    """Class probabilities and, per class, the images that hold enough of it."""

    classes: list[int]  # ascending total pixel count (DAFormer's order)
    probabilities: np.ndarray  # (C,) sums to 1
    images_with_class: dict[int, list[int]]  # class -> indices into the buffer


def rare_class_table(counts: Sequence[dict[int, int]], temperature: float, min_pixels: int) -> RareClassTable:
    """DAFormer's `get_rcs_class_probs` and `samples_with_class` over per-image pixel counts.

    Classes that no image holds more than `min_pixels` of cannot be drawn: they are left out
    (DAFormer asserts instead), and the probabilities renormalise over the others.
    """
    if temperature <= 0:
        raise ValueError(f"rare-class temperature must be > 0, got {temperature}")
    totals: dict[int, int] = {}
    for image in counts:
        for cls, pixels in image.items():
            totals[cls] = totals.get(cls, 0) + pixels
    images = {cls: [i for i, image in enumerate(counts) if image.get(cls, 0) > min_pixels] for cls in totals}
    classes = [cls for cls in sorted(totals, key=lambda c: (totals[c], c)) if images[cls]]
    if not classes:
        raise ValueError(f"no source image holds more than min_pixels={min_pixels} pixels of any class")
    frequency = np.array([totals[c] for c in classes], dtype=np.float64) / sum(totals.values())
    logits = (1.0 - frequency) / temperature
    probabilities = np.exp(logits - logits.max())
    return RareClassTable(classes, probabilities / probabilities.sum(), {c: images[c] for c in classes})


class ReplaySampler(Sampler[int]):
    """`steps` batches of `batch_size` indices into the source dataset, drawn from `buffer`.

    Args:
        buffer: dataset indices of the N replayed images.
        counts: per buffer image, its {class: pixels} (needed for `rare_class`).
    """

    def __init__(
        self, buffer: Sequence[int], batch_size: int, steps: int, *, mode: ReplayMode = "uniform", seed: int = 0,
        counts: Sequence[dict[int, int]] | None = None, temperature: float = 0.01, min_pixels: int = 3000,
    ) -> None:  # fmt: skip
        if not buffer:
            raise ValueError("the source replay buffer is empty")
        self.buffer, self.batch_size, self.steps, self.mode, self.seed = list(buffer), batch_size, steps, mode, seed
        self.table = None
        if mode == "rare_class":
            if counts is None or len(counts) != len(self.buffer):
                raise ValueError("rare_class replay needs the class pixel counts of every buffer image")
            self.table = rare_class_table(counts, temperature, min_pixels)

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def batch(self, step: int) -> list[int]:
        """The dataset indices of step `step`'s source batch."""
        rng = np.random.default_rng((self.seed, step))
        if self.table is None:
            return [self.buffer[i] for i in self._uniform_positions(step)]
        picks = []
        for _ in range(self.batch_size):
            cls = self.table.classes[rng.choice(len(self.table.classes), p=self.table.probabilities)]
            picks.append(self.buffer[int(rng.choice(self.table.images_with_class[cls]))])
        return picks

    def _uniform_positions(self, step: int) -> list[int]:
        """Positions step·B ... step·B + B − 1 of the endless sequence of per-pass permutations."""
        size = len(self.buffer)
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [int(np.random.default_rng((self.seed, position // size)).permutation(size)[position % size])
                for position in positions]  # fmt: skip

    def __iter__(self) -> Iterator[int]:
        for step in range(self.steps):
            yield from self.batch(step)


def buffer_indices(num_images: int, size: int | None, seed: int) -> list[int]:
    """The first `size` images of a seeded permutation of the source set (all with None), sorted."""
    if size is None or size >= num_images:
        return list(range(num_images))
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(num_images)[:size])

