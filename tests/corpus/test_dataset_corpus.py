"""Broken datasets, built from the project's own synthetic generator: every case is either skipped and
counted (a warning naming the file with the count so far, `num_broken`, the in-memory summary line, the
`broken_samples` of seg.json) or refused with one clear error naming the file — never a traceback.

Each test breaks a fresh copy of a small synthetic dataset in every layout (ImageFolder, ADE20k-layout
segmentation, CIFAR-10 batches, COCO detection) and reads it the way a run does: through the config
(`DataConfig.dataset`, `build_seg_datasets`) or through the CLI in-process.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_run_overrides
from corpus_cli import FUZZ, run_cli, the_error_line
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pretrainlab.config import Config, load_config
from pretrainlab.data.formats._robust import BrokenDatasetError
from pretrainlab.data.synthetic import write_synthetic_dataset
from pretrainlab.eval.segmentation_data import build_seg_datasets

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"num_classes": 3, "image_size": 32, "num_train": 12, "num_val": 6, "num_seg_train": 4, "num_seg_val": 2,
         "cifar_layout": True, "num_detection_train": 3, "num_detection_val": 3}  # fmt: skip
SEG_CLASSES = 6  # sky, ground, wall + the 3 shapes
LOGGER = "pretrainlab"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus_data") / "synthetic"
    write_synthetic_dataset(root, workers=1, **SMALL)
    return root


@pytest.fixture
def root(synthetic: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small synthetic dataset, to break."""
    return Path(shutil.copytree(synthetic, tmp_path / "data"))


def config(root: Path, *overrides: str) -> Config:
    """A config reading the real files under `root` (no generator)."""
    return load_config(None, [f"data.root={root}", "data.synthetic=null", *overrides])


def files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(path for path in folder.rglob(pattern) if path.is_file())


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def rewrite_label(path: Path, mode: str) -> np.ndarray:
    """Store the label PNG again as an RGB image (its value in every channel) or as a palette PNG; returns the
    original values."""
    values = np.array(Image.open(path))
    image = Image.fromarray(np.stack([values] * 3, axis=-1)) if mode == "RGB" else Image.fromarray(values).convert("P")
    image.save(path)
    return values


def seg_run(root: Path, runs: Path, *extra: str) -> list[str]:
    """`pretrainlab study` of the quickstart config with only a short `seg` phase of the random-init backbone."""
    return ["study", str(REPO_ROOT / "configs" / "quickstart.yaml"), *tiny_run_overrides(root, runs),
            "data.synthetic=null", "study.phases=[{name: seg, backbones: [random_init]}]", "eval.seg.iterations=2",
            "eval.seg.batch_size=2", "engine.log_every_n_steps=1", *extra]  # fmt: skip


# --- classification images (ImageFolder) ---------------------------------------------------------------------


