"""Model = backbone -> neck -> heads: taps, where a tap loss sends its gradient, resolution restore, registries."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pretrainlab.methods.tap_losses import TapLoss, koleo_on_tap, tap_losses
from pretrainlab.models.backbones.base import global_average
from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads import (
    HEADS,
    ClsHead,
    LinearHead,
    LinearHeadConfig,
    MultiTaskHead,
    MultiTaskHeadConfig,
    build_head,
)
from pretrainlab.models.model import Model, head_input_dim
from pretrainlab.models.necks import NECKS, DAPPMConfig, NoNeckConfig, PAPPMConfig, build_neck
from pretrainlab.models.necks.ppm import DAPPM, PAPPM

BATCH = 4


def tiny_backbone() -> TimmBackbone:
    """A ResNet with maps at strides 1, 1, 2, 4, 8 of a 32-px image (16 channels at the end)."""
    return TimmBackbone("resnet18", small_input_stem=True, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16])


def necked_model(restore_stride: int | None = None) -> Model:
    backbone = tiny_backbone()
    neck = DAPPM(backbone.out_channels[-1], 8, 12)
    return Model(backbone, {"linear": LinearHead(12, 5)}, neck, restore_stride=restore_stride)


def koleo(tap: str, weight: float = 1.0) -> TapLoss:
    return TapLoss("koleo", tap, weight, lambda x, g, _labels: koleo_on_tap(x, g, None, eps=1e-8))


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_taps_of_a_necked_model() -> None:
    model = necked_model()
    taps = model(torch.randn(BATCH, 3, 32, 32))
    assert model.tap_names() == list(taps) == ["backbone", "neck", "head:linear"]
    assert taps["backbone"].shape == (BATCH, model.backbone.embed_dim)
    assert taps["neck"].shape == (BATCH, 12)
    assert taps["head:linear"].shape == (BATCH, 5)
    assert model.feature_dim == 12


def test_neck_reads_the_final_map_and_its_tap_is_its_global_average() -> None:
    model = necked_model().eval()
    images = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        final_map = model.backbone(images).maps[-1]  # (B, 16, 4, 4)
        expected = global_average(model.neck(final_map))
        torch.testing.assert_close(model(images)["neck"], expected)


def test_sebnet_neck_reads_the_context_map() -> None:
    backbone = SEBNet("s")
    neck = build_neck(DAPPMConfig(branch_channels=16), backbone)
    assert neck is not None
    assert neck.in_channels == 512 and neck.out_channels == 128  # 16p -> 4p, as DDRNet
    model = Model(backbone, {}, neck).eval()
    with torch.no_grad():
        taps = model(torch.randn(2, 3, 64, 64))
    assert taps["neck"].shape == (2, 128)


def test_loss_on_neck_tap_reaches_neck_and_backbone() -> None:
    model = necked_model().train()
    outputs = tap_losses([koleo("neck")], model(torch.randn(BATCH, 3, 32, 32)), num_crops=1)
    outputs["loss_koleo_neck"].backward()
    assert grad_norm(model.neck) > 0
    assert grad_norm(model.backbone) > 0
    assert grad_norm(model.heads) == 0


def test_loss_on_backbone_tap_sends_nothing_into_the_neck() -> None:
    model = necked_model().train()
    outputs = tap_losses([koleo("backbone")], model(torch.randn(BATCH, 3, 32, 32)), num_crops=1)
    outputs["loss_koleo_backbone"].backward()
    assert grad_norm(model.backbone) > 0
    assert all(p.grad is None for p in model.neck.parameters())
    assert all(p.grad is None for p in model.heads.parameters())


def test_loss_on_head_tap_reaches_head_neck_and_backbone() -> None:
    model = necked_model().train()
    outputs = tap_losses([koleo("head:linear")], model(torch.randn(BATCH, 3, 32, 32)), num_crops=1)
    outputs["loss_koleo_head_linear"].backward()
    assert min(grad_norm(model.heads), grad_norm(model.neck), grad_norm(model.backbone)) > 0


@pytest.mark.parametrize("height, width, stride", [(32, 32, 8), (32, 32, 4), (48, 80, 8), (30, 30, 8)])
def test_restore_resizes_the_neck_output_to_the_stride(height: int, width: int, stride: int) -> None:
    model = necked_model(restore_stride=stride).eval()
    images = torch.randn(2, 3, height, width)
    with torch.no_grad():
        feature_map = model.feature_map(images)
        assert feature_map.shape == (2, 12, math.ceil(height / stride), math.ceil(width / stride))
        torch.testing.assert_close(model(images)["neck"], global_average(feature_map))


def test_restore_without_neck_pools_the_upsampled_final_map() -> None:
    backbone = SEBNet("s").eval()
    model = Model(backbone, {}, None, restore_stride=8)
    assert model.feature_dim == backbone.out_channels[backbone.final_map_index] == 512
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        context = backbone(images).maps[backbone.final_map_index]  # (2, 512, 1, 1)
        restored = model.feature_map(images)
        taps = model(images)
    assert context.shape[-2:] == (1, 1) and restored.shape == (2, 512, 8, 8)
    torch.testing.assert_close(restored, F.interpolate(context, size=(8, 8), mode="bilinear", align_corners=False))
    torch.testing.assert_close(taps["backbone"], global_average(restored))


def test_without_restore_the_backbone_tap_is_the_backbone_pooled_vector() -> None:
    backbone = SEBNet("s").eval()
    model = Model(backbone, {"linear": LinearHead(backbone.embed_dim, 3)})
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images)["backbone"], backbone(images).pooled)
    assert model.feature_dim == backbone.embed_dim == 640


def test_forward_views_batches_equal_sizes_and_keeps_view_order() -> None:
    model = necked_model().eval()
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    with torch.no_grad():
        together = model.forward_views(views)
        one_by_one = [model(view) for view in views]
    for tap in ("backbone", "neck", "head:linear"):
        torch.testing.assert_close(together[tap], torch.cat([taps[tap] for taps in one_by_one]), atol=1e-5, rtol=1e-5)


def test_neck_channel_mismatch_raises() -> None:
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="the neck takes 32 channels but the backbone's final map has 16"):
        Model(backbone, {}, PAPPM(32, 8, 8))


def test_multi_task_head_taps_and_weighted_sum() -> None:
    head = MultiTaskHead({"coarse": LinearHead(6, 2), "fine": ClsHead(6, 5, hidden_dim=4)}, {"coarse": 0.5})
    model = Model(tiny_backbone(), {"multi_task": head}, DAPPM(16, 4, 6))
    taps = model(torch.randn(BATCH, 3, 32, 32))
    assert model.tap_names() == ["backbone", "neck", "head:coarse", "head:fine"] == list(taps)
    assert taps["head:coarse"].shape == (BATCH, 2) and taps["head:fine"].shape == (BATCH, 5)
    total = head.weighted_sum({"coarse": torch.tensor(2.0), "fine": torch.tensor(3.0)})
    assert float(total) == pytest.approx(0.5 * 2.0 + 1.0 * 3.0)
    with pytest.raises(KeyError, match="no loss for tasks"):
        head.weighted_sum({"coarse": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="weights for unknown tasks"):
        MultiTaskHead({"a": LinearHead(2, 2)}, {"b": 1.0})


def test_classification_heads() -> None:
    x = torch.randn(BATCH, 10)
    assert LinearHead(10, 3, use_bn=True)(x).shape == (BATCH, 3)
    cls = ClsHead(10, 3, hidden_dim=7, activation="gelu")
    assert cls(x).shape == (BATCH, 3)
    assert cls.hidden[0].out_features == 7 and cls.hidden[0].bias is None  # BN follows: no bias


def test_head_input_dim_matches_the_model() -> None:
    backbone = tiny_backbone()
    neck = PAPPM(16, 4, 6)
    assert head_input_dim(backbone, neck, None) == Model(backbone, {}, neck).feature_dim == 6
    assert head_input_dim(backbone, None, 8) == 16
    assert head_input_dim(backbone, None, None) == backbone.embed_dim


def test_heads_built_from_configs_resolve_num_classes() -> None:
    config = MultiTaskHeadConfig(tasks={"a": LinearHeadConfig(), "b": {"name": "cls", "hidden_dim": 4}})
    head = build_head(config.with_num_classes(7), 10)
    assert isinstance(head, MultiTaskHead)
    assert {task: out.shape for task, out in head(torch.randn(3, 10)).items()} == {"a": (3, 7), "b": (3, 7)}
    with pytest.raises(ValueError, match="num_classes is unresolved"):
        build_head(LinearHeadConfig(), 10)


def test_registries_know_every_configurable_name() -> None:
    assert set(NECKS.names()) == {"none", "dappm", "pappm"}
    assert {"linear", "cls", "multi_task", "dino"} <= set(HEADS.names())  # tests may register more
    with pytest.raises(KeyError, match="unknown neck 'dapm'; did you mean 'dappm'"):
        NECKS.get("dapm")
    assert build_neck(NoNeckConfig(), tiny_backbone()) is None
    assert isinstance(build_neck(PAPPMConfig(out_channels=5), tiny_backbone()), PAPPM)
