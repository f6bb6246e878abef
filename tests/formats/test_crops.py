"""Object crops of COCO detection files: which boxes become crops (min size, class subset, merge map,
largest vs all, padding), the crop pixels (8-bit RGB and 16-bit single channel), the guarantee that
every split holds the same classes, broken images, and the `coco_crops` source in the loaders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.config.loading import validate_config
from pretrainlab.data.config import DataConfig
from pretrainlab.data.formats.crops import CropOptions, ObjectCropsDataset, crop_classes, read_coco, select_crops
from pretrainlab.data.loaders import build_eval_loaders, dataset_num_classes, views_train_data
from pretrainlab.data.synthetic import SHAPE_CLASSES, write_synthetic_dataset

CATEGORIES = ["cat", "dog", "kitten", "car"]
# image: (file, width, height, [(annotation id, category, bbox, iscrowd)])
TRAIN = [
    ("a.png", 100, 80, [(1, "cat", [10, 10, 40, 30], 0), (2, "dog", [60, 20, 20, 20], 0), (3, "car", [0, 0, 8, 6], 0),
                        (4, "dog", [0, 40, 50, 30], 1)]),
    ("sub/b.png", 64, 64, [(5, "kitten", [5, 5, 30, 30], 0), (6, "dog", [40, 40, 20, 12], 0),
                           (7, "car", [30, 2, 30, 20], 0)]),
]  # fmt: skip
VAL = [("c.png", 64, 64, [(1, "cat", [0, 0, 20, 20], 0), (2, "dog", [30, 30, 20, 20], 0),
                          (3, "car", [2, 40, 16, 16], 0), (4, "kitten", [40, 2, 20, 20], 0)])]  # fmt: skip


def _position_image(width: int, height: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) whose pixel (y, x) is (x, y, 7): a crop tells where it was cut."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=2).astype(np.uint8)


def _write_split(root: Path, name: str, images: list, categories: list[str] = CATEGORIES) -> Path:
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)]}
    for image_id, (file, width, height, boxes) in enumerate(images, start=1):
        path = root / "images" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _position_image(width, height)[:, :, ::-1])  # RGB -> BGR
        coco["images"].append({"id": image_id, "file_name": file, "width": width, "height": height})
        for annotation_id, category, bbox, crowd in boxes:
            coco["annotations"].append({"id": annotation_id * 10 + image_id, "image_id": image_id, "bbox": bbox,
                                        "category_id": categories.index(category) + 1, "iscrowd": crowd})  # fmt: skip
    (root / f"{name}.json").write_text(json.dumps(coco))
    return root / f"{name}.json"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    _write_split(tmp_path, "train", TRAIN)
    _write_split(tmp_path, "val", VAL)
    return tmp_path


def _crops(root: Path, **options: object) -> tuple[list[str], list]:
    chosen = CropOptions(**options)
    detections = read_coco(root / "train.json")
    classes = crop_classes(detections.categories, chosen, "train.json")
    return classes, select_crops(detections.images, root / "images", classes, chosen, "train")


def test_all_crops_skip_crowd_boxes_and_cut_the_box_pixels(coco: Path) -> None:
    classes, crops = _crops(coco, crops="all")
    assert classes == CATEGORIES
    assert [(crop.path.name, classes[crop.label]) for crop in crops] == [  # the crowd dog of a.png is left out
        ("a.png", "cat"), ("a.png", "dog"), ("a.png", "car"), ("b.png", "kitten"), ("b.png", "dog"), ("b.png", "car")
    ]  # fmt: skip
    dataset = ObjectCropsDataset(crops, classes)
    cat, label = dataset[0]
    assert label == 0 and cat.shape == (30, 40, 3)  # bbox [10, 10, 40, 30]: rows 10..39, columns 10..49
    np.testing.assert_array_equal(cat, _position_image(100, 80)[10:40, 10:50])


def test_min_size_applies_to_the_shorter_side(coco: Path) -> None:
    _, crops = _crops(coco, min_size=12)  # drops a.png's car (8 x 6); b.png's dog (20 x 12) stays
    assert [(crop.path.name, crop.label) for crop in crops] == [("a.png", 0), ("a.png", 1), ("b.png", 2),
                                                               ("b.png", 1), ("b.png", 3)]  # fmt: skip
    with pytest.raises(ValueError, match=r"split train: no crops of class\(es\) \['dog', 'car'\] .*min_size=21"):
        _crops(coco, min_size=21)  # every dog and car box is 20 px or less on its shorter side


def test_merge_then_subset_and_largest_picks_among_the_kept_boxes(coco: Path) -> None:
    classes, crops = _crops(coco, merge={"kitten": "cat"})
    assert classes == ["cat", "dog", "car"]  # merged names in category-id order
    assert [crop.label for crop in crops if crop.path.name == "b.png"] == [0, 1, 2]  # the kitten is a cat
    classes, crops = _crops(coco, merge={"kitten": "cat"}, classes=["cat"], crops="largest")
    assert classes == ["cat"] and [(crop.path.name, crop.box) for crop in crops] == [
        ("a.png", (10, 10, 50, 40)), ("b.png", (5, 5, 35, 35))]  # fmt: skip
    classes, crops = _crops(coco, classes=["car", "dog"], crops="largest")
    assert [(crop.path.name, classes[crop.label]) for crop in crops] == [("a.png", "dog"), ("b.png", "car")]


def test_bad_merge_and_class_names_are_refused_with_the_known_ones(coco: Path) -> None:
    with pytest.raises(ValueError, match=r"train.json: merge names \['kiten'\] are not categories; did you mean "
                                         r"'kitten'\? known: cat, dog, kitten, car"):  # fmt: skip
        _crops(coco, merge={"kiten": "cat"})
    with pytest.raises(ValueError, match=r"classes \['kitten'\] are not categories \(after merge\)"):
        _crops(coco, merge={"kitten": "cat"}, classes=["kitten"])
    with pytest.raises(ValueError, match="classes lists"):
        CropOptions(classes=["cat", "cat"])


def test_padding_grows_the_box_and_clips_it_to_the_image(coco: Path) -> None:
    classes, crops = _crops(coco, padding=0.5, classes=["cat"])
    dataset = ObjectCropsDataset(crops, classes)
    assert crops[0].box == (0, 0, 70, 55)  # [10, 10, 40, 30] + 20 / 15 px on each side, clipped at 0
    np.testing.assert_array_equal(dataset[0][0], _position_image(100, 80)[0:55, 0:70])


def _data(root: Path, **source: object) -> DataConfig:
    fields = {"name": "coco_crops", "train_json": "train.json", "val_json": "val.json", "image_dir": "images", **source}
    return DataConfig(root=root, synthetic=None, source=fields, in_memory=False)


def test_every_split_must_hold_the_same_classes(coco: Path) -> None:
    data = _data(coco, min_size=17)  # val's car is 16 x 16, train's 30 x 20
    assert len(data.dataset("train")) == 4
    with pytest.raises(ValueError, match=r"split val \(.*val.json\): no crops of class\(es\) \['car'\]"):
        data.dataset("val")
    _write_split(coco, "val", VAL + [("d.png", 8, 8, [(1, "bird", [0, 0, 4, 4], 0)])], CATEGORIES + ["bird"])
    with pytest.raises(ValueError, match=r"split val .*categories \['bird'\] are not classes of the train split"):
        _data(coco).dataset("val")
    assert _data(coco, classes=["dog", "cat"]).dataset("val").targets == [1, 0]  # a subset drops the bird


def test_16_bit_single_channel_crops_go_through_the_read_path(tmp_path: Path) -> None:
    raw = (1000 + np.arange(40 * 48).reshape(40, 48) % 1000).astype(np.uint16)  # (H 40, W 48)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "t.png"), raw)
    coco = {"images": [{"id": 1, "file_name": "t.png", "width": 48, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4.5, 2.0, 10.0, 7.5]}],
            "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    for name in ("train", "val"):
        (tmp_path / f"{name}.json").write_text(json.dumps(coco))
    expected = np.rint((raw[2:10, 4:15].astype(np.float32) - 1000) * (255 / 1000)).astype(np.uint8)[:, :, None]
    for policy in ("copy", "learned"):
        data = DataConfig(root=tmp_path, synthetic=None, channels=1, channel_policy=policy, uint16_scaling="window",
                          intensity_window=(1000, 2000), source={"name": "coco_crops", "train_json": "train.json",
                          "val_json": "val.json", "image_dir": "images"})  # fmt: skip
        crop, label = data.dataset("val")[0]  # box x 4.5..14.5, y 2..9.5 -> columns 4..14, rows 2..9
        assert crop.dtype == np.uint8 and crop.shape == (8, 11, 1) and label == 0
        np.testing.assert_array_equal(crop, expected)


def test_broken_images_are_skipped_and_counted(coco: Path) -> None:
    path = coco / "images" / "sub" / "b.png"
    path.write_bytes(path.read_bytes()[:40])
    classes, crops = _crops(coco)
    in_memory = ObjectCropsDataset(crops, classes, in_memory=True)
    assert len(in_memory) == 3 and in_memory.num_broken == 3 and in_memory.targets == [0, 1, 3]
    lazy = ObjectCropsDataset(crops, classes)
    _, label = lazy[3]  # b.png's kitten: broken, replaced by a crop drawn at random (a.png's, after any of b's)
    assert label in (0, 1, 3) and 3 in lazy.broken_indices and lazy.broken_indices <= {3, 4, 5}
    assert lazy.num_broken == len(lazy.broken_indices) and len(lazy) == 6


def test_coco_crops_source_on_the_generated_detection_set(tmp_path: Path) -> None:
    synthetic = {"num_classes": 4, "num_train": 10, "num_val": 10, "num_seg_train": 1, "num_seg_val": 1,
                 "num_detection_train": 8, "num_detection_val": 4, "detection_image_size": 64}  # fmt: skip
    write_synthetic_dataset(tmp_path, workers=1, **synthetic)
    source = {"name": "coco_crops", "crops": "largest"}
    config = validate_config({"data": {"root": str(tmp_path), "synthetic": synthetic, "batch_size": 2,
                                       "eval_batch_size": 64, "source": source}})  # fmt: skip
    assert config.data.class_names() == list(SHAPE_CLASSES[:4]) and dataset_num_classes(config) == 4
    bank, val = build_eval_loaders(config)
    images, labels = next(iter(val))
    assert images.shape == (4, 3, 32, 32)
    assert labels.tolist() == [0, 1, 2, 3]  # the largest box of image i is its first shape, class i % 4
    assert len(bank.dataset) == 8 and bank.dataset.targets == [i % 4 for i in range(8)]
    train = views_train_data(config, lambda image: [image])
    views, label = train.dataset[(0, 6)]
    assert label == 2 and views[0].ndim == 3 and views[0].shape[2] == 3
    merged = validate_config({"data": {"root": str(tmp_path), "synthetic": synthetic,
                                       "source": {"name": "coco_crops", "crops": "largest",
                                                  "merge": {"square": "circle"}}}})  # fmt: skip
    assert merged.data.class_names() == ["circle", "triangle", "cross"] and dataset_num_classes(merged) == 3
    assert merged.data.dataset("val").targets == [0, 0, 1, 2]  # the square of image 1 is a circle now
    with pytest.raises(ValueError, match="set data.synthetic.num_detection_train"):
        DataConfig(synthetic={**synthetic, "num_detection_val": 0}, source={"name": "coco_crops"})
