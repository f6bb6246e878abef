"""Robustness under CIFAR-10-C corruptions: the table of a colour-only backbone on three colour classes (clean
accuracy = plain kNN / probe accuracy, contrast keeps the colour means), generated copies = CIFAR-10-C files of
the same copies, config and channel checks, and the `robustness` phase on the tiny synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import tiny_run_overrides
from pydantic import ValidationError
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pretrainlab.config import load_config
from pretrainlab.config.schema import Config, EvalConfig
from pretrainlab.data.formats.cifar10c import write_cifar10c
from pretrainlab.data.transforms.corruptions import CORRUPTIONS, corrupt
from pretrainlab.data.transforms.views import EvalView
from pretrainlab.eval.knn import knn_classify
from pretrainlab.eval.knn_eval import KNNConfig, knn_scores
from pretrainlab.eval.linear_probe import LinearProbeConfig, fit_linear_probe
from pretrainlab.eval.pooled_features import PooledFeatures, extract_pooled_features
from pretrainlab.eval.robustness import (
    RobustnessConfig,
    check_robustness_channels,
    evaluate_robustness,
    evenly_spaced,
    plot_robustness,
    robustness_markdown,
    sample_rng,
)
from pretrainlab.methods.base import build_method
from pretrainlab.models.backbones.base import Backbone, Features
from pretrainlab.run_dir import RunDir
from pretrainlab.study.phase import PHASES, StudyContext, run_phase
from pretrainlab.study.robustness_phase import RobustnessPhaseConfig

KNN = KNNConfig(k=5, ks=[5])
LINEAR = LinearProbeConfig()


class MeanColour(Backbone):
    """Pooled features (B, 3): the mean of each normalised channel — a backbone that sees only colour."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.embed_dim, self.out_channels, self.strides, self.patch_size, self.in_chans = 3, [3], [1], None, 3

    def forward(self, images: Tensor) -> Features:
        return Features(pooled=images.mean(dim=(2, 3)) * self.scale, maps=[images])


class ArrayImages(Dataset):
    """uint8 (32, 32, 3) images with `ImageFolderDataset`'s item API: `load(i)` before, `[i]` after `transform`."""

    def __init__(self, images: list[np.ndarray], labels: list[int]) -> None:
        self.images, self.labels, self.transform = images, labels, EvalView(size=32)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], self.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), self.labels[index]


def colour_classes(num_per_class: int, seed: int) -> ArrayImages:
    """Reddish, greenish and bluish textured images whose colour is shifted per image (std 45 levels per
    channel), so the classes overlap a little."""
    rng = np.random.default_rng(seed)
    bases = np.array([[170, 80, 80], [80, 170, 80], [80, 80, 170]], dtype=np.float64)
    images, labels = [], []
    for index in range(3 * num_per_class):
        label = index % 3
        colour = bases[label] + rng.normal(0.0, 45.0, size=3)
        texture = rng.uniform(-30.0, 30.0, size=(32, 32, 3))
        images.append(np.clip(np.rint(colour + texture), 0, 255).astype(np.uint8))
        labels.append(label)
    return ArrayImages(images, labels)


@pytest.fixture(scope="module")
def colour_problem() -> tuple[MeanColour, PooledFeatures, DataLoader]:
    backbone = MeanColour()
    train_loader = DataLoader(colour_classes(20, seed=1), batch_size=16)
    val_loader = DataLoader(colour_classes(10, seed=2), batch_size=16)
    return backbone, extract_pooled_features(backbone, train_loader, val_loader), val_loader


