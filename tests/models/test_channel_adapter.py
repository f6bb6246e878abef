"""The learned channel policy: a 1x1 conv 1 -> 3 in front of a 3-channel network starts equal to the
copy policy, trains with it, keeps the Backbone API, loads 3-channel weights, and is configured from
`data.channel_policy: learned` alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrainlab.config.loading import ConfigError, validate_config
from pretrainlab.models.backbones.base import ChannelAdaptedBackbone, build_backbone
from pretrainlab.models.backbones.timm_backbone import TimmBackbone, TimmBackboneConfig
from pretrainlab.models.layers.channel_adapter import ChannelAdapter

TINY = {"arch": "resnet18", "small_input_stem": True, "layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]}
TINY_OVERRIDES = {"backbone": {"name": "timm", **TINY}}


def test_adapter_starts_as_the_copy_and_checks_its_input() -> None:
    images = torch.randn(2, 1, 5, 7)
    torch.testing.assert_close(ChannelAdapter(3)(images), images.repeat(1, 3, 1, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expects images \(B, 1, H, W\), got shape \(2, 3, 5, 7\)"):
        ChannelAdapter(3)(torch.randn(2, 3, 5, 7))


def test_learned_policy_at_init_equals_the_copy_policy() -> None:
    network = TimmBackbone(in_chans=3, **TINY).eval()
    adapted = ChannelAdaptedBackbone(network).eval()
    gray = torch.randn(4, 1, 32, 32)  # normalised single-channel images
    learned, copied = adapted(gray), network(gray.repeat(1, 3, 1, 1))  # the copy policy repeats the channel
    torch.testing.assert_close(learned.pooled, copied.pooled, rtol=0, atol=0)
    for learned_map, copied_map in zip(learned.maps, copied.maps, strict=True):
        torch.testing.assert_close(learned_map, copied_map, rtol=0, atol=0)
    assert (adapted.in_chans, network.in_chans) == (1, 3)
    assert (adapted.embed_dim, adapted.out_channels, adapted.strides, adapted.patch_size) == (
        network.embed_dim, network.out_channels, network.strides, network.patch_size)  # fmt: skip


def test_the_adapter_gets_a_gradient_and_trains_with_the_backbone() -> None:
    adapted = ChannelAdaptedBackbone(TimmBackbone(in_chans=3, **TINY)).train()
    optimizer = torch.optim.SGD(adapted.parameters(), lr=0.1)
    adapted(torch.rand(4, 1, 32, 32)).pooled.square().mean().backward()
    weight_grad, bias_grad = adapted.channel_adapter.weight.grad, adapted.channel_adapter.bias.grad
    assert weight_grad is not None and bias_grad is not None
    assert torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0 and bias_grad.abs().sum() > 0
    assert weight_grad.shape == (3, 1, 1, 1)
    optimizer.step()
    assert not torch.equal(adapted.channel_adapter.weight, torch.ones(3, 1, 1, 1))  # no longer the copy
    with pytest.raises(ValueError, match="built for 1 input channels, got 3"):
        adapted(torch.rand(1, 3, 32, 32))


def test_build_backbone_wraps_a_3_channel_network_and_loads_its_weights(tmp_path: Path) -> None:
    pretrained = TimmBackbone(in_chans=3, **TINY)
    torch.save(pretrained.state_dict(), tmp_path / "rgb.pt")
    config = TimmBackboneConfig(**TINY, channel_adapter="learned", checkpoint=tmp_path / "rgb.pt")
    backbone = build_backbone(config, in_chans=1)
    assert isinstance(backbone, ChannelAdaptedBackbone) and backbone.in_chans == 1
    assert backbone.network.model.conv1.in_channels == 3
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(backbone.network.state_dict()[key], value, rtol=0, atol=0)
    adapter_keys = sorted(k for k in backbone.state_dict() if not k.startswith("network."))
    assert adapter_keys == ["channel_adapter.bias", "channel_adapter.weight"]
    with pytest.raises(ValueError, match="maps 1 input channel to 3; got 3 input channels"):
        build_backbone(TimmBackboneConfig(**TINY, channel_adapter="learned"), in_chans=3)


def test_the_learned_policy_is_configured_by_the_data_section_alone() -> None:
    config = validate_config({**TINY_OVERRIDES, "data": {"channels": 1, "channel_policy": "learned"}})
    assert config.backbone.channel_adapter == "learned" and config.in_chans == 1
    assert config.data.mean_std == ((0.449,), (0.226,))  # the data path normalises one channel
    assert validate_config({**TINY_OVERRIDES, "data": {"channels": 1}}).backbone.channel_adapter == "none"
    with pytest.raises(ConfigError, match="channel_policy learned feeds 1 channel .* channels must be 1, got 3"):
        validate_config({**TINY_OVERRIDES, "data": {"channel_policy": "learned"}})
    with pytest.raises(ConfigError, match="backbone.in_chans=3 with data.channel_policy learned"):
        validate_config({"backbone": {**TINY_OVERRIDES["backbone"], "in_chans": 3},
                         "data": {"channels": 1, "channel_policy": "learned"}})  # fmt: skip
    with pytest.raises(ConfigError, match="backbone.channel_adapter learned goes with data.channel_policy learned"):
        validate_config({"backbone": {**TINY_OVERRIDES["backbone"], "channel_adapter": "learned"},
                         "data": {"channels": 1}})  # fmt: skip
