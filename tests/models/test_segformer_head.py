"""The `segformer` head as NVlabs SegFormer's: shapes, width from the backbone's `decoder_width`,
[c4, c3, c2, c1] concatenation, and the official `decode_head.*` keys loading strictly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pretrainlab.config.loading import load_config
from pretrainlab.eval.segmentation import build_segmentor
from pretrainlab.models.backbones.base import Backbone, Features
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_segformer import SegFormerHead, SegFormerHeadConfig

MIT_B0_CHANNELS = [32, 64, 160, 256]
MIT_STRIDES = [4, 8, 16, 32]
K = 19


class FakeMiT(Backbone):
    """Random maps at strides 4/8/16/32 with small widths, and a `decoder_width` as MiT's."""

    def __init__(self, decoder_width: int | None) -> None:
        super().__init__()
        self.out_channels = [4, 6, 8, 10]
        self.strides = MIT_STRIDES
        self.embed_dim = 10
        self.patch_size = None
        self.in_chans = 3
        self.decoder_width = decoder_width

    def forward(self, images: Tensor) -> Features:
        B, _, H, W = images.shape
        maps = [torch.randn(B, c, H // s, W // s) for c, s in zip(self.out_channels, self.strides)]
        return Features(pooled=maps[-1].mean(dim=(2, 3)), maps=maps)


def mit_maps(B: int, H: int, W: int, channels: list[int] = MIT_B0_CHANNELS) -> list[Tensor]:
    return [torch.randn(B, c, H // s, W // s) for c, s in zip(channels, MIT_STRIDES)]


def test_logits_at_stride_4_from_maps_at_strides_4_to_32() -> None:
    head = SegFormerHead(MIT_B0_CHANNELS, MIT_STRIDES, K, embed_dim=32).eval()
    logits = head(mit_maps(2, 64, 96))
    assert head.output_stride == 4
    assert logits.shape == (2, K, 16, 24)


@pytest.mark.parametrize(
    ("decoder_width", "embed_dim", "expected"),
    [(256, None, 256), (768, None, 768), (None, None, 256), (768, 64, 64)],
)
def test_width_follows_the_backbone_unless_the_config_sets_it(
    decoder_width: int | None, embed_dim: int | None, expected: int
) -> None:
    config = SegFormerHeadConfig(name="segformer", embed_dim=embed_dim)
    head = build_seg_head(config, MIT_B0_CHANNELS, MIT_STRIDES, K, decoder_width=decoder_width)
    assert head.embed_dim == expected
    assert head.linear_c4.proj.out_features == expected
    assert head.linear_fuse.conv.in_channels == 4 * expected
    assert head.linear_pred.in_channels == expected


@pytest.mark.parametrize(
    ("decoder_width", "overrides", "expected"), [(768, [], 768), (768, ["eval.seg.head.embed_dim=48"], 48)]
)
def test_build_segmentor_reads_the_backbones_decoder_width(
    decoder_width: int, overrides: list[str], expected: int
) -> None:
    config = load_config(None, ["eval.seg.head.name=segformer", *overrides])
    segmentor = build_segmentor(FakeMiT(decoder_width), config, num_classes=3)
    assert segmentor.head.embed_dim == expected
    assert segmentor.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_maps_are_concatenated_coarsest_first() -> None:
    E = 8
    head = SegFormerHead(MIT_B0_CHANNELS, MIT_STRIDES, K, embed_dim=E).eval()
    fuse_inputs: list[Tensor] = []
    head.linear_fuse.register_forward_pre_hook(lambda module, args: fuse_inputs.append(args[0]))
    zeros = [torch.zeros_like(m) for m in mit_maps(1, 64, 64)]
    for index, expected_block in [(3, 0), (0, 3)]:  # c4 -> the first E channels, c1 -> the last E
        fuse_inputs.clear()
        maps = list(zeros)
        maps[index] = torch.randn_like(maps[index])
        with torch.no_grad():
            head(zeros)
            head(maps)
        signal = (fuse_inputs[1] - fuse_inputs[0]).abs().amax(dim=(0, 2, 3))  # (4 E,), the biases cancel
        blocks = signal.reshape(4, E).amax(dim=1)
        assert blocks[expected_block] > 0
        assert torch.count_nonzero(blocks) == 1, blocks


def official_decode_head(channels: list[int], E: int, num_classes: int) -> dict[str, Tensor]:
    """The `decode_head.*` entries of an NVlabs SegFormer checkpoint (names written by hand), random values."""
    shapes = {
        "decode_head.conv_seg.weight": (num_classes, 128, 1, 1),  # BaseDecodeHead's, unused by SegFormerHead
        "decode_head.conv_seg.bias": (num_classes,),
        "decode_head.linear_c4.proj.weight": (E, channels[3]),
        "decode_head.linear_c4.proj.bias": (E,),
        "decode_head.linear_c3.proj.weight": (E, channels[2]),
        "decode_head.linear_c3.proj.bias": (E,),
        "decode_head.linear_c2.proj.weight": (E, channels[1]),
        "decode_head.linear_c2.proj.bias": (E,),
        "decode_head.linear_c1.proj.weight": (E, channels[0]),
        "decode_head.linear_c1.proj.bias": (E,),
        "decode_head.linear_fuse.conv.weight": (E, 4 * E, 1, 1),
        "decode_head.linear_fuse.bn.weight": (E,),
        "decode_head.linear_fuse.bn.bias": (E,),
        "decode_head.linear_fuse.bn.running_mean": (E,),
        "decode_head.linear_fuse.bn.running_var": (E,),
        "decode_head.linear_pred.weight": (num_classes, E, 1, 1),
        "decode_head.linear_pred.bias": (num_classes,),
    }
    state = {name: torch.randn(shape) * 0.1 for name, shape in shapes.items()}
    state["decode_head.linear_fuse.bn.running_var"] = torch.rand(E) + 0.5
    state["decode_head.linear_fuse.bn.num_batches_tracked"] = torch.tensor(160000)
    return state


def nvlabs_forward(state: dict[str, Tensor], maps: list[Tensor]) -> Tensor:
    """NVlabs SegFormerHead.forward in eval mode, written with functional ops from the checkpoint tensors."""
    size = maps[0].shape[-2:]
    projected = []
    for i in (4, 3, 2, 1):
        x = maps[i - 1]
        B, _, H, W = x.shape
        weight, bias = state[f"linear_c{i}.proj.weight"], state[f"linear_c{i}.proj.bias"]
        tokens = F.linear(x.flatten(2).transpose(1, 2), weight, bias)  # (B, H * W, E)
        x = tokens.transpose(1, 2).reshape(B, -1, H, W)  # (B, E, H, W)
        projected.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    fused = F.conv2d(torch.cat(projected, dim=1), state["linear_fuse.conv.weight"])
    fused = F.batch_norm(fused, state["linear_fuse.bn.running_mean"], state["linear_fuse.bn.running_var"],
                         state["linear_fuse.bn.weight"], state["linear_fuse.bn.bias"], training=False)  # fmt: skip
    return F.conv2d(F.relu(fused), state["linear_pred.weight"], state["linear_pred.bias"])


def test_official_decode_head_keys_load_strictly_and_give_nvlabs_logits() -> None:
    checkpoint = official_decode_head(MIT_B0_CHANNELS, E=256, num_classes=K)
    state = {
        k.removeprefix("decode_head."): v
        for k, v in checkpoint.items()
        if not k.startswith("decode_head.conv_seg.")  # mmseg 0.x builds it, SegFormerHead never uses it
    }
    head = build_seg_head(SegFormerHeadConfig(name="segformer"), MIT_B0_CHANNELS, MIT_STRIDES, K, decoder_width=256)
    head.load_state_dict(state, strict=True)
    assert set(head.state_dict()) == set(state)
    maps = mit_maps(1, 32, 32)
    with torch.no_grad():
        logits = head.eval()(maps)
    torch.testing.assert_close(logits, nvlabs_forward(state, maps), rtol=1e-4, atol=1e-5)


def test_rejects_maps_not_finest_first() -> None:
    with pytest.raises(ValueError, match="finest map first"):
        SegFormerHead(MIT_B0_CHANNELS[::-1], MIT_STRIDES[::-1], K)