def test_table_has_every_cell_and_clean_accuracy_is_the_plain_knn(colour_problem: tuple, tmp_path: Path) -> None:
    backbone, features, val_loader = colour_problem
    backbone.train()
    result = evaluate_robustness(backbone, features, val_loader, RobustnessConfig(max_images=None), knn=KNN,
                                 linear=LINEAR)  # fmt: skip
    assert backbone.training  # handed back in the mode it came in
    assert result["num_images"] == 30 and result["k"] == 5 and result["classifier"] == "knn"
    assert list(result["accuracy"]) == list(CORRUPTIONS)
    assert all(list(row) == ["1", "2", "3", "4", "5"] for row in result["accuracy"].values())
    assert result["clean_acc"] == knn_scores(features, KNN)["top1"]
    assert 50.0 < result["clean_acc"] < 100.0  # a problem the classifier can get wrong
    assert all(value == result["clean_acc"] for value in result["accuracy"]["contrast"].values())  # means kept
    cells = [value for row in result["accuracy"].values() for value in row.values()]
    assert len(cells) == 55 and all(0.0 <= value <= 100.0 for value in cells)
    assert result["mean_corruption_acc"] == pytest.approx(np.mean(cells))
    assert result["severity_mean"]["5"] == pytest.approx(np.mean([row["5"] for row in result["accuracy"].values()]))
    assert result["corruption_mean"]["fog"] == pytest.approx(np.mean(list(result["accuracy"]["fog"].values())))
    assert min(cells) < result["clean_acc"]  # some corruption moves the colour means

    results = {"pretrained": result, "random_init": result}
    table = robustness_markdown(results)
    assert table.count("| corruption | clean | s1 | s2 | s3 | s4 | s5 | mean |") == 2
    fog = result["accuracy"]["fog"]
    fog_row = f"| fog | {result['clean_acc']:.2f} | " + " | ".join(f"{fog[s]:.2f}" for s in "12345")
    assert fog_row in table and f"**{result['mean_corruption_acc']:.2f}**" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2 * (1 + 11 + 1)
    plot_robustness(results, tmp_path / "robustness.png")
    assert (tmp_path / "robustness.png").read_bytes()[:4] == b"\x89PNG" and plt.get_fignums() == []
    json.dumps(result)  # JSON-ready


def test_a_subset_is_evenly_spaced_and_scored_like_the_knn_of_its_features(colour_problem: tuple) -> None:
    backbone, features, val_loader = colour_problem
    assert evenly_spaced(30, 7) == [0, 4, 8, 12, 17, 21, 25] and evenly_spaced(5, 7) == [0, 1, 2, 3, 4]
    config = RobustnessConfig(max_images=7, corruptions=["gaussian_noise"], severities=[2, 5])
    result = evaluate_robustness(backbone, features, val_loader, config, knn=KNN, linear=LINEAR)
    ids = evenly_spaced(30, 7)
    expected = knn_classify(features.train, features.train_labels, features.val[ids], features.val_labels[ids],
                            k=5, ks=(), temperature=KNN.temperature, num_classes=3).top1  # fmt: skip
    assert result["num_images"] == 7 and result["clean_acc"] == expected
    assert list(result["accuracy"]["gaussian_noise"]) == ["2", "5"]


def test_linear_classifier_clean_accuracy_is_the_probes(colour_problem: tuple) -> None:
    backbone, features, val_loader = colour_problem
    config = RobustnessConfig(max_images=None, corruptions=["contrast", "brightness"], classifier="linear")
    result = evaluate_robustness(backbone, features, val_loader, config, knn=KNN, linear=LINEAR)
    probe = fit_linear_probe(features.train, features.train_labels, features.val, features.val_labels)
    assert "k" not in result and result["clean_acc"] == pytest.approx(probe.top1)
    assert all(value == pytest.approx(probe.top1) for value in result["accuracy"]["contrast"].values())


def test_cifar10c_files_of_the_generated_copies_score_the_same(colour_problem: tuple, tmp_path: Path) -> None:
    backbone, features, val_loader = colour_problem
    dataset = val_loader.dataset
    names = ["fog", "impulse_noise"]
    for name in names:
        blocks = [np.stack([corrupt(dataset.images[i], name, s, sample_rng(3, name, s, i)) for i in range(30)])
                  for s in range(1, 6)]  # fmt: skip
        write_cifar10c(tmp_path, name, blocks, np.array(dataset.labels))
    generate = RobustnessConfig(corruptions=names, seed=3, max_images=12)
    generated = evaluate_robustness(backbone, features, val_loader, generate, knn=KNN, linear=LINEAR)
    read = generate.model_copy(update={"source": "npy", "npy_dir": tmp_path})
    from_files = evaluate_robustness(backbone, features, val_loader, read, knn=KNN, linear=LINEAR)
    assert from_files["accuracy"] == generated["accuracy"] and from_files["source"] == "npy"
    missing = RobustnessConfig(corruptions=["fog", "frost"], source="npy", npy_dir=tmp_path)  # any name with npy
    with pytest.raises(FileNotFoundError, match="no frost.npy; available: fog, impulse_noise"):
        evaluate_robustness(backbone, features, val_loader, missing, knn=KNN, linear=LINEAR)


