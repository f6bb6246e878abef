"""Synthetic dataset: layout, determinism, completion marker, label / instance / depth consistency,
that only the shape (not colour) predicts the classification label, and the 16-bit grey format."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pretrainlab.data.images import read_image
from pretrainlab.data.synthetic import (
    GRAY16_BAND,
    MARKER_NAME,
    SHAPE_CLASSES,
    SKY_DEPTH_MM,
    STUFF_CLASSES,
    render_classification_image,
    synthetic_is_complete,
    write_synthetic_dataset,
)

SMALL = {"num_classes": 8, "num_train": 64, "num_val": 16, "num_seg_train": 8, "num_seg_val": 4}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(base / "seed0", seed=0, workers=1, **SMALL)
    write_synthetic_dataset(base / "seed0_pool", seed=0, workers=2, **SMALL)
    write_synthetic_dataset(base / "seed1", seed=1, workers=1, **SMALL)
    return {"seed0": base / "seed0", "seed0_pool": base / "seed0_pool", "seed1": base / "seed1"}


def _files(root: Path) -> dict[str, bytes]:
    files = [path for path in sorted(root.rglob("*")) if path.is_file() and path.name != MARKER_NAME]
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


def _without_mask_pngs(files: dict[str, bytes]) -> dict[str, bytes]:
    """`files` without sam_png's <i>.png masks, whose number varies with the scene."""
    masks = {name for name in files if name.startswith("segmentation/sam_png/") and name.endswith(".png")}
    return {name: data for name, data in files.items() if name not in masks}


def test_same_seed_gives_identical_bytes_whatever_the_workers(roots: dict[str, Path]) -> None:
    single, pooled = _files(roots["seed0"]), _files(roots["seed0_pool"])
    assert len(_without_mask_pngs(single)) == 64 + 16 + (8 + 4) * 6 + 2  # 6: jpg, label, npz, depth, json, csv
    assert single == pooled


def test_other_seed_gives_other_images_with_the_same_layout(roots: dict[str, Path]) -> None:
    first, second = _without_mask_pngs(_files(roots["seed0"])), _without_mask_pngs(_files(roots["seed1"]))
    assert first.keys() == second.keys()
    changed = [name for name in first if name.endswith((".png", ".jpg", ".npz", ".json", ".csv"))
               and first[name] != second[name]]  # fmt: skip
    assert len(changed) == 64 + 16 + (8 + 4) * 6


