"""K-Net head: group feature assembling and the kernel updator's gates against hand-computed numbers,
the loss as the sum of every prediction's cross-entropy, a tiny head fitting one batch, the config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pretrainlab.config.loading import ConfigError, load_config
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.models.heads import KNetHead, KNetHeadConfig
from pretrainlab.models.heads.seg_base import SEG_HEADS, build_seg_head, resize_to
from pretrainlab.models.layers.kernel_update import KernelUpdator, assemble_group_features

K = 3
CHANNELS, STRIDES, SIZES = [8, 16], [4, 8], [8, 4]  # two maps of a 32-px input


def small_head(**overrides: object) -> KNetHead:
    settings = {"channels": 16, "num_heads": 2, "ffn_dim": 32, "updator_dim": 8, "num_stages": 2, "pool_scales": (1, 2)}
    return build_seg_head(KNetHeadConfig(**{**settings, **overrides}), CHANNELS, STRIDES, K)


def random_maps(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s) for c, s in zip(CHANNELS, SIZES)]


def blocky_labels(batch: int = 2, size: int = 32, block: int = 8) -> torch.Tensor:
    cells = torch.randint(0, K, (batch, size // block, size // block))  # (B, H / block, W / block)
    return cells.repeat_interleave(block, 1).repeat_interleave(block, 2)  # (B, H, W)


def test_assembled_feature_of_a_kernel_is_the_sum_of_the_features_in_its_region() -> None:
    features = torch.arange(16.0).reshape(1, 1, 4, 4)  # (B, C, H, W)
    regions = torch.zeros(1, 3, 4, 4, dtype=torch.bool)  # kernel 0: left half, 1: right half, 2: nowhere
    regions[0, 0, :, :2] = True
    regions[0, 1, :, 2:] = True
    mask_logits = torch.where(regions, 20.0, -20.0)
    assembled = assemble_group_features(mask_logits, features)  # (B, K, C)
    left = sum(4 * row + col for row in range(4) for col in range(2))  # 52
    torch.testing.assert_close(assembled, torch.tensor([[[left], [120.0 - left], [0.0]]]), atol=1e-3, rtol=0)


def test_masks_are_normalised_over_the_kernels_as_mmseg_does() -> None:
    features = torch.ones(1, 1, 2, 2)
    mask_logits = torch.full((1, 2, 2, 2), 20.0)  # both kernels claim every pixel
    torch.testing.assert_close(assemble_group_features(mask_logits, features), torch.full((1, 2, 1), 2.0))


def forced_updator(*, input_gate: float, update_gate: float) -> KernelUpdator:
    """A 4-dim updator whose `*_out` halves copy their inputs, gates fixed by their LayerNorm bias
    (±30 -> sigmoid 1 or 0), and whose output Linear is the identity."""
    updator = KernelUpdator(4)
    eye = torch.eye(4)
    with torch.no_grad():
        for layer in (updator.dynamic_layer, updator.input_layer):
            layer.weight.copy_(torch.cat([torch.randn(4, 4), eye]))  # rows: the `*_in` half, then `*_out`
            layer.bias.zero_()
        for norm, value in ((updator.norm_input_gate, input_gate), (updator.norm_update_gate, update_gate)):
            norm.weight.zero_()  # the gate is sigmoid(norm bias) whatever the features
            norm.bias.fill_(value)
        updator.fc.weight.copy_(eye)
        updator.fc.bias.zero_()
    return updator


@pytest.mark.parametrize(
    "gates, expected",
    [
        ((30.0, -30.0), [0.0, 0.0, 0.4472, 1.3416]),  # input gate 1, update gate 0: ReLU(standardised kernel)
        ((-30.0, 30.0), [1.7320, 0.0, 0.0, 0.0]),  # input gate 0, update gate 1: ReLU(standardised feature)
    ],
)
def test_kernel_updator_gates_select_the_kernel_or_the_assembled_feature(
    gates: tuple[float, float], expected: list[float]
) -> None:
    updator = forced_updator(input_gate=gates[0], update_gate=gates[1])
    kernels = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assembled = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(updator(assembled, kernels), torch.tensor([expected]), atol=1e-3, rtol=0)


def test_loss_is_the_sum_of_the_cross_entropies_of_the_generator_and_every_stage() -> None:
    head = small_head(num_stages=3).eval()  # eval: no dropout, the two calls see the same logits
    maps, labels = random_maps(), blocky_labels()
    labels[0, :8] = 255
    losses = head.loss(maps, labels, avg_non_ignore=True)
    assert set(losses) == {"loss", "ce_stage_0", "ce_stage_1", "ce_stage_2", "ce_stage_3"}
    predictions = head.predictions(maps)
    assert len(predictions) == 4 and all(p.shape == (2, K, 8, 8) for p in predictions)
    expected = [segmentation_cross_entropy(resize_to(p, (32, 32)), labels, avg_non_ignore=True) for p in predictions]
    for i, ce in enumerate(expected):
        torch.testing.assert_close(losses[f"ce_stage_{i}"], ce)
    torch.testing.assert_close(losses["loss"], sum(expected))
    assert losses["loss"].requires_grad and not losses["ce_stage_0"].requires_grad  # logged, not summed twice
    torch.testing.assert_close(head(maps), predictions[-1])


def test_initial_kernels_are_the_classifier_weights_and_reach_the_first_stage() -> None:
    head = small_head(num_stages=1).eval()
    seen = {}
    head.stages[0].register_forward_pre_hook(lambda module, args: seen.update(kernels=args[1]))
    head(random_maps())
    classifier = head.kernel_generator.classifier.weight[:, :, 0, 0]  # (K, C)
    torch.testing.assert_close(seen["kernels"], classifier.expand(2, -1, -1))


def test_a_tiny_head_fits_one_batch() -> None:
    torch.manual_seed(0)
    head = small_head(dropout=0.0)
    maps, labels = random_maps(), blocky_labels()
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = head.loss(maps, labels, avg_non_ignore=False)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = head.loss(maps, labels, avg_non_ignore=False)["loss"].item()
        accuracy = (resize_to(head(maps), (32, 32)).argmax(1) == labels).float().mean().item()
    assert final < first / 4  # 3.3-3.6 -> 0.4-0.7 over seeds 0-4
    assert accuracy > 0.9


def test_config_rejects_widths_the_attention_or_the_updator_cannot_split() -> None:
    with pytest.raises(ValidationError, match=r"channels=20 must be divisible by num_heads=8 \(self-attention"):
        KNetHeadConfig(channels=20)
    with pytest.raises(ValidationError, match="channels=384 must be divisible by updator_dim=256"):
        KNetHeadConfig(channels=384)
    with pytest.raises(ConfigError, match="num_heads=8"):
        load_config(None, ["eval.seg.head.name=knet", "eval.seg.head.channels=100"])


def test_config_loads_by_name_with_mmseg_defaults() -> None:
    head = load_config(None, ["eval.seg.head.name=knet"]).eval.seg.head
    assert isinstance(head, KNetHeadConfig) and SEG_HEADS.get("knet").config is KNetHeadConfig
    assert (head.channels, head.num_stages, head.num_heads, head.ffn_dim, head.updator_dim) == (512, 3, 8, 2048, 256)
    assert head.use_feat_transform and head.num_mask_fcs == 1 and head.dropout == 0.1
