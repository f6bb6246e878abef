"""Procedural datasets written in real on-disk layouts, so every loader is exercised
without a download (DESIGN.md, "Embedded default").

Layout under `out/`:

    classification/{train,val}/<class>/<idx>.png        ImageFolder; one large shape per image (see below)
    classification/classes.json                         {"classes": [...]}
    segmentation/images/{training,validation}/<idx>.jpg       ADE20k layout
    segmentation/annotations/{training,validation}/<idx>.png  uint8; 0 = other, v in 1..C = classes[v-1]
    segmentation/instances/{training,validation}/<idx>.npz    SAM-style: masks (K, H, W) bool, areas, class_ids
    segmentation/sam_masks/{training,validation}/<idx>.json   the same masks as SAM's automatic mask generator
                                                              writes them: COCO RLE records (formats/masks.py)
    segmentation/sam_png/{training,validation}/<idx>/         the same masks as SAM's amg.py folder:
                                                              <i>.png (mask x 255) + metadata.csv
    segmentation/depth/{training,validation}/<idx>.png        uint16 depth in millimetres
    segmentation/classes.json                           classes, palette, stuff/thing names
    cifar-10-batches-py/                                with `cifar_layout`: the classification images again, as
                                                        CIFAR-10 python batches (formats/cifar.py)
    detection/{train,val}/<idx>.png                     with `num_detection_*`: COCO detection set (see below)
    detection/annotations/instances_{train,val}.json    its boxes, COCO JSON (formats/crops.py)
    synthetic_complete.json                             written last: the parameters (see `synthetic_is_complete`)

`classification_format` sets how classification images are stored: `"rgb8"` (the default)
as 8-bit RGB PNGs; `"gray16"` as 16-bit single-channel PNGs, like a thermal camera's: the ITU-R
601 luminance of the rendered image mapped into the narrow band `GRAY16_BAND` of raw values
(20000..28000, of 0..65535) plus Gaussian sensor noise (sigma `GRAY16_NOISE`), so reading them
with `uint16_scaling="window", intensity_window=GRAY16_BAND` gives the full 0..255 range where
`"full"` would give about 78..109.

Classification images follow the recipe that was measured to be learnable by SSL at
32 px: ONE large shape (diameter 60-90 % of the image) at a random position, rotation
and brightness over a random two-tone gradient, 30 % of the time with a striped or dotted
region, plus mild lighting and noise. The label is the shape; tones are tinted greys
drawn independently of it (the object's brightness is only forced away from the
background's), so colour and background carry no label information.

Segmentation scenes hold sky / ground / optional brick wall regions (told apart by
texture and position, not colour: every region's colours are random), an optional
unlabelled clutter blob (value 0, ignored under `reduce_zero_label`) and 1-2 large shapes
(diameter 40-64 % of the scene). Depth is consistent with occlusion: ground gets
farther towards the horizon, a wall stands where it meets the ground, and every shape is
nearer than the background anywhere in its bounding box and than the shapes it hides
(shapes are painted far to near).

Detection images (`detection_image_size`, 8-bit RGB) hold 1-3 vividly coloured shapes over a
two-tone gradient, apart from each other, with their tight boxes: the first, of class
`index % num_classes` (diameter 44-60 % of the image, the others 16-32 %), has the largest box,
so every class has crops in a split of at least `num_classes` images, with `crops: largest` too.

Every image is rendered from its own `np.random.default_rng((seed, split, index))`, so
the files are byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pretrainlab.data.formats.cifar import LAYOUTS as CIFAR_LAYOUTS
from pretrainlab.data.formats.cifar import write_cifar10
from pretrainlab.data.formats.crops import write_coco
from pretrainlab.data.formats.masks import write_png_stack, write_sam_json
from pretrainlab.data.images import read_image

log = logging.getLogger(__name__)

FORMAT_VERSION = 5  # 5: SAM-layout mask sets (sam_masks/, sam_png/)
MARKER_NAME = "synthetic_complete.json"
ClassificationFormat = Literal["rgb8", "gray16"]
CLASSIFICATION_FORMATS: tuple[str, ...] = ("rgb8", "gray16")
GRAY16_BAND: tuple[int, int] = (20000, 28000)  # raw values of luminance 0 and 255
GRAY16_NOISE = 20.0  # standard deviation of the sensor noise, raw values (0.64 grey levels across the band)
# Parameters added to the marker after format 4 was first written, with the value an older marker means.
_MARKER_DEFAULTS: dict[str, object] = {
    "classification_format": "rgb8", "cifar_layout": False, "num_detection_train": 0, "num_detection_val": 0,
    "detection_image_size": 96,
}  # fmt: skip
SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "cross", "ring", "star", "bar", "diamond", "crescent", "arrow",
)  # fmt: skip
STUFF_CLASSES: tuple[str, ...] = ("sky", "ground", "wall")
CLASSIFICATION_SPLITS: tuple[str, ...] = ("train", "val")
SEGMENTATION_SPLITS: tuple[str, ...] = ("training", "validation")
DETECTION_SPLITS: tuple[str, ...] = ("train", "val")
SKY_DEPTH_MM = 60000
_SUPERSAMPLE = 4
_FAR_COLOUR_DISTANCE = 110.0
_FAR_LUMINANCE = 70.0
_TINT = 30.0
_SEG_SHAPE_RADIUS = (0.2, 0.32)  # fraction of the scene size: diameters 40-64 %
_SEG_MAX_SHAPES = 2
_DET_FIRST_RADIUS = (0.22, 0.3)  # fraction of the image: the first (largest) shape
_DET_OTHER_RADIUS = (0.08, 0.16)
_DET_MAX_OTHERS = 2


def _circle(radius: float, center: tuple[float, float] = (0.0, 0.0), num_points: int = 48) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def _regular(num_points: int, radii: tuple[float, ...]) -> np.ndarray:
    angles = np.pi / 2 + np.arange(num_points) * 2.0 * np.pi / num_points
    scale = np.resize(np.asarray(radii), num_points)
    return np.stack([scale * np.cos(angles), scale * np.sin(angles)], axis=1)


def _shape_table() -> dict[str, list[tuple[np.ndarray, int]]]:
    """Each shape as polygons (x, y) painted in order with fill 255 (ink) or 0 (hole)."""
    arm = 0.3
    cross = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1),
             (-arm, -1), (-arm, -arm), (-1, -arm), (-1, arm), (-arm, arm), (-arm, 1)]  # fmt: skip
    arrow = [(-1, -0.18), (0.2, -0.18), (0.2, -0.55), (1, 0), (0.2, 0.55), (0.2, 0.18), (-1, 0.18)]
    table = {
        "circle": [(_circle(1.0), 255)],
        "square": [(np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64), 255)],
        "triangle": [(_regular(3, (1.0,)), 255)],
        "cross": [(np.array(cross, dtype=np.float64), 255)],
        "ring": [(_circle(1.0), 255), (_circle(0.55), 0)],
        "star": [(_regular(10, (1.0, 0.42)), 255)],
        "bar": [(np.array([(-1, -0.28), (1, -0.28), (1, 0.28), (-1, 0.28)], dtype=np.float64), 255)],
        "diamond": [(np.array([(-1, 0), (0, -0.55), (1, 0), (0, 0.55)], dtype=np.float64), 255)],
        "crescent": [(_circle(1.0), 255), (_circle(0.85, (0.45, 0.0)), 0)],
        "arrow": [(np.array(arrow, dtype=np.float64), 255)],
    }
    # Normalise so every shape's ink reaches radius 1: `radius` then means half the extent.
    for polygons in table.values():
        reach = max(np.linalg.norm(points, axis=1).max() for points, fill in polygons if fill)
        for points, _ in polygons:
            points /= reach
    return table


_SHAPES = _shape_table()


@dataclass(frozen=True)
class SyntheticSummary:
    """What `write_synthetic_dataset` wrote (also the content of the completion marker)."""

    root: str
    seed: int
    num_classes: int
    image_size: int
    num_train: int
    num_val: int
    seg_image_size: int
    num_seg_train: int
    num_seg_val: int
    classification_classes: list[str]
    segmentation_classes: list[str]
    classification_format: ClassificationFormat
    cifar_layout: bool
    num_detection_train: int
    num_detection_val: int
    detection_image_size: int
    format_version: int
    seconds: float


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (S, S) float32 in pixels."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _shape_alpha(shape: str, center: np.ndarray, radius: float, angle: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (S, S) float32 in [0, 1] of a rotated, scaled shape."""
    canvas = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), dtype=np.uint8)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for polygon, fill in _SHAPES[shape]:
        points = polygon @ rotation.T * radius + center  # (K, 2) x, y in pixels
        fixed = np.rint(points * (_SUPERSAMPLE * 4)).astype(np.int32)  # 2 fractional bits (shift=2)
        cv2.fillPoly(canvas, [fixed], fill, lineType=cv2.LINE_8, shift=2)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _far_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A uniformly random RGB colour at least `_FAR_COLOUR_DISTANCE` from every colour in `avoid`
    (the farthest of 32 candidates when none is)."""
    candidates = rng.uniform(0.0, 255.0, size=(32, 3))
    squared = ((candidates[:, None, :] - np.asarray(avoid)[None]) ** 2).sum(axis=2).min(axis=1)  # (32,)
    far = np.flatnonzero(squared >= _FAR_COLOUR_DISTANCE**2)
    return candidates[far[0] if far.size else int(np.argmax(squared))]


@lru_cache(maxsize=8)
def _centred_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) / S - 0.5, scaled by 1 / sqrt(2): each (S, S) float32 in [-0.5, 0.5]."""
    yy, xx = _grid(size)
    scale = np.float32(1.0 / (size * np.sqrt(2.0)))
    return (yy - size / 2) * scale, (xx - size / 2) * scale