def test_truncated_and_zero_byte_images_are_dropped_and_counted_in_memory(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    first, second = files(root / "classification" / "train", "*.png")[:2]
    truncate(first)
    second.write_bytes(b"")
    train = config(root).data.dataset("train")
    assert (len(train), train.num_broken) == (SMALL["num_train"] - 2, 2)
    assert first not in [path for path, _ in train.samples] and len(train.targets) == len(train)
    summary = next(r.getMessage() for r in caplog.records if "into memory" in r.getMessage())
    assert f"(2 broken dropped: {first.relative_to(train.root)}, {second.relative_to(train.root)})" in summary
    assert any(str(second) in r.getMessage() and "empty file (0 bytes)" in r.getMessage() for r in caplog.records)


def test_broken_images_read_lazily_are_skipped_with_the_count_so_far(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = files(root / "classification" / "train", "*.png")[:2]
    truncate(broken[0])
    broken[1].write_bytes(b"")
    train = config(root, "data.in_memory=false").data.dataset("train")
    shapes = {train[i][0].shape for i in range(len(train))}
    assert shapes == {(32, 32, 3)} and train.num_broken == 2
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping broken")]
    assert str(broken[0]) in warnings[0] and warnings[0].endswith("(1 broken so far)")
    assert str(broken[1]) in warnings[1] and warnings[1].endswith("(2 broken so far)")


def test_a_dataset_of_only_broken_images_is_refused(root: Path) -> None:
    for path in files(root / "classification" / "train", "*.png"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"classification/train: all 12 images are broken"):
        config(root).data.dataset("train")
    lazy = config(root, "data.in_memory=false").data.dataset("train")
    with pytest.raises(BrokenDatasetError, match=r"50 broken samples in a row .* The last: .*\.png: empty file"):
        lazy[0]


def test_a_val_split_missing_a_class_folder_is_refused(root: Path) -> None:
    shutil.rmtree(root / "classification" / "val" / "square")
    data = config(root).data
    data.dataset("train")  # the train split is whole
    with pytest.raises(ValueError, match=r"classification/val: class folders differ from the training classes "
                                         r"\['circle', 'square', 'triangle'\] \(missing \['square'\], extra \[\]\)"):
        data.dataset("val")


@pytest.mark.parametrize(
    ("emptied", "expected"),
    [("class folders", r"classification/val has no class sub-folders"),
     ("images", r"classification/val has class folders .* but no images in them")],
)  # fmt: skip
def test_an_empty_split_is_refused_naming_the_folder(root: Path, emptied: str, expected: str) -> None:
    val = root / "classification" / "val"
    if emptied == "class folders":
        for folder in [path for path in val.iterdir() if path.is_dir()]:
            shutil.rmtree(folder)
    else:
        for path in files(val):
            path.unlink()
    with pytest.raises(ValueError, match=expected):
        config(root).data.dataset("val")


# --- CIFAR batches and COCO detection files --------------------------------------------------------------------


def test_a_cifar_batch_cut_short_is_refused_naming_it(root: Path, tmp_path: Path) -> None:
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    truncate(batch)
    with pytest.raises(ValueError, match=rf"{batch}: not a readable CIFAR pickle, truncated or corrupt"):
        config(root, "data.source={name: cifar}").data.dataset("train")
    result = run_cli(["study", str(REPO_ROOT / "configs" / "quickstart.yaml"), *tiny_run_overrides(root, tmp_path),
                      "data.synthetic=null", "data.source={name: cifar}"])  # fmt: skip
    the_error_line(result, f"error: {batch}: not a readable CIFAR pickle, truncated or corrupt")


def test_a_coco_file_cut_short_is_refused_naming_it(root: Path) -> None:
    annotations = root / "detection" / "annotations" / "instances_val.json"
    annotations.write_text(annotations.read_text()[:150])
    data = config(root, "data.source={name: coco_crops}").data
    data.dataset("train")
    with pytest.raises(ValueError, match=rf"{annotations}: not valid JSON"):
        data.dataset("val")


def test_the_crops_of_a_missing_coco_image_are_dropped_and_counted(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    data = config(root, "data.source={name: coco_crops}").data
    whole = data.dataset("train")
    missing = root / "detection" / "train" / "000001.png"
    missing.unlink()
    crops_of_missing = sum(crop.path == missing for crop in whole.crops)
    train = data.dataset("train")
    assert crops_of_missing >= 1 and train.num_broken == crops_of_missing
    assert len(train) == len(whole) - crops_of_missing and missing not in {crop.path for crop in train.crops}
    summary = [r.getMessage() for r in caplog.records if "crops of 3 images into memory" in r.getMessage()][-1]
    assert f"({crops_of_missing} dropped, 1 broken images: 000001.png)" in summary


# --- segmentation scenes (ADE20k layout) -----------------------------------------------------------------------


def seg_files(root: Path, kind: str, split: str = "training") -> list[Path]:
    return files(root / "segmentation" / kind / split)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("truncated jpeg", "cannot decode image"),
        ("zero-byte jpeg", "is empty (0 bytes)"),
        ("rgb label", "has shape (64, 64, 3); expected a single-channel (H, W) map"),
        ("size mismatch", "is (61, 64) but image"),
        ("missing annotation", "is missing"),
        ("zero-byte label", "is empty (0 bytes)"),
        ("garbage label", "is not an image Pillow can read"),
    ],
)
def test_broken_scenes_are_skipped_and_counted(
    root: Path, caplog: pytest.LogCaptureFixture, breakage: str, expected: str
) -> None:
    image, label = seg_files(root, "images")[1], seg_files(root, "annotations")[1]
    if breakage == "truncated jpeg":
        truncate(image)
    elif breakage == "zero-byte jpeg":
        image.write_bytes(b"")
    elif breakage == "rgb label":
        rewrite_label(label, "RGB")
    elif breakage == "size mismatch":
        Image.fromarray(np.array(Image.open(label))[:-3]).save(label)
    elif breakage == "missing annotation":
        label.unlink()
    elif breakage == "zero-byte label":
        label.write_bytes(b"")
    else:
        label.write_bytes(b"not a png" * 20)
    train, _ = build_seg_datasets(config(root))
    samples = [train[i] for i in range(len(train))]
    assert len(samples) == len(train) and train.broken_indices == {1}
    warning = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping broken"))
    assert str(image) in warning and expected in warning and warning.endswith("(1 broken so far)")
    named = label if "label" in breakage or "annotation" in breakage or "mismatch" in breakage else image
    assert str(named) in warning


def test_a_palette_label_gives_its_indices(root: Path) -> None:
    label = seg_files(root, "annotations")[0]
    values = rewrite_label(label, "P")
    assert Image.open(label).mode == "P"
    train, _ = build_seg_datasets(config(root))
    _, _, reduced = train.load(0)
    assert np.array_equal(reduced, np.where(values == 0, 255, values.astype(np.int64) - 1))  # reduce_zero_label
    assert train.num_broken == 0


def test_label_values_outside_the_classes_are_refused_naming_the_file(root: Path, tmp_path: Path) -> None:
    label = seg_files(root, "annotations")[0]
    values = np.array(Image.open(label))
    values[0, 0] = 200  # 199 after reduce_zero_label: neither a class (0..5) nor the ignore index 255
    Image.fromarray(values).save(label)
    train, _ = build_seg_datasets(config(root))
    with pytest.raises(ValueError, match=rf"{label}: label values \[199\] lie outside \[0, {SEG_CLASSES}\)"):
        train[0]
    assert train.num_broken == 0  # a wrong dataset, not a broken sample
    # read in a DataLoader worker, it is still one line (the worker's traceback is left out)
    result = run_cli(seg_run(root, tmp_path, "data.num_workers=1", "eval.seg.mode=full"))
    the_error_line(result, f"error: {label}: label values [199] lie outside [0, {SEG_CLASSES})")


def test_a_dataset_whose_every_label_is_rgb_is_refused_in_one_line(root: Path, tmp_path: Path) -> None:
    for label in seg_files(root, "annotations"):
        rewrite_label(label, "RGB")
    train, _ = build_seg_datasets(config(root))
    with pytest.raises(BrokenDatasetError, match=r"SegmentationDataset: 50 broken samples in a row"):
        train[0]
    line = the_error_line(run_cli(seg_run(root, tmp_path)), "50 broken samples in a row", "The last: ")
    assert "annotations/training/" in line and "expected a single-channel (H, W) map" in line


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [("no val images", r"no images found for layout 'segmentation', split 'val' under .*segmentation"),
     ("no val folder", r"expected the folder .*segmentation/images/validation \(split 'val'\) but it does not exist"),
     ("classes.json cut short", r"segmentation/classes.json: expected a JSON object with 'classes'")],
)  # fmt: skip
def test_empty_splits_and_a_cut_short_class_file_are_refused(root: Path, breakage: str, expected: str) -> None:
    if breakage == "no val images":
        for path in seg_files(root, "images", "validation"):
            path.unlink()
    elif breakage == "no val folder":
        shutil.rmtree(root / "segmentation" / "images" / "validation")
    else:
        classes = root / "segmentation" / "classes.json"
        classes.write_text(classes.read_text()[:40])
    with pytest.raises(ValueError, match=expected):
        build_seg_datasets(config(root))


