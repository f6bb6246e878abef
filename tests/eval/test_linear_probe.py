"""Linear probe: ~100 % on linearly separable features, ~chance on random labels, fast on 20k x 128; DINO's
last-blocks CLS features of a ViT (width n * D, the last D = pooled) and the `linear` phase on them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pretrainlab.config.loading import load_config
from pretrainlab.eval import pooled_features
from pretrainlab.eval.linear_probe import LinearProbeConfig, fit_linear_probe, standardise
from pretrainlab.eval.pooled_features import extract_last_blocks_features, extract_pooled_features
from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.run_dir import RunDir, read_json
from pretrainlab.study.linear_phase import LinearPhaseConfig, run_linear_phase
from pretrainlab.study.phase import StudyContext


def gaussian_classes(num: int, dim: int, num_classes: int, separation: float, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)) * separation
    labels = torch.randint(0, num_classes, (num,), generator=generator)
    return means[labels] + torch.randn(num, dim, generator=generator), labels


def test_separable_features_are_classified_perfectly() -> None:
    train_x, train_y = gaussian_classes(2000, 32, 5, separation=3.0, seed=1)
    val_x, val_y = gaussian_classes(500, 32, 5, separation=3.0, seed=2)
    result = fit_linear_probe(train_x * 100 + 7, train_y, val_x * 100 + 7, val_y)  # scale / shift: standardised
    assert result.top1 == 100.0 and result.train_top1 == 100.0
    assert (result.num_train, result.num_val) == (2000, 500)


def test_random_labels_give_chance_accuracy() -> None:
    train_x, _ = gaussian_classes(4000, 32, 4, separation=3.0, seed=1)
    val_x, _ = gaussian_classes(2000, 32, 4, separation=3.0, seed=2)
    train_y = torch.randint(0, 4, (4000,), generator=torch.Generator().manual_seed(3))
    val_y = torch.randint(0, 4, (2000,), generator=torch.Generator().manual_seed(4))
    result = fit_linear_probe(train_x, train_y, val_x, val_y)
    assert 20.0 < result.top1 < 30.0  # chance is 25 %; 2000 samples: std ~1 point


def test_the_probe_beats_chance_on_overlapping_classes_and_uses_num_classes() -> None:
    train_x, train_y = gaussian_classes(3000, 16, 3, separation=0.3, seed=1)
    val_x, val_y = gaussian_classes(1000, 16, 3, separation=0.3, seed=2)
    result = fit_linear_probe(train_x, train_y, val_x, val_y, num_classes=10)
    assert 50.0 < result.top1 < 100.0


def test_the_probe_agrees_with_scikit_learns_logistic_regression_on_curved_classes() -> None:
    """Classes on concentric shells: close neighbours share a label (kNN-friendly) but no hyperplane
    separates them, the situation of the random-init ConvNeXt features of the W3 sweep (kNN 64 %, probe 16 %).
    Same objective as scikit-learn's: mean CE + wd / 2 ||W||^2  <=>  C = 1 / (N wd)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def shells(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 4, (num,), generator=generator)
        directions = torch.nn.functional.normalize(torch.randn(num, 8, generator=generator), dim=1)
        return directions * (1.0 + labels[:, None].float()) + 0.05 * torch.randn(num, 8, generator=generator), labels

    (train_x, train_y), (val_x, val_y) = shells(3000, 1), shells(1000, 2)
    weight_decay = 1e-3
    ours = fit_linear_probe(train_x, train_y, val_x, val_y, max_iter=200, weight_decay=weight_decay)
    scaler = StandardScaler().fit(train_x.numpy())
    reference = LogisticRegression(C=1.0 / (len(train_x) * weight_decay), max_iter=2000)
    reference.fit(scaler.transform(train_x.numpy()), train_y.numpy())
    reference_top1 = 100.0 * reference.score(scaler.transform(val_x.numpy()), val_y.numpy())
    assert ours.top1 < 45.0  # linear: far below what the shells allow a neighbour vote
    assert abs(ours.top1 - reference_top1) < 1.5


def test_standardise_uses_training_statistics_and_keeps_constant_dimensions_finite() -> None:
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    val = torch.tensor([[2.0, 6.0]])
    train_z, val_z = standardise(train, val)
    assert torch.allclose(train_z[:, 0], torch.tensor([-1.0, 1.0]) / 2**0.5)  # unbiased std of (1, 3) is sqrt 2
    assert val_z[0, 0] == 0.0 and torch.isfinite(val_z).all() and (train_z[:, 1] == 0).all()


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same D"):
        fit_linear_probe(torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="differ in length"):
        fit_linear_probe(torch.zeros(4, 3), torch.zeros(3), torch.zeros(2, 3), torch.zeros(2))


def test_twenty_thousand_by_128_features_fit_in_seconds() -> None:
    train_x, train_y = gaussian_classes(20000, 128, 10, separation=0.15, seed=1)
    val_x, val_y = gaussian_classes(2000, 128, 10, separation=0.15, seed=2)
    started = time.perf_counter()
    result = fit_linear_probe(train_x, train_y, val_x, val_y)
    assert time.perf_counter() - started < 10.0  # about 1-2 s on one core
    assert 30.0 < result.top1 < 100.0


