"""CIFAR python batches: the generator's CIFAR-10 copy reads back as the PNGs it came from, a hand-made
CIFAR-100 pair reads with fine and coarse labels, broken files are errors naming the file, and the
`cifar` data source feeds training views and evaluation loaders."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.config.loading import ConfigError, validate_config
from pretrainlab.config.schema import Config
from pretrainlab.data.formats._robust import ChannelMismatchError
from pretrainlab.data.formats.cifar import CifarDataset, read_cifar, write_cifar10
from pretrainlab.data.formats.imagefolder import ImageFolderDataset
from pretrainlab.data.loaders import build_eval_loaders, dataset_num_classes, views_train_data
from pretrainlab.data.synthetic import SHAPE_CLASSES, write_synthetic_dataset

SYNTHETIC = {"num_classes": 4, "num_train": 22, "num_val": 10, "num_seg_train": 1, "num_seg_val": 1,
             "image_size": 32, "cifar_layout": True}  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_cifar")
    write_synthetic_dataset(root, workers=1, **SYNTHETIC)
    return root


def _planar_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's row layout, written out: all red values (row-major), then all green, then all blue."""
    return np.stack([np.concatenate([image[:, :, c].ravel() for c in range(3)]) for image in images])


def test_generator_cifar10_batches_read_back_as_the_pngs(synthetic_root: Path) -> None:
    folder = synthetic_root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    )
    for split, png_split, count in (("train", "train", 22), ("test", "val", 10)):
        arrays = read_cifar(folder, split=split)
        pngs = ImageFolderDataset(synthetic_root / "classification" / png_split)
        order = sorted(range(len(pngs)), key=lambda i: pngs.samples[i][0].name)  # generation (index) order
        assert arrays.images.shape == (count, 32, 32, 3) and arrays.images.dtype == np.uint8
        np.testing.assert_array_equal(arrays.images, np.stack([pngs.load(i)[0] for i in order]))
        assert arrays.classes == list(SHAPE_CLASSES[:4])  # classes.json's order: label = index % num_classes
        assert arrays.labels.tolist() == [i % 4 for i in range(count)]
        assert [arrays.classes[label] for label in arrays.labels] == [pngs.classes[pngs.targets[i]] for i in order]
    with (folder / "data_batch_1").open("rb") as file:
        batch = pickle.load(file, encoding="latin1")
    first = read_cifar(folder).images[: len(batch["data"])]
    np.testing.assert_array_equal(batch["data"], _planar_rows(first))  # rows are channel-planar, not HWC


def _dump(path: Path, content: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=2)


def _cifar100(folder: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list[int], list[int]]]:
    """A hand-made CIFAR-100 pair (train, test) + meta with bytes keys and names, as some re-savers write."""
    folder.mkdir(parents=True)
    fine_names, coarse_names = [b"apple", b"bee", b"maple", b"oak"], [b"fruit", b"insect", b"tree"]
    coarse_of_fine = [0, 1, 2, 2]
    splits = {}
    for name, count in (("train", 9), ("test", 5)):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        fine = [int(i) for i in rng.integers(0, 4, size=count)]
        coarse = [coarse_of_fine[label] for label in fine]
        _dump(folder / name, {b"data": _planar_rows(images), b"fine_labels": fine, b"coarse_labels": coarse,
                              b"filenames": [b"x.png"] * count, b"batch_label": b"b"})  # fmt: skip
        splits[name] = (images, fine, coarse)
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    return splits


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100_pair_reads_with_fine_and_coarse_labels(tmp_path: Path, labels: str) -> None:
    splits = _cifar100(tmp_path / "cifar-100-python", np.random.default_rng(0))
    for split, (images, fine, coarse) in splits.items():
        dataset = CifarDataset(tmp_path / "cifar-100-python", variant="cifar100", split=split, labels=labels)
        np.testing.assert_array_equal(np.stack([dataset[i][0] for i in range(len(dataset))]), images)
        assert dataset.targets == (fine if labels == "fine" else coarse)
        names = ["apple", "bee", "maple", "oak"] if labels == "fine" else ["fruit", "insect", "tree"]
        assert dataset.classes == names