def test_a_seg_phase_counts_broken_scenes_and_finishes(root: Path, tmp_path: Path) -> None:
    truncate(seg_files(root, "images")[2])
    seg_files(root, "images", "validation")[0].write_bytes(b"")  # the first example image of the report
    result = run_cli(seg_run(root, tmp_path))
    assert result.status == 0, result.stderr
    (seg_json,) = (tmp_path / "quickstart" / "eval").rglob("seg.json")
    assert json.loads(seg_json.read_text())["train"]["broken_samples"] == 1
    assert (seg_json.parent / "seg_examples.png").is_file()


# --- corrupt bytes, fuzzed ---------------------------------------------------------------------------------------


def corrupt(data: bytes, draw: st.DataObject) -> bytes:
    """`data` cut short, with bytes overwritten, or with garbage appended."""
    kind = draw.draw(st.sampled_from(["cut", "overwrite", "append"]), "corruption")
    if kind == "cut":
        return data[: draw.draw(st.integers(0, len(data) - 1), "keep")]
    if kind == "append":
        return data + draw.draw(st.binary(min_size=1, max_size=64), "tail")
    corrupted = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 8), "count")):
        corrupted[draw.draw(st.integers(0, len(data) - 1), "at")] = draw.draw(st.integers(0, 255), "byte")
    return bytes(corrupted)


@FUZZ
@given(draw=st.data())
def test_corrupt_bytes_are_skipped_or_refused_naming_the_file(root: Path, draw: st.DataObject) -> None:
    """Any corruption of one image or label gives a sample (decoded anyway, or another one in place of the
    skipped broken one), or a ValueError naming the file (a label that decodes to values outside the classes)."""
    kind = draw.draw(st.sampled_from(["classification png", "scene jpeg", "label png"]), "file kind")
    if kind == "classification png":
        dataset = config(root, "data.in_memory=false").data.dataset("train")
        index = draw.draw(st.integers(0, len(dataset) - 1), "index")
        path = dataset.samples[index][0]
    else:
        dataset, _ = build_seg_datasets(config(root))
        index = draw.draw(st.integers(0, len(dataset) - 1), "index")
        path = dataset.pairs[index][0 if kind == "scene jpeg" else 1]
    original = path.read_bytes()
    path.write_bytes(corrupt(original, draw))
    try:
        try:
            sample = dataset[index]
        except ValueError as error:
            assert kind == "label png" and str(path) in str(error) and "label values" in str(error), error
            return
        assert sample is not None and dataset.broken_indices <= {index}
    finally:
        path.write_bytes(original)