class _Images(TensorDataset):
    classes = ("a", "b", "c")


def _loader(num: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 3
    images = torch.randn(num, 3, 32, 32, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return DataLoader(_Images(images, labels), batch_size=16)


def _tiny_vit(seed: int = 0) -> TimmBackbone:
    torch.manual_seed(seed)
    return TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def test_last_blocks_features_extend_the_pooled_cls() -> None:
    backbone = _tiny_vit().train()
    train, val = _loader(20, 0), _loader(10, 1)
    pooled = extract_pooled_features(backbone, train, val)
    one = extract_last_blocks_features(backbone, train, val, num_blocks=1, use_patch_average=False)
    two = extract_last_blocks_features(backbone, train, val, num_blocks=2, use_patch_average=False)
    averaged = extract_last_blocks_features(backbone, train, val, num_blocks=2, use_patch_average=True)
    assert backbone.training  # the training mode is restored after each pass
    torch.testing.assert_close(one.train, pooled.train)
    torch.testing.assert_close(one.val, pooled.val)
    assert two.train.shape == (20, 64) and two.val.shape == (10, 64)
    torch.testing.assert_close(two.train[:, 32:], pooled.train)  # the second half is the last block's CLS
    torch.testing.assert_close(two.val[:, 32:], pooled.val)
    assert not torch.allclose(two.train[:, :32], pooled.train)
    assert averaged.val.shape == (10, 96)
    torch.testing.assert_close(averaged.val[:, :64], two.val)
    backbone.eval()
    with torch.no_grad():
        mean_patch = torch.cat([backbone(images).tokens.mean(dim=1) for images, _ in val])  # (10, D)
    torch.testing.assert_close(averaged.val[:, 64:], mean_patch)
    assert torch.equal(two.train_labels, pooled.train_labels) and torch.equal(two.val_labels, pooled.val_labels)


def test_last_blocks_features_name_a_backbone_without_them() -> None:
    with pytest.raises(ValueError, match="need a timm ViT backbone; got SEBNet"):
        extract_last_blocks_features(SEBNet("s"), _loader(4, 0), _loader(4, 1), num_blocks=4, use_patch_average=False)
    with pytest.raises(ValueError, match="backbone vit_tiny_patch16_224 has 3 blocks; the last 4 were asked for"):
        extract_last_blocks_features(_tiny_vit(), _loader(4, 0), _loader(4, 1), num_blocks=4, use_patch_average=False)


def test_config_describes_the_features_and_refuses_last_blocks_on_a_cnn() -> None:
    assert LinearProbeConfig().describe_features() == "pooled" and not LinearProbeConfig().reads_last_blocks
    assert LinearProbeConfig(last_n_blocks=4).describe_features() == "CLS of the last 4 blocks"
    both = LinearProbeConfig(last_n_blocks=1, avgpool_patch_tokens=True)
    assert both.reads_last_blocks and both.describe_features() == "CLS of the last block + average patch token"
    refused = r"study.phases.1: eval.linear.last_n_blocks=4.*backbone resnet18 is not a timm ViT"
    with pytest.raises(Exception, match=refused):
        load_config(None, ["eval.linear.last_n_blocks=4", "study.phases=[{name: pretrain}, {name: linear}]"])
    vit = ["backbone.arch=vit_tiny_patch16_224", "backbone.img_size=32", "eval.linear.last_n_blocks=4",
           "study.phases=[{name: pretrain}, {name: linear}]"]  # fmt: skip
    assert load_config(None, vit).eval.linear.last_n_blocks == 4


def test_the_linear_phase_probes_the_last_blocks_of_a_tiny_vit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Method:
        def __init__(self, seed: int) -> None:
            self.backbone = _tiny_vit(seed)

        def eval_backbone(self) -> TimmBackbone:
            return self.backbone

    def no_pooled_pass(*_args: object) -> None:
        raise AssertionError("the last-blocks probe must not extract the shared pooled features")

    monkeypatch.setattr(pooled_features, "extract_pooled_features", no_pooled_pass)

    config = load_config(None, ["eval.linear.last_n_blocks=2", "eval.linear.avgpool_patch_tokens=true",
                                "eval.linear.max_iter=20"])  # fmt: skip
    run = RunDir(tmp_path)
    context = StudyContext(config, run, {"pretrained": Method(0), "random_init": Method(1)},
                           (_loader(30, 0), _loader(15, 1)), _epoch=1)  # type: ignore[arg-type]  # fmt: skip
    result = run_linear_phase(LinearPhaseConfig(), run.phase(1, "linear", "eval/epoch_1/linear"), context)
    assert result["linear_features"] == "CLS of the last 2 blocks + average patch token"
    scores = read_json(tmp_path / "eval" / "epoch_1" / "linear" / "linear.json")
    for name in ("pretrained", "random_init"):
        assert scores[name]["feature_dim"] == 3 * 32 and scores[name]["features"] == result["linear_features"]
        assert scores[name]["num_train"] == 30 and scores[name]["num_val"] == 15
        assert result["linear_top1"][name] == scores[name]["top1"] and 0.0 <= scores[name]["top1"] <= 100.0
        assert scores[name]["train_top1"] > 90.0  # 96 standardised dimensions separate 30 images
