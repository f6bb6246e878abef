"""Filter-normalised directions (analysis/landscape_directions.py) against loss-landscape's
`normalize_directions_for_weights` (reference numbers), by hand, and `WeightPlane`: weights set
exactly, buffers and the head untouched, the loss equal to the plain cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_reference
from torch import nn

from pretrainlab.analysis.landscape_directions import (
    WeightPlane,
    filter_normalize_,
    plane_losses,
    random_directions,
)
from pretrainlab.analysis.probed_model import BackboneClassifier
from pretrainlab.eval.linear_probe import ProbeHead
from pretrainlab.models.backbones.timm_backbone import TimmBackbone


def tiny_classifier(seed: int = 0, num_classes: int = 4) -> BackboneClassifier:
    """A ResNet with one block per stage (8-16 channels) and a random probe; BN running stats set to
    values no forward in eval mode would produce, so a change shows."""
    torch.manual_seed(seed)
    backbone = TimmBackbone("resnet18", layers=(1, 1, 1, 1), channels=(8, 8, 16, 16), small_input_stem=True)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    dim = backbone.embed_dim
    head = ProbeHead(torch.randn(dim) * 0.1, torch.rand(dim) + 0.5, torch.randn(dim, num_classes), torch.randn(num_classes))
    return BackboneClassifier(backbone, head).eval()


def tiny_images(num: int = 24, size: int = 16, num_classes: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num, 3, size, size, generator=generator), torch.randint(0, num_classes, (num,), generator=generator)


@pytest.mark.reference
def test_every_reference_case_is_reproduced() -> None:
    ref = load_reference("landscape")
    for case in range(int(ref["n_cases"])):
        assert str(ref[f"case{case}/norm"]) == "filter" and str(ref[f"case{case}/ignore"]) == "biasbn"
        for j in range(int(ref[f"case{case}/n_tensors"])):
            weight = torch.from_numpy(ref[f"case{case}/w{j}"].copy())
            expected = torch.from_numpy(ref[f"case{case}/out{j}"])
            weight_before = weight.clone()
            ours = filter_normalize_(torch.from_numpy(ref[f"case{case}/d{j}"].copy()), weight)
            where = f"case {case} tensor {j} {ref[f'case{case}/names'][j]} {tuple(weight.shape)}"
            assert torch.equal(weight, weight_before), where
            assert ours.dtype == torch.float32 and ours.shape == expected.shape, where
            scale = float(expected.abs().max())
            assert float((ours - expected).abs().max()) <= 1e-5 * scale, where
            if expected.ndim <= 1:
                assert torch.equal(ours, torch.zeros_like(ours)), where  # biases, BN / LN: exactly 0
                continue
            zero_filters = (expected.reshape(len(expected), -1) == 0).all(dim=1)
            assert torch.equal(ours[zero_filters], expected[zero_filters]), where  # exact (-0.0 == 0)
            assert torch.equal(ours[zero_filters].signbit(), expected[zero_filters].signbit()), where  # -0.0 kept


def test_filter_normalisation_by_hand() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])  # filter norms 5, 0, 1
    direction = torch.tensor([[1.0, 0.0], [-2.0, 1.0], [0.0, 0.0]])  # filter norms 1, sqrt 5, 0
    out = filter_normalize_(direction, weight)
    assert out is direction  # in place, as the original
    assert torch.allclose(out, torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), rtol=0, atol=1e-6)
    assert torch.signbit(out[1, 0])  # zero weight filter: -0.0 where d was negative, as the original
    conv_weight = torch.full((2, 3, 2, 2), 0.5)  # filter norm sqrt(12 * 0.25) = sqrt 3
    conv_direction = filter_normalize_(torch.ones(2, 3, 2, 2) * torch.tensor([1.0, -3.0]).view(2, 1, 1, 1), conv_weight)
    assert torch.allclose(conv_direction[0], torch.full((3, 2, 2), 0.5), atol=1e-6)
    assert torch.allclose(conv_direction[1], torch.full((3, 2, 2), -0.5), atol=1e-6)
    assert torch.equal(filter_normalize_(torch.randn(5), torch.randn(5)), torch.zeros(5))
    whole = filter_normalize_(torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[0.0, 7.0]]]))  # dim 0 of size 1
    assert torch.allclose(whole, torch.tensor([[[7.0, 0.0]]]))
    with pytest.raises(ValueError, match=r"direction shape \(2, 3\) differs from weight shape \(3, 2\)"):
        filter_normalize_(torch.zeros(2, 3), torch.zeros(3, 2))


def test_random_directions_are_the_originals_draws_after_manual_seed() -> None:
    weights = [torch.randn(6, 3, 3, 3), torch.rand(6), torch.randn(4, 6) * 0.1, torch.randn(4)]
    x, y = random_directions(weights, 2, seed=7)
    torch.manual_seed(7)  # the original: torch.randn(w.size()) per weight from the global generator, x then y
    for original_direction in (x, y):
        drawn = [filter_normalize_(torch.randn(w.size()), w) for w in weights]
        for ours, theirs in zip(original_direction, drawn):
            assert torch.equal(ours, theirs)
    for weight, d in zip(weights, x):
        if weight.ndim > 1:
            assert torch.allclose(d.flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1), rtol=1e-5)
    assert not torch.equal(x[0], y[0])
    assert torch.equal(random_directions(weights, 1, seed=7)[0][0], x[0])
    assert not torch.equal(random_directions(weights, 1, seed=8)[0][0], x[0])
    with pytest.raises(ValueError, match="1 or 2 directions, got 3"):
        random_directions(weights, 3, seed=0)


def plane_of(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options: object) -> WeightPlane:
    directions = random_directions(list(model.backbone.parameters()), 2, seed=0)
    settings = {"batch_size": 10, "precision": "fp32", "channels_last": True, **options}
    return WeightPlane(model, "backbone", directions, images, labels, **settings)


def test_weight_plane_sets_base_plus_offset_and_returns_to_the_base_bits() -> None:
    model = tiny_classifier()
    base = {name: value.clone() for name, value in model.state_dict().items()}
    plane = plane_of(model, *tiny_images())
    x, y = 0.3, -0.7
    plane.set_point((x, y))
    for param, b, d1, d2 in zip(plane.params, plane.base, *plane.directions):
        assert torch.allclose(param, b + (x * d1 + y * d2), rtol=1e-6, atol=1e-7)
    moved = [name for name, value in model.backbone.named_parameters() if not torch.equal(value, base[f"backbone.{name}"])]
    assert moved and all(model.backbone.get_parameter(name).ndim > 1 for name in moved)  # biases, BN affine: fixed
    plane.loss((1.0, 1.0))
    plane.set_point((0.0, 0.0))
    for name, value in model.state_dict().items():
        assert torch.equal(value, base[name]), name  # parameters bit for bit, BN running stats, the head
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_loss_at_the_origin_is_the_plain_cross_entropy_and_buffers_stay() -> None:
    model = tiny_classifier()
    images, labels = tiny_images()
    with torch.no_grad():
        expected = float(F.cross_entropy(model(images), labels))
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    for channels_last in (True, False):
        plane = plane_of(tiny_classifier(), images, labels, channels_last=channels_last, batch_size=7)
        assert math.isclose(plane.loss((0.0, 0.0)), expected, rel_tol=1e-5)
        assert plane.loss((0.5, -0.5)) != pytest.approx(expected, rel=1e-3)  # the weights did move
        for name, value in plane.model.named_buffers():
            assert torch.equal(value, buffers[name]), name  # eval mode: running stats never updated
    bf16 = plane_of(tiny_classifier(), images, labels, precision="bf16").loss((0.0, 0.0))
    assert bf16 != expected and math.isclose(bf16, expected, rel_tol=0.02)


def test_plane_losses_in_process_cover_every_chunk_and_bad_inputs_are_named() -> None:
    model = tiny_classifier()
    images, labels = tiny_images()
    plane = plane_of(model, images, labels)
    chunks = [("a", [(0.0, 0.0), (0.25, 0.0)]), ("b", [(0.0, 0.5)])]
    results = dict(plane_losses(plane, model, chunks, workers=1, threads=1))
    assert results["a"][0] == plane.loss((0.0, 0.0)) and results["b"] == [plane.loss((0.0, 0.5))]
    assert len(set(results["a"] + results["b"])) == 3
    directions = random_directions(list(model.backbone.parameters()), 1, seed=0)
    with pytest.raises(ValueError, match="direction has 1 tensors, submodule 'backbone' has"):
        WeightPlane(tiny_classifier(), "backbone", [directions[0][:1]], images, labels, batch_size=4, precision="fp32",
                    channels_last=False)  # fmt: skip
    with pytest.raises(ValueError, match="precision must be one of bf16, fp32, got 'fp16'"):
        plane_of(tiny_classifier(), images, labels, precision="fp16")
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\) and labels \(N,\)"):
        plane_of(tiny_classifier(), images, labels[:3])
    with pytest.raises(ValueError, match="1 coordinates for 2 directions"):
        plane.set_point((0.1,))
    assert np.isfinite(plane.loss((1.0, 1.0)))