def _projection(rng: np.random.Generator, size: int) -> np.ndarray:
    """Position along a random direction, (S, S) float32 in [0, 1]."""
    yy, xx = _centred_grid(size)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle)) + np.float32(0.5)


def _wrap(values: np.ndarray, period: float) -> np.ndarray:
    """`values` modulo `period` (3x faster than np.mod on float32)."""
    return values - np.float32(period) * np.floor(values * np.float32(1.0 / period))


@lru_cache(maxsize=4)
def _noise_bank(num_values: int) -> np.ndarray:
    """Fixed standard-normal samples, 4x `num_values` (at least 2^16) float32; each image takes a random
    window (drawing fresh Gaussian noise per image cost a fifth of the render time)."""
    return np.random.default_rng(12345).standard_normal(max(1 << 16, 4 * num_values), dtype=np.float32)


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes or dots inside a random half-plane: bool (S, S)."""
    yy, xx = _grid(size)
    if rng.random() < 0.5:
        period = rng.uniform(4.0, 8.0)
        angle = rng.uniform(0.0, np.pi)
        marks = _wrap(xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle)), period) < period / 2
    else:
        period = rng.uniform(5.0, 8.0)
        dot_radius = rng.uniform(1.0, 2.0)
        marks = (_wrap(xx, period) - period / 2) ** 2 + (_wrap(yy, period) - period / 2) ** 2 < dot_radius**2
    anchor, angle = rng.uniform(0.2, 0.8, size=2) * size, rng.uniform(0.0, 2.0 * np.pi)
    region = (xx - anchor[0]) * np.cos(angle) + (yy - anchor[1]) * np.sin(angle) > 0
    return marks & region


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Mild lighting gradient, brightness and Gaussian noise; float (S, S, 3) -> uint8."""
    size = image.shape[0]
    slope = rng.uniform(-0.2, 0.2)
    gain = np.float32(rng.uniform(0.85, 1.15))
    lighting = gain * (_projection(rng, size) * np.float32(2 * slope) + np.float32(1 - slope))  # (S, S)
    bank = _noise_bank(image.size)
    start = int(rng.integers(0, bank.size - image.size))
    noise = bank[start : start + image.size].reshape(image.shape) * np.float32(rng.uniform(2.0, 5.0))
    return np.clip(image * lighting[:, :, None] + noise, 0.0, 255.0).astype(np.uint8)


