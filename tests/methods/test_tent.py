"""TENT (methods/tent.py) on a tiny MiT-B0 + SegFormer segmentor: what trains, BatchNorm on batch
statistics, one step moving only norm affine parameters, entropy falling, target labels unused."""

from __future__ import annotations

import copy
import functools
import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pretrainlab.engine.optim import OptimConfig, build_optimizer, set_lr_and_weight_decay
from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.methods.tent import (
    TENT,
    TENTSettings,
    build_tent,
    configure_tent,
    entropy_loss_term,
    tent_trainable_patterns,
)
from pretrainlab.models.backbones.mit import MiTBackbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_segformer import SegFormerHeadConfig

K = 5
SIZE = 32
# 4 patch embeddings, norm1 + norm2 in 8 blocks, attn.norm in the 6 blocks of stages 1-3, 4 stage ends
NUM_MIT_B0_LAYER_NORMS = 30


@functools.cache
def _segmentor() -> Segmentor:
    """Built once, seeded, leaving the global RNG as the calling test had it."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    backbone = MiTBackbone("b0", drop_path_rate=0.0)
    head_config = SegFormerHeadConfig(embed_dim=32, dropout=0.0)
    head = build_seg_head(head_config, backbone.out_channels, backbone.strides, K, decoder_width=backbone.decoder_width)
    torch.set_rng_state(generator_state)
    return Segmentor(backbone, head)


def tiny_segmentor() -> Segmentor:
    """A fresh copy of one MiT-B0 + SegFormer head (K classes, no dropout / drop-path), built once."""
    return copy.deepcopy(_segmentor())


def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 3, SIZE, SIZE, generator=g),
        torch.randint(0, K, (2, SIZE, SIZE), generator=g),
        torch.randn(2, 3, SIZE, SIZE, generator=g) * 1.5 + 0.5,  # a shifted "target domain"
        torch.randint(0, K, (2, SIZE, SIZE), generator=g),
    )


def step_at(iteration: int) -> StepValues:
    return StepValues(iteration, 0, 1e-3, 0.0)


def norm_parameter_names(model: nn.Module) -> set[str]:
    """Names of the affine parameters of norm layers, found independently of `tent_trainable_patterns`."""
    return {f"{module_name}.{suffix}" for module_name, module in model.named_modules()
            if type(module).__name__ in ("LayerNorm", "BatchNorm2d") for suffix in ("weight", "bias")}  # fmt: skip


def test_only_norm_affine_parameters_train() -> None:
    method = TENT(tiny_segmentor())
    trainable = {name for name, p in method.student.named_parameters() if p.requires_grad}
    assert trainable == norm_parameter_names(method.student)
    assert len(trainable) == 2 * (NUM_MIT_B0_LAYER_NORMS + 1)  # + the decoder's linear_fuse.bn
    assert {"head.linear_fuse.bn.weight", "backbone.model.stages.0.blocks.0.norm1.bias"} <= trainable
    assert set(method.trainable.trainable) == trainable
    frozen = {name for name, p in method.student.named_parameters() if not p.requires_grad}
    assert set(method.trainable.frozen) == frozen
    assert "head.linear_pred.weight" in frozen and "backbone.model.stages.0.blocks.0.attn.q.weight" in frozen


def test_batch_norms_keep_no_running_statistics() -> None:
    segmentor = tiny_segmentor()
    assert "head.linear_fuse.bn.running_mean" in segmentor.state_dict()
    TENT(segmentor)
    batch_norms = [m for m in segmentor.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batch_norms) == 1
    for bn in batch_norms:
        assert bn.track_running_stats is False
        assert bn.running_mean is None and bn.running_var is None
    assert not any(key.endswith(("running_mean", "running_var")) for key in segmentor.state_dict())


def test_batch_norm_uses_the_batch_statistics_in_eval_mode() -> None:
    segmentor = tiny_segmentor()
    configure_tent(segmentor)
    bn = segmentor.head.linear_fuse.bn.eval()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, bn.num_features))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, bn.num_features))
    x = torch.randn(3, bn.num_features, 4, 4) * 3.0 + 2.0
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source_weight", [0.0, 1.0])
def test_a_step_moves_only_the_norm_affine_parameters(source_weight: float) -> None:
    method = TENT(tiny_segmentor(), TENTSettings(source_weight=source_weight)).train()
    optimizer = build_optimizer(method, OptimConfig(lr=1e-3, lr_multipliers={"student.head": 10.0}))
    set_lr_and_weight_decay(optimizer, 1e-3, 0.01)
    before = {key: value.clone() for key, value in method.state_dict().items()}
    outputs = method.training_step(tiny_batch(), step_at(0))
    assert ("loss_source" in outputs) == (source_weight > 0)
    sum(value for key, value in outputs.items() if key.startswith("loss")).backward()
    optimizer.step()
    after = method.state_dict()
    assert after.keys() == before.keys()
    trainable = {f"student.{name}" for name in method.trainable.trainable}
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == trainable  # every norm weight / bias moved; every other tensor is bit-identical


def test_entropy_falls_over_steps_on_a_fixed_batch() -> None:
    method = TENT(tiny_segmentor()).train()
    optimizer = build_optimizer(method, OptimConfig(lr=1e-2))
    set_lr_and_weight_decay(optimizer, 1e-2, 0.0)
    batch = tiny_batch()
    entropies = []
    for iteration in range(4):
        outputs = method.training_step(batch, step_at(iteration))
        entropies.append(float(outputs["target_entropy"]))
        optimizer.zero_grad()
        outputs["loss_entropy"].backward()
        optimizer.step()
    assert entropies[0] > 0.5 * math.log(K)  # an untrained head is far from confident
    assert all(later < earlier for earlier, later in itertools.pairwise(entropies)), entropies
    assert entropies[-1] < entropies[0] - 0.02, entropies


def test_target_labels_only_give_the_logged_accuracy() -> None:
    method = TENT(tiny_segmentor(), TENTSettings(source_weight=1.0)).eval()  # eval: a deterministic forward
    source_images, source_labels, target_images, _ = tiny_batch()
    with torch.no_grad():
        prediction = method.student(target_images).argmax(dim=1)  # (B, H, W)
    wrong_or_ignored = (prediction + 1) % K
    wrong_or_ignored[:, SIZE // 2 :] = 255  # the wrong top half is all that counts
    cases = {"right": (prediction, 1.0), "wrong_or_ignored": (wrong_or_ignored, 0.0)}
    losses, grads = {}, {}
    for name, (labels, accuracy) in cases.items():
        method.zero_grad()
        outputs = method.training_step((source_images, source_labels, target_images, labels), step_at(0))
        assert float(outputs["target_accuracy"]) == accuracy, name
        (outputs["loss_entropy"] + outputs["loss_source"]).backward()
        losses[name] = (outputs["loss_entropy"].detach(), outputs["loss_source"].detach())
        grads[name] = [p.grad.clone() for p in method.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(losses["wrong_or_ignored"], losses["right"]))
    assert all(torch.equal(a, b) for a, b in zip(grads["wrong_or_ignored"], grads["right"]))
    all_ignored = torch.full_like(prediction, 255)
    with torch.no_grad():
        outputs = method.training_step((source_images, source_labels, target_images, all_ignored), step_at(0))
    assert "target_accuracy" not in outputs


def test_source_replay_loss_is_the_weighted_source_cross_entropy() -> None:
    method = TENT(tiny_segmentor(), TENTSettings(source_weight=2.5)).eval()
    source_images, source_labels, target_images, target_labels = tiny_batch()
    source_labels[0, :4] = 255
    outputs = method.training_step((source_images, source_labels, target_images, target_labels), step_at(0))
    with torch.no_grad():
        expected = 2.5 * segmentation_cross_entropy(method.student(source_images), source_labels, avg_non_ignore=False)
    torch.testing.assert_close(outputs["loss_source"].detach(), expected)


def test_pure_tent_never_looks_at_the_source_batch() -> None:
    method = TENT(tiny_segmentor()).train()
    _, _, target_images, target_labels = tiny_batch()
    nan_source = torch.full((2, 3, SIZE, SIZE), float("nan"))
    outputs = method.training_step((nan_source, torch.zeros(2, SIZE, SIZE, dtype=torch.long), target_images,
                                    target_labels), step_at(0))  # fmt: skip
    assert sorted(key for key in outputs if key.startswith("loss")) == ["loss_entropy"]
    assert torch.isfinite(outputs["loss_entropy"])


def test_entropy_loss_term_weights_the_entropy_and_logs_it_detached() -> None:
    logits = torch.zeros(2, K, 3, 3, requires_grad=True)  # uniform: entropy log K
    term = entropy_loss_term(logits, 0.5)
    assert term["loss_entropy"].item() == pytest.approx(0.5 * math.log(K), abs=1e-6)
    assert float(term["target_entropy"]) == pytest.approx(math.log(K), abs=1e-6)
    assert term["loss_entropy"].requires_grad and not term["target_entropy"].requires_grad
    with pytest.raises(ValueError, match="entropy weight"):
        entropy_loss_term(logits, 0.0)


def test_patterns_name_affine_norm_parameters_of_any_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4),
        nn.LayerNorm([4, 5, 5], elementwise_affine=False), nn.BatchNorm2d(4, affine=False),
    )  # fmt: skip
    assert tent_trainable_patterns(model) == ["1.weight", "1.bias", "4.weight", "4.bias"]
    with pytest.raises(ValueError, match="no normalisation layer"):
        tent_trainable_patterns(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_freeze_patterns_apply_on_top_of_the_norm_selection() -> None:
    segmentor = tiny_segmentor()
    split = configure_tent(segmentor, freeze=["backbone"])
    assert split.trainable == ("head.linear_fuse.bn.weight", "head.linear_fuse.bn.bias")
    with pytest.raises(ValueError, match="freeze pattern 'backbonez'"):
        configure_tent(tiny_segmentor(), freeze=["backbonez"])


def test_settings_defaults_and_validation() -> None:
    settings = TENTSettings()
    assert (settings.entropy_weight, settings.source_weight) == (1.0, 0.0)
    assert settings.lr == pytest.approx(7.5e-6)
    assert settings.betas == (0.9, 0.999)
    for bad in ({"entropy_weight": 0.0}, {"source_weight": -1.0}, {"betas": (0.9, 1.0)}, {"entropy_wieght": 1.0}):
        with pytest.raises(ValidationError):
            TENTSettings.model_validate(bad)


def test_build_tent_evaluates_the_adapted_student() -> None:
    segmentor = tiny_segmentor()
    method = build_tent(segmentor, TENTSettings())
    assert method.segmentor() is segmentor
    assert method.eval_backbone() is segmentor.backbone