def test_config_refuses_unknown_names_bad_severities_and_npy_without_a_folder() -> None:
    assert RobustnessConfig().corruptions == list(CORRUPTIONS) and RobustnessConfig().severities == [1, 2, 3, 4, 5]
    with pytest.raises(ValidationError, match="unknown corruption 'fgo'; did you mean 'fog'"):
        RobustnessConfig(corruptions=["fgo"])
    with pytest.raises(ValidationError, match=r"severities \[0, 1\] are not valid; expected values in 1\.\.5"):
        RobustnessConfig(severities=[0, 1])
    with pytest.raises(ValidationError, match="lists a value twice"):
        RobustnessConfig(severities=[2, 2])
    with pytest.raises(ValidationError, match="source npy needs npy_dir"):
        RobustnessConfig(source="npy")


def test_channel_check_names_the_phase_and_the_colour_only_corruption() -> None:
    check_robustness_channels(RobustnessConfig(), 3, "study.phases.2")
    with pytest.raises(ValueError, match=r"study.phases.2: .*\['saturate'\], which needs RGB images.*channels=1"):
        check_robustness_channels(RobustnessConfig(), 1, "study.phases.2")
    check_robustness_channels(RobustnessConfig(corruptions=[n for n in CORRUPTIONS if n != "saturate"]), 1, "k")
    with pytest.raises(ValueError, match="take 1- or 3-channel images, but data.channels=4"):
        check_robustness_channels(RobustnessConfig(), 4, "study.phases.2")


def with_robustness(config: Config, robustness: RobustnessConfig) -> Config:
    """`config` with `eval.robustness` set (through a subclass of EvalConfig while the schema lacks the field)."""
    if "robustness" in EvalConfig.model_fields:
        return config.model_copy(update={"eval": config.eval.model_copy(update={"robustness": robustness})})

    class EvalWithRobustness(EvalConfig):
        robustness: RobustnessConfig

    return config.model_copy(update={"eval": EvalWithRobustness(**dict(config.eval), robustness=robustness)})


def test_robustness_phase_writes_its_files_for_both_backbones(tiny_synthetic: Path, tmp_path: Path) -> None:
    assert "robustness" in PHASES.names()
    config = with_robustness(load_config(None, tiny_run_overrides(tiny_synthetic, tmp_path)),
                             RobustnessConfig(severities=[1, 3, 5], max_images=16))  # fmt: skip
    phase = RobustnessPhaseConfig()
    phase.check(config, "study.phases.2")
    torch.manual_seed(0)
    context = StudyContext(config, RunDir(config.run_dir), _methods={"pretrained": build_method(config)}, _epoch=2)
    place = context.run.phase(2, "robustness", "eval/epoch_2/robustness")

    result = run_phase(phase, place, context)

    assert set(result["clean_acc"]) == set(result["mean_corruption_acc"]) == {"pretrained", "random_init"}
    assert result["robustness_table"] == "eval/epoch_2/robustness/robustness.md" and result["epoch"] == 2
    scores = json.loads((place.dir / "robustness.json").read_text())
    for name in ("pretrained", "random_init"):
        assert scores[name]["num_images"] == 16 and len(scores[name]["accuracy"]) == 11
        assert scores[name]["clean_acc"] == result["clean_acc"][name]
        assert result["mean_corruption_acc"][name] == pytest.approx(
            np.mean([v for row in scores[name]["accuracy"].values() for v in row.values()])
        )
    table = (place.dir / "robustness.md").read_text()
    assert "### pretrained (knn, 16 images, generate)" in table and "### random_init" in table
    assert (place.dir / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert set(RobustnessPhaseConfig.summary_keys) <= set(result)
