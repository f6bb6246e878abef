"""MAE method (W4): segment token rule, the four masking methods' exports, `stack` from the release layout,
and the masked-image samples."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.config import load_config
from pretrainlab.data.formats.masks import read_segment
from pretrainlab.data.masked_images import SegmentMaskedImages
from pretrainlab.methods.base import build_method
from pretrainlab.methods.mae import MAE
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.checkpoint import load_backbone_checkpoint

VIT = {"backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 32, "backbone.patch_size": 8,
       "backbone.embed_dim": 32, "backbone.depth": 2, "backbone.num_heads": 2}  # fmt: skip
DEPTH, DECODER_DEPTH, WIDTH, DECODER_WIDTH, PATCH, GRID = 2, 1, 32, 16, 8, 4


def mae_config(mask_method: str = "patches", **extra: object):
    overrides = {**VIT, "method.name": "mae", "method.mask_method": mask_method, "method.masks.root": "masks",
                 "method.decoder.embed_dim": DECODER_WIDTH, "method.decoder.depth": DECODER_DEPTH,
                 "method.decoder.num_heads": 2, "study.phases": [{"name": "pretrain"}], **extra}  # fmt: skip
    return load_config(None, [f"{key}={value}" for key, value in overrides.items()])


def build(mask_method: str = "patches", **extra: object) -> MAE:
    torch.manual_seed(0)
    method = build_method(mae_config(mask_method, **extra))
    assert isinstance(method, MAE)
    return method


def test_segments_mark_the_patches_at_least_half_hidden() -> None:
    method = build("segments")
    hidden = torch.zeros(1, 1, 32, 32)
    hidden[0, 0, 0:8, 0:4] = 1.0  # patch 0: exactly 50 % -> removed
    hidden[0, 0, 0:8, 8:11] = 1.0  # patch 1: 37.5 % -> kept
    hidden[0, 0, 8:16, 8:16] = 1.0  # patch 5: 100 % -> removed
    hidden[0, 0, 31, 31] = 1.0  # patch 15: one pixel -> kept
    expected = torch.zeros(1, GRID * GRID)
    expected[0, [0, 5]] = 1.0
    assert torch.equal(method.segment_token_mask(hidden), expected)


def test_segments_zero_the_hidden_pixels_and_score_the_rule_tokens() -> None:
    method = build("segments").eval()
    images = torch.randn(2, 3, 32, 32)
    hidden = torch.zeros(2, 1, 32, 32)
    hidden[:, :, :16, :16] = 1.0  # patches 0, 1, 4, 5
    seen: list[torch.Tensor] = []
    method.encoder.model.patch_embed.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    pred, mask = method.forward_masked(images, hidden, torch.tensor([True, False]), torch.rand(2, GRID * GRID))
    assert pred.shape == (2, GRID * GRID, PATCH * PATCH * 3)
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert mask[1].sum() == 12  # no segment: random patches at the 0.75 ratio
    encoder_input = seen[0]
    assert encoder_input.shape == (2, 3, 32, 32)  # every patch is encoded (zeroed, not dropped)
    assert torch.all(encoder_input[0, :, :16, :16] == 0) and torch.equal(encoder_input[0, :, 16:], images[0, :, 16:])
    removed_pixels = method.token_to_pixel_mask(mask)[1, 0] > 0
    assert torch.all(encoder_input[1][:, removed_pixels] == 0)


def test_patches_encode_only_the_kept_tokens() -> None:
    method = build("patches").eval()
    tokens = method.encode(torch.randn(2, 3, 32, 32), torch.tensor([[0, 3, 7, 9], [1, 2, 4, 15]]))
    assert tokens.shape == (2, 1 + 4, WIDTH)


def test_four_channels_export_equals_the_model_fed_a_constant_one_channel(tmp_path: Path) -> None:
    method = build("four_channels").eval()
    with torch.no_grad():  # not the init's zero bias: the folded bias must carry it
        method.encoder.model.patch_embed.proj.bias.normal_()
    exported = method.eval_backbone().eval()
    assert exported.in_chans == 3 and exported.model.patch_embed.proj.in_channels == 3
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        four = method.encoder(torch.cat([images, torch.ones(2, 1, 32, 32)], dim=1))
        three = exported(images)
    torch.testing.assert_close(three.pooled, four.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(three.maps[0], four.maps[0], atol=1e-5, rtol=0)
    path = tmp_path / "backbone.pt"
    torch.save(exported.state_dict(), path)
    plain = TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=WIDTH, depth=DEPTH, num_heads=2)
    report = load_backbone_checkpoint(plain, path)
    assert report.is_complete, report.format()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(images).pooled, three.pooled, atol=1e-6, rtol=0)


def test_preencoder_is_trained_and_dropped_on_export(tmp_path: Path) -> None:
    method = build("preencoder")
    assert method.preencoder is not None and any(name.startswith("preencoder.") for name in method.state_dict())
    exported = method.eval_backbone()
    assert exported.in_chans == 3 and not any("preencoder" in key for key in exported.state_dict())
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": exported.state_dict()}, path)
    plain = TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=WIDTH, depth=DEPTH, num_heads=2)
    assert load_backbone_checkpoint(plain, path).is_complete
    x = torch.randn(1, 4, 32, 32)
    torch.testing.assert_close(method.preencoder(x), x[:, :3])  # starts as the identity on RGB


def release_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights under the official release's key names (models_mae.MaskedAutoencoderViT)."""
    hidden, num_patches = 4 * WIDTH, GRID * GRID
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, WIDTH), "pos_embed": (1, 1 + num_patches, WIDTH),
        "patch_embed.proj.weight": (WIDTH, 3, PATCH, PATCH), "patch_embed.proj.bias": (WIDTH,),
        "norm.weight": (WIDTH,), "norm.bias": (WIDTH,),
        "decoder_embed.weight": (DECODER_WIDTH, WIDTH), "decoder_embed.bias": (DECODER_WIDTH,),
        "mask_token": (1, 1, DECODER_WIDTH), "decoder_pos_embed": (1, 1 + num_patches, DECODER_WIDTH),
        "decoder_norm.weight": (DECODER_WIDTH,), "decoder_norm.bias": (DECODER_WIDTH,),
        "decoder_pred.weight": (PATCH * PATCH * 3, DECODER_WIDTH), "decoder_pred.bias": (PATCH * PATCH * 3,),
    }  # fmt: skip
    for prefix, depth, width in (("blocks", DEPTH, WIDTH), ("decoder_blocks", DECODER_DEPTH, DECODER_WIDTH)):
        for i in range(depth):
            block = {"norm1.weight": (width,), "norm1.bias": (width,), "attn.qkv.weight": (3 * width, width),
                     "attn.qkv.bias": (3 * width,), "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
                     "norm2.weight": (width,), "norm2.bias": (width,), "mlp.fc1.weight": (4 * width, width),
                     "mlp.fc1.bias": (4 * width,), "mlp.fc2.weight": (width, 4 * width), "mlp.fc2.bias": (width,)}  # fmt: skip
            shapes.update({f"{prefix}.{i}.{key}": shape for key, shape in block.items()})
    assert hidden == 4 * WIDTH
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def test_stack_loads_an_official_release_checkpoint_completely(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: E501
    release = release_state_dict(torch.Generator().manual_seed(1))
    path = tmp_path / "mae_pretrain_release.pth"
    torch.save({"model": release, "epoch": 799}, path)  # the release's layout
    with caplog.at_level(logging.INFO, logger="pretrainlab.models.checkpoint"):
        method = build("patches", **{"method.stack": str(path)})
    state = method.state_dict()
    assert torch.equal(state["encoder.model.blocks.1.mlp.fc2.weight"], release["blocks.1.mlp.fc2.weight"])
    assert torch.equal(state["decoder.blocks.0.attn.qkv.bias"], release["decoder_blocks.0.attn.qkv.bias"])
    assert torch.equal(state["decoder.mask_token"], release["mask_token"])
    assert torch.equal(state["decoder.pos_embed"], release["decoder_pos_embed"])
    assert torch.equal(state["encoder.model.pos_embed"], release["pos_embed"])
    report = "\n".join(r.getMessage() for r in caplog.records if "mae_pretrain_release.pth" in r.getMessage())
    assert "missing      0" in report and "unexpected   0" in report and "mismatched   0" in report, report
    assert f"loaded       {len(release)} / {len(release)}" in report, report


def test_masked_samples_follow_the_chosen_segment(tiny_synthetic: Path) -> None:
    seg = tiny_synthetic / "segmentation"
    masks = seg / "sam_masks" / "training"
    options = {"size": 64, "patch_size": 8, "mean": (0.5,) * 3, "std": (0.5,) * 3, "seed": 3, "masks_root": masks,
               "coverage_ratio": 30.0, "scale": (1.0, 1.0), "flip_p": 0.0}  # fmt: skip
    dataset = SegmentMaskedImages(seg / "images" / "training", **options)
    image, hidden, has_segment, noise = dataset[(0, 0)]
    expected = read_segment(masks, dataset.stem(0), "sam_json", 30.0)
    assert has_segment and expected is not None and image.shape == (3, 64, 64) and noise.shape == (64,)
    assert torch.equal(hidden[0].bool(), torch.from_numpy(expected))  # full-image crop, no flip
    again = dataset[(0, 0)]
    first = (image, hidden, has_segment, noise)
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(again, first, strict=True))
    assert not torch.equal(dataset[(1, 0)][3], noise)  # a new epoch draws new noise

    (masks / f"{dataset.stem(1)}.json").rename(masks / "elsewhere.json")  # image 1 loses its mask set
    try:
        fallback = SegmentMaskedImages(seg / "images" / "training", **options)
        assert fallback.segment_report()["without_mask_set"] == 1
        assert fallback[(0, 1)][2] is False
    finally:
        (masks / "elsewhere.json").rename(masks / f"{dataset.stem(1)}.json")


def test_config_errors_name_the_key() -> None:
    with pytest.raises(Exception, match="method.masks.root: mask_method segments needs segment masks"):
        load_config(None, [f"{k}={v}" for k, v in {**VIT, "method.name": "mae", "method.mask_method": "segments",
                                                    "study.phases": [{"name": "pretrain"}]}.items()])  # fmt: skip
    with pytest.raises(Exception, match="needs a timm ViT backbone"):
        load_config(None, ["method.name=mae", "study.phases=[{name: pretrain}]"])
    assert np.isclose(mae_config().optim.betas[1], 0.999)  # recipe betas come from the W4 configs, not magic


def test_every_three_channel_method_starts_from_the_same_encoder() -> None:
    reference = build("patches").eval_backbone().state_dict()
    for mask_method in ("segments", "preencoder"):
        state = build(mask_method).eval_backbone().state_dict()
        assert all(torch.equal(state[key], value) for key, value in reference.items()), mask_method