def _tinted_grey(rng: np.random.Generator, luminance: float) -> np.ndarray:
    """A low-saturation RGB colour: grey `luminance` plus a tint of at most `_TINT` per channel, (3,) float32."""
    return np.clip(luminance + rng.uniform(-_TINT, _TINT, size=3), 0.0, 255.0).astype(np.float32)


def _far_luminance(rng: np.random.Generator, avoid: list[float]) -> float:
    """A luminance in [0, 255] at least `_FAR_LUMINANCE` from each of `avoid` (the farthest of 32 draws if none is)."""
    candidates = rng.uniform(0.0, 255.0, size=32)
    distance = np.abs(candidates[:, None] - np.asarray(avoid)[None]).min(axis=1)  # (32,)
    far = np.flatnonzero(distance >= _FAR_LUMINANCE)
    return float(candidates[far[0] if far.size else int(np.argmax(distance))])


def render_classification_image(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One classification image of shape `SHAPE_CLASSES[label]`.

    Colours are tinted greys: what tells two images apart is shape, size, pose, pattern and
    brightness, not a vivid colour (saturated colours gave self-supervised features a shortcut
    that kNN on shape classes then paid for: 34 % top-1 on colour images vs 45 % on the same
    images in greyscale, quickstart model, format 3).

    Returns:
        image (S, S, 3) uint8 RGB and the shape's coverage (S, S) float32 in [0, 1].
    """
    low_luminance = rng.uniform(0.0, 255.0)
    high_luminance = float(np.clip(low_luminance + rng.uniform(-90.0, 90.0), 0.0, 255.0))
    low, high = _tinted_grey(rng, low_luminance), _tinted_grey(rng, high_luminance)
    background = low + (high - low) * _projection(rng, size)[:, :, None]  # (S, S, 3)
    avoid = [low_luminance, high_luminance]
    if rng.random() < 0.3:
        pattern_luminance = rng.uniform(0.0, 255.0)
        background = np.where(_pattern(rng, size)[:, :, None], _tinted_grey(rng, pattern_luminance), background)
        avoid.append(pattern_luminance)
    colour = _tinted_grey(rng, _far_luminance(rng, avoid))
    radius = rng.uniform(0.3, 0.45) * size  # diameter 60-90 % of the image
    center = rng.uniform(radius, size - radius, size=2)
    alpha = _shape_alpha(SHAPE_CLASSES[label], center, radius, rng.uniform(0.0, 2.0 * np.pi), size)[:, :, None]
    slope = rng.uniform(-0.12, 0.12)
    shading = _projection(rng, size)[:, :, None] * np.float32(2 * slope) + np.float32(1 - slope)
    image = background * (1.0 - alpha) + colour * shading * alpha
    return _finish(rng, image), alpha[:, :, 0]


def _stuff_texture(rng: np.random.Generator, stuff: str, size: int) -> np.ndarray:
    """Full-image texture (S, S, 3) float for one stuff class; the texture identifies the class."""
    yy, xx = _grid(size)
    if stuff == "sky":  # smooth vertical gradient of a random colour
        top = rng.uniform(0.0, 255.0, size=3)
        bottom = np.clip(top + rng.uniform(-60.0, 60.0, size=3), 0.0, 255.0)
        return top + (bottom - top) * (yy / size)[:, :, None]
    base = rng.uniform(20.0, 200.0, size=3)
    if stuff == "ground":  # grainy: blotches at 1/8 resolution plus pixel grain
        blotches = cv2.resize(rng.normal(0.0, 18.0, size=(size // 8, size // 8, 3)), (size, size))
        return base + blotches + rng.normal(0.0, 14.0, size=(size, size, 3))
    # wall: bricks, mortar lines every `height` rows and staggered every `width` columns
    height, width = rng.integers(5, 8), rng.integers(9, 14)
    row = (yy // height).astype(np.int32)
    mortar = (_wrap(yy, height) < 1.2) | (_wrap(xx + (row % 2) * width / 2, width) < 1.2)
    mortar_colour = np.clip(base + rng.choice([-1.0, 1.0]) * rng.uniform(60.0, 90.0), 0.0, 255.0)
    return np.where(mortar[:, :, None], mortar_colour, base)


def _ground_depth(horizon: np.ndarray, size: int) -> np.ndarray:
    """Ground depth (S, S) float in mm: 3 m at the bottom row, growing as 1 / (rows below the horizon)."""
    yy, _ = _grid(size)
    below = np.maximum(yy - horizon[None, :], 0.5)
    return np.minimum(3000.0 * (size - horizon[None, :]) / below, 50000.0)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stuff regions: image (S, S, 3) float, owner map (S, S) int (index into STUFF_CLASSES), depth (S, S) float."""
    yy, xx = _grid(size)
    horizon = rng.uniform(0.3, 0.6) * size + rng.uniform(-0.15, 0.15) * (xx[0] - size / 2)  # (S,) per column
    owner = np.where(yy < horizon[None, :], 0, 1).astype(np.int32)
    ground_depth = _ground_depth(horizon, size)
    depth = np.where(owner == 0, float(SKY_DEPTH_MM), ground_depth)
    if rng.random() < 0.6:
        left = rng.uniform(0.0, 0.5) * size
        right = left + rng.uniform(0.3, 0.5) * size
        top = rng.uniform(0.05, 0.2) * size
        bottom = float(horizon.max()) + rng.uniform(0.05, 0.2) * size
        wall = (xx >= left) & (xx < right) & (yy >= top) & (yy < bottom)
        # The wall stands where it meets the ground (its bottom row), so it is nearer than all it hides.
        stand_row = min(int(bottom), size - 1)
        owner[wall] = 2
        depth[wall] = ground_depth[stand_row, wall.any(axis=0)].min()
    image = np.zeros((size, size, 3), dtype=np.float64)
    for index, stuff in enumerate(STUFF_CLASSES):
        region = owner == index
        if region.any():
            image[region] = _stuff_texture(rng, stuff, size)[region]
    return image, owner, depth


def render_segmentation_scene(rng: np.random.Generator, num_classes: int, size: int) -> dict[str, np.ndarray]:
    """One segmentation scene.

    Returns:
        image (S, S, 3) uint8 RGB; label (S, S) uint8 (0 other, 1..3 stuff, 4.. shapes);
        depth (S, S) uint16 mm; masks (K, S, S) bool visible region per instance;
        areas (K,) int64; class_ids (K,) int64 (label value of each instance).
    """
    image, owner, depth = _background(rng, size)
    class_ids = [1 + index for index in range(len(STUFF_CLASSES))]  # owner value -> label value
    if rng.random() < 0.5:  # unlabelled clutter: blocky colour noise inside an ellipse
        yy, xx = _grid(size)
        center, axes = rng.uniform(0.15, 0.85, size=2) * size, rng.uniform(0.08, 0.16, size=2) * size
        blob = ((xx - center[0]) / axes[0]) ** 2 + ((yy - center[1]) / axes[1]) ** 2 < 1.0
        blocks = rng.uniform(0.0, 255.0, size=(size // 4, size // 4, 3))
        noise = cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST)
        image[blob] = noise[blob]
        owner[blob] = len(class_ids)
        class_ids.append(0)
    placed: list[tuple[int, np.ndarray, float]] = []  # (label value, coverage, depth)
    covered = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(1, _SEG_MAX_SHAPES + 1))):
        label = int(rng.integers(num_classes))
        for _attempt in range(10):
            radius = rng.uniform(*_SEG_SHAPE_RADIUS) * size
            center = rng.uniform(radius, size - radius, size=2)
            alpha = _shape_alpha(SHAPE_CLASSES[label], center, radius, rng.uniform(0.0, 2.0 * np.pi), size)
            inside = alpha >= 0.5
            if inside.any() and (inside & covered).sum() <= 0.25 * inside.sum():
                covered |= inside
                rows, columns = np.nonzero(inside)
                behind = depth[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1].min()  # bounding box
                placed.append((len(STUFF_CLASSES) + 1 + label, alpha, rng.uniform(0.4, 0.9) * behind))
                break
    label_of_owner = np.asarray(class_ids)
    for value, alpha, object_depth in sorted(placed, key=lambda item: -item[2]):  # far to near
        inside = alpha >= 0.5
        colour = _far_colour(rng, [image[inside].mean(axis=0)])
        image = image * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]
        owner[inside] = len(label_of_owner)
        label_of_owner = np.append(label_of_owner, value)
        depth[inside] = object_depth
    masks = owner[None] == np.arange(len(label_of_owner))[:, None, None]  # (K, S, S)
    keep = masks.any(axis=(1, 2))
    return {
        "image": _finish(rng, image),
        "label": label_of_owner[owner].astype(np.uint8),
        "depth": np.rint(depth).astype(np.uint16),
        "masks": masks[keep],
        "areas": masks[keep].sum(axis=(1, 2)).astype(np.int64),
        "class_ids": label_of_owner[keep].astype(np.int64),
    }


