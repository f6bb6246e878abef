"""Rain tree: the rain-Cityscapes paths from an ADE20k- and a Cityscapes-layout source, labels copied
unchanged, every domain readable with its labels, completion marker (a second call is a no-op)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.data.formats.segmentation_datasets import (
    SegmentationDataset,
    SegmentationLayout,
    find_cityscapes_pairs,
)
from pretrainlab.data.rain_tree import (
    MARKER_NAME,
    detect_layout,
    find_rain_domain_pairs,
    rain_folder_name,
    write_rain_tree,
)
from pretrainlab.data.synthetic import write_synthetic_dataset

INTENSITIES = [25.0, 200.0]


@pytest.fixture(scope="module")
def synthetic_segmentation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, workers=1, num_train=16, num_val=8, num_seg_train=4, num_seg_val=2, image_size=32)
    return root / "segmentation"


@pytest.fixture(scope="module")
def rain_tree(synthetic_segmentation: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rain")
    write_rain_tree(synthetic_segmentation, out, INTENSITIES, seed=0)
    return out


def files_under(root: Path) -> dict[str, int]:
    """Relative path -> modification time (ns) of every file under `root`."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_folder_names() -> None:
    assert [rain_folder_name(rate) for rate in (25.0, 200, 12.5)] == ["25mm", "200mm", "12.5mm"]


def test_writes_the_rain_cityscapes_paths(rain_tree: Path) -> None:
    stems = {"train": [f"{i:06d}" for i in range(4)], "val": [f"{i:06d}" for i in range(2)]}
    expected = {MARKER_NAME, "classes.json"}
    for split, names in stems.items():
        for stem in names:
            expected.add(f"leftImg8bit/{split}/clear/{stem}_leftImg8bit.png")
            expected.add(f"gtFine/{split}/clear/{stem}_gtFine_labelTrainIds.png")
            expected.update(
                f"leftImg8bit/{split}/rain/{r}/rainy_image/{stem}_leftImg8bit.png" for r in ("25mm", "200mm")
            )
    assert set(files_under(rain_tree)) == expected
    marker = json.loads((rain_tree / MARKER_NAME).read_text())
    assert marker["layout"] == "ade20k" and marker["reduce_zero_label"] is True
    assert (marker["num_train"], marker["num_val"], marker["intensities"]) == (4, 2, INTENSITIES)


def test_labels_and_clear_images_match_the_source(rain_tree: Path, synthetic_segmentation: Path) -> None:
    for split, folder in (("train", "training"), ("val", "validation")):
        for annotation in sorted((synthetic_segmentation / "annotations" / folder).glob("*.png")):
            label = rain_tree / "gtFine" / split / "clear" / f"{annotation.stem}_gtFine_labelTrainIds.png"
            assert label.read_bytes() == annotation.read_bytes()
            source = cv2.imread(str(synthetic_segmentation / "images" / folder / f"{annotation.stem}.jpg"))
            clear = cv2.imread(str(rain_tree / "leftImg8bit" / split / "clear" / f"{annotation.stem}_leftImg8bit.png"))
            np.testing.assert_array_equal(clear, source)


def test_every_domain_reads_back_with_the_clear_labels(rain_tree: Path) -> None:
    clear = find_rain_domain_pairs(rain_tree, "val")
    heavy = find_rain_domain_pairs(rain_tree, "val", 200.0)
    assert [label for _, label in heavy] == [label for _, label in clear] and len(clear) == 2
    assert all(image.parent.name == "rainy_image" and "200mm" in image.parts for image, _ in heavy)
    images = [cv2.imread(str(image)) for image, _ in clear + heavy]
    assert images[0].shape == images[2].shape and not np.array_equal(images[0], images[2])
    layout = SegmentationLayout(
        "rain200", ("c",) * 13, ((0, 0, 0),) * 13, True, partial(find_rain_domain_pairs, rate_mm_h=200.0)
    )
    image, label = SegmentationDataset(rain_tree, layout, "val")[0]
    assert image.shape == (64, 64, 3) and label.shape == (64, 64)
    with pytest.raises(ValueError, match="75mm"):
        find_rain_domain_pairs(rain_tree, "val", 75.0)


def test_second_call_is_a_no_op_and_an_interrupted_tree_is_redone(synthetic_segmentation: Path, tmp_path: Path) -> None:
    write_rain_tree(synthetic_segmentation, tmp_path, [50.0])
    before = files_under(tmp_path)
    summary = write_rain_tree(synthetic_segmentation, tmp_path, [50.0])
    assert files_under(tmp_path) == before and summary.seconds == 0.0
    rainy = tmp_path / "leftImg8bit/train/rain/50mm/rainy_image/000000_leftImg8bit.png"
    content = rainy.read_bytes()
    (tmp_path / MARKER_NAME).unlink()  # as if interrupted before the marker
    rainy.unlink()
    write_rain_tree(synthetic_segmentation, tmp_path, [50.0])
    assert rainy.read_bytes() == content  # redone, byte-identical
    write_rain_tree(synthetic_segmentation, tmp_path, [75.0])  # other parameters: the old domain is gone
    assert not (tmp_path / "leftImg8bit/train/rain/50mm").exists()


def write_cityscapes_source(root: Path) -> None:
    """Three random 16 x 32 scenes in the Cityscapes layout: two train cities, one val city."""
    rng = np.random.default_rng(0)
    scenes = [("train", "aachen_000000_000019"), ("train", "bonn_000001_000019"), ("val", "lindau_000000_000019")]
    for split, stem in scenes:
        city = stem.split("_")[0]
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        for path in (image, label):
            path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), rng.integers(0, 256, (16, 32, 3), np.uint8))
        cv2.imwrite(str(label), rng.integers(0, 19, (16, 32), np.uint8))


def test_cityscapes_source_keeps_cities_and_bytes(tmp_path: Path) -> None:
    src, out = tmp_path / "cityscapes", tmp_path / "out"
    write_cityscapes_source(src)
    assert detect_layout(src) == "cityscapes"
    summary = write_rain_tree(src, out, [100.0])
    assert (summary.layout, summary.reduce_zero_label, summary.num_train, summary.num_val) == (
        "cityscapes",
        False,
        2,
        1,
    )
    copied, source = find_rain_domain_pairs(out, "train"), find_cityscapes_pairs(src, "train")
    assert [image.relative_to(out) for image, _ in copied] == [image.relative_to(src) for image, _ in source]
    for (image, label), (source_image, source_label) in zip(copied, source, strict=True):
        assert image.read_bytes() == source_image.read_bytes() and label.read_bytes() == source_label.read_bytes()
    rainy = [image.name for image, _ in find_rain_domain_pairs(out, "train", 100.0)]
    assert rainy == ["aachen_000000_000019_leftImg8bit.png", "bonn_000001_000019_leftImg8bit.png"]


def test_unknown_layout_and_bad_intensities_raise(synthetic_segmentation: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass its segmentation/ folder"):
        detect_layout(synthetic_segmentation.parent)
    with pytest.raises(ValueError, match="rate > 0"):
        write_rain_tree(synthetic_segmentation, tmp_path, [0.0])
    with pytest.raises(ValueError, match="repeated folders"):
        write_rain_tree(synthetic_segmentation, tmp_path, [25.0, 25])