def test_layout_counts_and_class_files(roots: dict[str, Path]) -> None:
    root = roots["seed0"]
    classes = json.loads((root / "classification" / "classes.json").read_text())["classes"]
    assert classes == list(SHAPE_CLASSES[:8])
    for split, count in (("train", 64), ("val", 16)):
        assert sorted(p.name for p in (root / "classification" / split).iterdir()) == sorted(classes)
        for name in classes:  # balanced: label = index % num_classes
            assert len(list((root / "classification" / split / name).glob("*.png"))) == count // 8
        image = cv2.imread(str(next((root / "classification" / split / "circle").glob("*.png"))), cv2.IMREAD_UNCHANGED)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    meta = json.loads((root / "segmentation" / "classes.json").read_text())
    assert meta["classes"] == ["sky", "ground", "wall", *classes]
    assert len(meta["palette"]) == 11 and all(len(colour) == 3 for colour in meta["palette"])
    for split, count in (("training", 8), ("validation", 4)):
        for folder, suffix in (("images", ".jpg"), ("annotations", ".png"), ("instances", ".npz"), ("depth", ".png"),
                               ("sam_masks", ".json"), ("sam_png", "")):  # fmt: skip
            stems = sorted(p.stem for p in (root / "segmentation" / folder / split).glob(f"*{suffix}"))
            assert stems == [f"{index:06d}" for index in range(count)]
    depth = cv2.imread(str(root / "segmentation" / "depth" / "training" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (64, 64)
    label = Image.open(root / "segmentation" / "annotations" / "training" / "000000.png")
    assert label.mode == "L" and label.size == (64, 64)


def test_completion_marker_records_parameters_and_is_written_last(tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert not synthetic_is_complete(root)
    tiny = {"seed": 3, "workers": 1, "num_classes": 4, "num_val": 4, "num_seg_train": 1, "num_seg_val": 1}
    write_synthetic_dataset(root, num_train=12, **tiny)
    assert synthetic_is_complete(root)
    assert synthetic_is_complete(root, seed=3, num_train=12)
    assert not synthetic_is_complete(root, seed=0)
    with pytest.raises(ValueError, match="unknown synthetic parameter"):
        synthetic_is_complete(root, num_trian=12)
    (root / MARKER_NAME).unlink()  # as after an interruption
    assert not synthetic_is_complete(root)
    write_synthetic_dataset(root, num_train=4, **tiny)
    assert len(list((root / "classification" / "train").rglob("*.png"))) == 4  # stale files removed
    assert synthetic_is_complete(root, num_train=4)


@pytest.mark.parametrize(
    ("name", "value"), [("num_classes", 11), ("num_classes", 1), ("image_size", 8), ("workers", 0), ("num_train", -1)]
)
def test_invalid_parameters_raise(tmp_path: Path, name: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{name}={value}"):
        write_synthetic_dataset(tmp_path, **{name: value})


def test_segmentation_labels_instances_and_depth_agree(roots: dict[str, Path]) -> None:
    seg = roots["seed0"] / "segmentation"
    num_stuff = len(STUFF_CLASSES)
    things_seen = 0
    for split, count in (("training", 8), ("validation", 4)):
        for index in range(count):
            name = f"{index:06d}"
            label = np.array(Image.open(seg / "annotations" / split / f"{name}.png"))
            depth = cv2.imread(str(seg / "depth" / split / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
            with np.load(seg / "instances" / split / f"{name}.npz") as instances:
                masks, areas, class_ids = instances["masks"], instances["areas"], instances["class_ids"]
            assert masks.dtype == bool and masks.shape[1:] == (64, 64)
            np.testing.assert_array_equal(masks.sum(axis=0), 1)  # visible regions partition the image
            np.testing.assert_array_equal(areas, masks.sum(axis=(1, 2)))
            assert label.max() <= num_stuff + 8
            for mask, class_id in zip(masks, class_ids):
                assert np.all(label[mask] == class_id)  # the label map carries each region's class
            assert np.all(depth[label == 1] == SKY_DEPTH_MM)
            assert len(np.unique(depth[label == 3])) <= 1 and np.all(depth[label == 3] < SKY_DEPTH_MM)  # flat wall
            stuff = (label >= 1) & (label <= num_stuff)
            for mask, class_id in zip(masks, class_ids):
                if class_id <= num_stuff:
                    continue
                things_seen += 1
                assert len(np.unique(depth[mask])) == 1
                rows, columns = np.nonzero(mask)
                box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
                assert depth[mask][0] < depth[box][stuff[box]].min(initial=SKY_DEPTH_MM + 1)  # nearer than background
            ground = np.where(label == 2, depth, -1)
            for column in ground.T:  # ground gets nearer towards the bottom of the image
                values = column[column >= 0]
                assert np.all(np.diff(values) <= 0)
    assert things_seen >= 12


def test_segmentation_image_shows_the_objects(roots: dict[str, Path]) -> None:
    """Object pixels in the JPEG differ in colour from the background around them."""
    seg = roots["seed0"] / "segmentation"
    image = cv2.imread(str(seg / "images" / "training" / "000000.jpg"))[:, :, ::-1].astype(np.float64)
    with np.load(seg / "instances" / "training" / "000000.npz") as instances:
        masks, class_ids = instances["masks"], instances["class_ids"]
    for mask in masks[class_ids > len(STUFF_CLASSES)]:
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
        assert np.linalg.norm(image[inner].mean(axis=0) - image[ring].mean(axis=0)) > 30


def _features(num_images: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, shapes, labels = [], [], []
    for index in range(num_images):
        label = index % num_classes
        image, alpha = render_classification_image(np.random.default_rng((7, index)), label, 32)
        moments = cv2.HuMoments(cv2.moments(alpha)).ravel()
        shapes.append(-np.sign(moments) * np.log10(np.abs(moments) + 1e-30))
        images.append(image.astype(np.float64))
        labels.append(label)
    stacked = np.stack(images)  # (N, 32, 32, 3)
    histograms = np.stack(
        [np.concatenate([np.histogram(image[..., c], 8, (0, 255))[0] for c in range(3)]) for image in stacked]
    )  # (N, 24) per-channel colour histograms
    return stacked.mean(axis=(1, 2)), histograms, np.stack(shapes), np.asarray(labels)


def test_colour_is_not_predictive_but_shape_is() -> None:
    mean_colour, histograms, shape_descriptor, labels = _features(480, 8)

    def accuracy(features: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(cross_val_score(model, features, labels, cv=4).mean())

    assert accuracy(mean_colour) < 0.22  # chance is 0.125
    assert accuracy(histograms) < 0.22
    assert accuracy(shape_descriptor) > 0.75  # Hu moments of the drawn shape


def test_all_ten_shapes_render_distinct_masks() -> None:
    masks = []
    for label in range(len(SHAPE_CLASSES)):
        _, alpha = render_classification_image(np.random.default_rng(0), label, 32)  # same pose for every shape
        assert 0.05 < alpha.mean() < 0.7
        masks.append(alpha > 0.5)
    for first in range(len(masks)):
        for second in range(first + 1, len(masks)):
            assert (masks[first] != masks[second]).sum() > 15, (SHAPE_CLASSES[first], SHAPE_CLASSES[second])


def test_gray16_classification_images_read_back_with_the_window(tmp_path: Path) -> None:
    """gray16 writes 16-bit single-channel PNGs in GRAY16_BAND whose windowed grey levels are the luminance of the
    rgb8 images (up to the noise); segmentation files do not change; the marker tells the formats apart."""
    tiny = {"seed": 4, "workers": 1, "num_classes": 4, "num_train": 8, "num_val": 4, "num_seg_train": 1, "num_seg_val": 1}
    write_synthetic_dataset(tmp_path / "rgb8", **tiny)
    summary = write_synthetic_dataset(tmp_path / "gray16", classification_format="gray16", **tiny)
    assert summary.classification_format == "gray16"
    assert synthetic_is_complete(tmp_path / "gray16", classification_format="gray16")
    assert not synthetic_is_complete(tmp_path / "gray16", classification_format="rgb8")
    assert not synthetic_is_complete(tmp_path / "rgb8", classification_format="gray16")
    rgb_files, gray_files = _files(tmp_path / "rgb8"), _files(tmp_path / "gray16")
    assert rgb_files.keys() == gray_files.keys()
    assert all(rgb_files[name] == gray_files[name] for name in rgb_files if name.startswith("segmentation"))
    errors = []
    for path in sorted((tmp_path / "gray16" / "classification").rglob("*.png")):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (32, 32)
        assert GRAY16_BAND[0] - 100 <= raw.min() and raw.max() <= GRAY16_BAND[1] + 100
        windowed = read_image(path, channels=1, uint16_scaling="window", intensity_window=GRAY16_BAND)[:, :, 0]
        rgb = read_image(tmp_path / "rgb8" / path.relative_to(tmp_path / "gray16")).astype(np.float64)
        errors.append(windowed - rgb @ [0.299, 0.587, 0.114])
        assert int(read_image(path, channels=1)[:, :, 0].max()) <= 110  # "full" squeezes the band into 78..109
    errors = np.stack(errors)
    assert abs(errors.mean()) < 0.1 and 0.4 < errors.std() < 1.0  # noise of 20 raw values = 0.64 grey levels
    with pytest.raises(ValueError, match="classification_format='gray8' is not valid"):
        write_synthetic_dataset(tmp_path / "bad", classification_format="gray8", **tiny)


def test_marker_without_a_format_means_rgb8(tmp_path: Path) -> None:
    """Markers written before `classification_format` existed describe rgb8 data."""
    write_synthetic_dataset(tmp_path, seed=2, workers=1, num_classes=2, num_train=2, num_val=2, num_seg_train=1,
                            num_seg_val=1)  # fmt: skip
    marker = json.loads((tmp_path / MARKER_NAME).read_text())
    del marker["classification_format"]
    (tmp_path / MARKER_NAME).write_text(json.dumps(marker))
    assert synthetic_is_complete(tmp_path, seed=2, classification_format="rgb8")
    assert not synthetic_is_complete(tmp_path, classification_format="gray16")