def render_detection_image(
    rng: np.random.Generator, first_label: int, num_classes: int, size: int
) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """One detection image: shapes apart from each other over a gradient (module docstring).

    Returns:
        image (S, S, 3) uint8 RGB and [(label, (x, y, w, h))]: each shape's tight box in whole pixels
        (pixels with coverage >= 0.5), the first of class `first_label` and the largest.
    """
    low, high = rng.uniform(0.0, 255.0, size=3), rng.uniform(0.0, 255.0, size=3)
    image = low + (high - low) * _projection(rng, size)[:, :, None]  # (S, S, 3)
    colours = [image.reshape(-1, 3).mean(axis=0)]
    boxes: list[tuple[int, tuple[int, int, int, int]]] = []
    taken = np.zeros((size, size), dtype=bool)
    for number in range(1 + int(rng.integers(0, _DET_MAX_OTHERS + 1))):
        label = first_label if number == 0 else int(rng.integers(num_classes))
        radius = rng.uniform(*(_DET_FIRST_RADIUS if number == 0 else _DET_OTHER_RADIUS)) * size
        center = rng.uniform(radius, size - radius, size=2)
        alpha = _shape_alpha(SHAPE_CLASSES[label], center, radius, rng.uniform(0.0, 2.0 * np.pi), size)
        rows, columns = np.nonzero(alpha >= 0.5)
        if rows.size == 0:
            continue
        x, y = int(columns.min()), int(rows.min())
        box = (x, y, int(columns.max()) + 1 - x, int(rows.max()) + 1 - y)
        first_area = boxes[0][1][2] * boxes[0][1][3] if boxes else 0
        if boxes and (taken[y : y + box[3], x : x + box[2]].any() or box[2] * box[3] >= first_area):
            continue  # boxes stay apart (each holds one whole shape) and smaller than the first
        taken[max(y - 1, 0) : y + box[3] + 1, max(x - 1, 0) : x + box[2] + 1] = True
        colour = _far_colour(rng, colours)
        colours.append(colour)
        image = image * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]
        boxes.append((label, box))
    return _finish(rng, image), boxes