def test_channel_policy_applies_and_learned_is_refused(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    write_cifar10(tmp_path, train=(images, [0, 1, 0]), test=(images[:1], [1]), label_names=["a", "b"])
    green = CifarDataset(tmp_path, channels=1, channel_policy="pick:1", transform=np.flipud)
    image, label = green[1]
    assert image.shape == (32, 32, 1) and label == 1
    np.testing.assert_array_equal(image[:, :, 0], images[1, ::-1, :, 1])
    with pytest.raises(ChannelMismatchError, match="single-channel"):
        CifarDataset(tmp_path, channels=1, channel_policy="learned")


@pytest.fixture
def cifar10(tmp_path: Path) -> Path:
    images = np.random.default_rng(2).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    write_cifar10(tmp_path, train=(images, [i % 2 for i in range(10)]), test=(images[:4], [0, 1, 0, 1]),
                  label_names=["a", "b"])  # fmt: skip
    return tmp_path


def test_truncated_batch_is_an_error_naming_the_file(cifar10: Path) -> None:
    path = cifar10 / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"data_batch_3: not a readable CIFAR pickle, truncated"):
        CifarDataset(cifar10)
    CifarDataset(cifar10, split="test")  # the other split is unaffected


def test_missing_batch_wrong_keys_and_wrong_rows_name_the_file(cifar10: Path) -> None:
    (cifar10 / "data_batch_2").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_2 not found"):
        read_cifar(cifar10)
    _dump(cifar10 / "test_batch", {"pixels": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch: missing key\(s\) \['data'\].*found \['labels', 'pixels'\]"):
        read_cifar(cifar10, split="test")
    _dump(cifar10 / "test_batch", {"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch: 'data' is a uint8 array of shape \(2, 3000\).*3072"):
        read_cifar(cifar10, split="test")
    _dump(cifar10 / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 5]})
    with pytest.raises(ValueError, match="test_batch: 'labels' range 0..5 is outside the 2 classes"):
        read_cifar(cifar10, split="test")


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_a_pickle_that_would_run_code_is_refused(cifar10: Path) -> None:
    _dump(cifar10 / "test_batch", {"data": _RunsCode(), "labels": []})
    with pytest.raises(ValueError, match=r"test_batch: refusing to load (posix|nt)\.getcwd"):
        read_cifar(cifar10, split="test")


def _config(root: Path, **data: object) -> Config:
    synthetic = {key: value for key, value in SYNTHETIC.items()}
    return validate_config({"data": {"root": str(root), "synthetic": synthetic, "source": {"name": "cifar"},
                                     "batch_size": 4, "eval_batch_size": 8, **data}})  # fmt: skip


def test_cifar_source_feeds_training_views_and_eval_loaders(synthetic_root: Path) -> None:
    config = _config(synthetic_root)
    assert dataset_num_classes(config) == 4
    train = views_train_data(config, lambda image: [image.copy()])
    assert len(train.dataset) == 22 and "data_batch_1" in train.description
    views, label = train.dataset[(0, 5)]
    expected = read_cifar(synthetic_root / "cifar-10-batches-py")
    np.testing.assert_array_equal(views[0], expected.images[5])
    assert label == expected.labels[5]
    bank, val = build_eval_loaders(config)
    images, labels = next(iter(val))
    assert images.shape == (8, 3, 32, 32) and labels.tolist() == [i % 4 for i in range(8)]
    assert val.dataset.classes == list(SHAPE_CLASSES[:4]) and len(bank.dataset) == 22


def test_cifar_source_needs_the_generator_layout_or_real_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set data.synthetic.cifar_layout: true"):
        _config(tmp_path, synthetic={**SYNTHETIC, "cifar_layout": False})
    with pytest.raises(ConfigError, match="labels='coarse' applies to cifar100"):
        _config(tmp_path, source={"name": "cifar", "labels": "coarse"})
    with pytest.raises(ConfigError, match="unknown data source 'cifr'; did you mean 'cifar'"):
        _config(tmp_path, source={"name": "cifr"})