def to_gray16(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor-like 16-bit version of an RGB uint8 (S, S, 3) image: (S, S) uint16, luminance 0..255 mapped
    linearly onto `GRAY16_BAND` plus Gaussian noise of sigma `GRAY16_NOISE` (see the module docstring)."""
    luminance = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (S, S)
    low, high = GRAY16_BAND
    raw = low + luminance * np.float32((high - low) / 255.0)
    raw += rng.standard_normal(raw.shape, dtype=np.float32) * np.float32(GRAY16_NOISE)
    return np.clip(np.rint(raw), 0, 65535).astype(np.uint16)


def _encode(extension: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    if image.ndim == 3:
        image = image[:, :, ::-1]  # RGB -> BGR for OpenCV
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(image), list(params))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {extension}")
    return encoded.tobytes()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed` with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


@dataclass(frozen=True)
class _Task:
    root: Path
    kind: str  # "classification" | "segmentation"
    split: str
    start: int
    stop: int
    seed: int
    num_classes: int
    size: int
    classification_format: ClassificationFormat


def _run_task(task: _Task) -> int:
    cv2.setNumThreads(1)
    split_code = (CLASSIFICATION_SPLITS + SEGMENTATION_SPLITS).index(task.split)
    for index in range(task.start, task.stop):
        rng = np.random.default_rng((task.seed, split_code, index))
        name = f"{index:06d}"
        if task.kind == "classification":
            label = index % task.num_classes
            image, _ = render_classification_image(rng, label, task.size)
            if task.classification_format == "gray16":
                image = to_gray16(rng, image)
            path = task.root / "classification" / task.split / SHAPE_CLASSES[label] / f"{name}.png"
            path.write_bytes(_encode(".png", image))
            continue
        scene = render_segmentation_scene(rng, task.num_classes, task.size)
        seg = task.root / "segmentation"
        jpeg = _encode(".jpg", scene["image"], (cv2.IMWRITE_JPEG_QUALITY, 95))
        (seg / "images" / task.split / f"{name}.jpg").write_bytes(jpeg)
        (seg / "annotations" / task.split / f"{name}.png").write_bytes(_encode(".png", scene["label"]))
        (seg / "depth" / task.split / f"{name}.png").write_bytes(_encode(".png", scene["depth"]))
        instances = {key: scene[key] for key in ("masks", "areas", "class_ids")}
        write_npz(seg / "instances" / task.split / f"{name}.npz", instances)
        write_sam_json(seg / "sam_masks" / task.split / f"{name}.json", scene["masks"])
        write_png_stack(seg / "sam_png" / task.split / name, scene["masks"])
    return task.stop - task.start


def _write_cifar_copy(root: Path, classes: list[str]) -> None:
    """The classification PNGs (8-bit RGB, 32 px) again as CIFAR-10 batches, in file (index) order."""
    splits = {}
    for split in CLASSIFICATION_SPLITS:
        files = sorted((root / "classification" / split).glob("*/*.png"), key=lambda path: path.name)
        images = np.stack([read_image(path) for path in files]) if files else np.zeros((0, 32, 32, 3), np.uint8)
        splits[split] = (images, [classes.index(path.parent.name) for path in files])
    write_cifar10(root / CIFAR_LAYOUTS["cifar10"].folder, train=splits["train"], test=splits["val"],
                  label_names=classes)  # fmt: skip


def _write_detection(root: Path, split: str, count: int, seed: int, classes: list[str], size: int) -> None:
    """`count` detection images of `split` and their COCO file (module docstring)."""
    split_code = len(CLASSIFICATION_SPLITS + SEGMENTATION_SPLITS) + DETECTION_SPLITS.index(split)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng((seed, split_code, index))
        image, boxes = render_detection_image(rng, index % len(classes), len(classes), size)
        name = f"{index:06d}.png"
        (root / "detection" / split / name).write_bytes(_encode(".png", image))
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        for label, box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                "bbox": list(box), "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    write_coco(root / "detection" / "annotations" / f"instances_{split}.json", images, annotations, classes)


def segmentation_palette(num_classes: int) -> list[list[int]]:
    """Fixed RGB colour per label value 1..C (stuff then shapes), evenly spaced hues."""
    num_labels = len(STUFF_CLASSES) + num_classes
    hues = (np.arange(num_labels) * 180 // num_labels).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=1)[None]  # (1, C, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(int).tolist()


def _check(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={value} is not valid; expected an integer {expected}")


def _marker_parameters(summary: SyntheticSummary) -> dict[str, object]:
    parameters = asdict(summary)
    del parameters["root"], parameters["seconds"]
    return parameters


def synthetic_is_complete(out: Path | str, **expected: int | str) -> bool:
    """True when `out` holds a finished generation (its marker is written last) of the current
    format, and every parameter given in `expected` (e.g. `seed=0, num_train=20000`,
    `classification_format="gray16"`) matches."""
    marker = Path(out) / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if recorded.get("format_version") != FORMAT_VERSION:
        return False
    recorded = {**_MARKER_DEFAULTS, **recorded}
    unknown = set(expected) - set(recorded)
    if unknown:
        raise ValueError(f"unknown synthetic parameter(s) {sorted(unknown)}; known: {sorted(recorded)}")
    return all(recorded[key] == value for key, value in expected.items())


def write_synthetic_dataset(
    out: Path | str,
    *,
    seed: int = 0,
    num_classes: int = 8,
    image_size: int = 32,
    num_train: int = 20000,
    num_val: int = 2000,
    seg_image_size: int = 64,
    num_seg_train: int = 1000,
    num_seg_val: int = 200,
    classification_format: ClassificationFormat = "rgb8",
    cifar_layout: bool = False,
    num_detection_train: int = 0,
    num_detection_val: int = 0,
    detection_image_size: int = 96,
    workers: int = 2,
) -> SyntheticSummary:
    """Write the classification and segmentation datasets under `out` (see the module docstring).

    `classification_format`: `"rgb8"` (8-bit RGB PNGs) or `"gray16"` (16-bit single-channel PNGs in
    the raw band `GRAY16_BAND`); the segmentation images do not depend on it. `cifar_layout` also
    writes the classification images as CIFAR-10 batches (rgb8 at 32 px only); `num_detection_train`
    / `num_detection_val` images of `detection_image_size` px make the COCO detection set.

    Any earlier `classification/`, `segmentation/`, `detection/` and CIFAR folders under `out` are
    removed first; the marker `synthetic_complete.json` is written last, so an interrupted run is
    detected by `synthetic_is_complete` and redone.
    """
    _check("num_classes", num_classes, 2, len(SHAPE_CLASSES))
    _check("image_size", image_size, 16)
    _check("seg_image_size", seg_image_size, 32)
    _check("detection_image_size", detection_image_size, 32)
    counts = {"num_train": num_train, "num_val": num_val, "num_seg_train": num_seg_train, "num_seg_val": num_seg_val,
              "num_detection_train": num_detection_train, "num_detection_val": num_detection_val}  # fmt: skip
    for name, count in counts.items():
        _check(name, count, 0)
    _check("workers", workers, 1)
    if classification_format not in CLASSIFICATION_FORMATS:
        raise ValueError(
            f"classification_format={classification_format!r} is not valid; expected one of {CLASSIFICATION_FORMATS}"
        )
    if cifar_layout and (image_size != 32 or classification_format != "rgb8"):
        raise ValueError(f"cifar_layout writes 32x32 8-bit RGB rows: it needs image_size=32 and classification_format="
                         f"'rgb8'; got {image_size}, {classification_format!r}")  # fmt: skip
    root = Path(out)
    started = time.perf_counter()
    (root / MARKER_NAME).unlink(missing_ok=True)
    for folder in ("classification", "segmentation", "detection", CIFAR_LAYOUTS["cifar10"].folder):
        shutil.rmtree(root / folder, ignore_errors=True)
    classes = list(SHAPE_CLASSES[:num_classes])
    seg_classes = list(STUFF_CLASSES) + classes
    for split in CLASSIFICATION_SPLITS:
        for name in classes:
            (root / "classification" / split / name).mkdir(parents=True, exist_ok=True)
    for folder in ("images", "annotations", "instances", "depth", "sam_masks", "sam_png"):
        for split in SEGMENTATION_SPLITS:
            (root / "segmentation" / folder / split).mkdir(parents=True, exist_ok=True)
    (root / "classification" / "classes.json").write_text(json.dumps({"classes": classes}, indent=1))
    seg_meta = {
        "classes": seg_classes,
        "palette": segmentation_palette(num_classes),
        "stuff_classes": list(STUFF_CLASSES),
        "thing_classes": classes,
        "reduce_zero_label": True,
        "depth_unit": "mm",
    }
    (root / "segmentation" / "classes.json").write_text(json.dumps(seg_meta, indent=1))
    detection_counts = {"train": num_detection_train, "val": num_detection_val}
    for split in DETECTION_SPLITS:
        if detection_counts[split]:
            (root / "detection" / split).mkdir(parents=True, exist_ok=True)

    tasks: list[_Task] = []
    plan = [  # (kind, split, count, image size, images per task)
        ("classification", "train", num_train, image_size, 1000),
        ("classification", "val", num_val, image_size, 1000),
        ("segmentation", "training", num_seg_train, seg_image_size, 100),
        ("segmentation", "validation", num_seg_val, seg_image_size, 100),
    ]
    for kind, split, count, size, chunk in plan:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            tasks.append(_Task(root, kind, split, start, stop, seed, num_classes, size, classification_format))
    if workers == 1:
        written = sum(_run_task(task) for task in tasks)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            written = sum(pool.imap_unordered(_run_task, tasks))
    if cifar_layout:
        _write_cifar_copy(root, classes)
    for split in DETECTION_SPLITS:
        if detection_counts[split]:
            _write_detection(root, split, detection_counts[split], seed, classes, detection_image_size)
            written += detection_counts[split]
    summary = SyntheticSummary(
        root=str(root), seed=seed, num_classes=num_classes, image_size=image_size, num_train=num_train, num_val=num_val,
        seg_image_size=seg_image_size, num_seg_train=num_seg_train, num_seg_val=num_seg_val,
        classification_classes=classes, segmentation_classes=seg_classes,
        classification_format=classification_format, cifar_layout=cifar_layout,
        num_detection_train=num_detection_train, num_detection_val=num_detection_val,
        detection_image_size=detection_image_size, format_version=FORMAT_VERSION,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    (root / MARKER_NAME).write_text(json.dumps(_marker_parameters(summary), indent=1))
    log.info("wrote %d synthetic images under %s in %.1f s", written, root, summary.seconds)
    return summary
