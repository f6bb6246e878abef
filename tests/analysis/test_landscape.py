"""Loss landscapes (analysis/landscape.py) on a tiny constructed classifier: the grid origin is the
plain cross-entropy, the model is left bit for bit, 2 workers give the values of 1, an interrupted
grid resumes to the same values, other options / weights are refused, the loss rise, the figures
and the Markdown; end to end on a tiny study's run directory (slow)."""

from __future__ import annotations

import argparse
import math
from collections import OrderedDict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, tiny_run_overrides
from test_landscape_directions import tiny_classifier, tiny_images
from torch import nn

from pretrainlab.analysis.landscape import (
    BF16_ORIGIN_TOLERANCE,
    LandscapeOptions,
    LandscapeResult,
    add_cli_arguments,
    compute_landscape,
    evenly_spaced,
    loss_rise,
    plot_landscape,
    run_cli,
    write_markdown_section,
)

FP32_1D = LandscapeOptions(dims=1, steps=5, low=-1.0, high=1.0, precision="fp32")
FP32_2D = LandscapeOptions(dims=2, steps=4, low=-0.5, high=1.0, precision="fp32")


class Interrupted(Exception):
    pass


def torch_only_classifier() -> nn.Sequential:
    """conv-BN-ReLU x 2 -> pool -> linear, torch modules only: spawned workers unpickle it without
    importing timm (a 2-worker pool then starts in ~2 s instead of ~6)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                             nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
    for bn in (backbone[1], backbone[4]):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return nn.Sequential(OrderedDict(backbone=backbone, head=nn.Linear(16, 4))).eval()


def test_grid_origin_is_the_plain_cross_entropy_and_the_model_is_untouched() -> None:
    model = tiny_classifier()
    images, labels = tiny_images()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        expected = float(F.cross_entropy(model(images), labels))
    result = compute_landscape(model, images, labels, FP32_1D, workers=1, batch_size=10, num_threads=1)
    assert result.complete and result.num_evaluated == 5 and result.sessions == 1
    np.testing.assert_allclose(result.x, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert math.isclose(result.losses[2], expected, rel_tol=1e-5)
    assert result.origin_loss == result.origin_loss_fp32 and math.isclose(result.origin_loss, expected, rel_tol=1e-5)
    assert all(abs(loss - expected) > 1e-3 * expected for loss in result.losses[[0, 1, 3, 4]])  # the weights moved
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name  # parameters and BN running stats, bit for bit
        assert value.is_contiguous(), name  # not even converted to channels-last
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_auto_precision_takes_bf16_only_within_the_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pretrainlab.analysis.landscape.has_fast_bf16", lambda device_type: True)
    images, labels = tiny_images()
    model = tiny_classifier()
    bf16 = compute_landscape(model, images, labels, LandscapeOptions(dims=1, steps=3, precision="bf16"), workers=1,
                             num_threads=1)  # fmt: skip
    deviation = abs(bf16.origin_loss - bf16.origin_loss_fp32) / bf16.origin_loss_fp32
    assert bf16.precision == "bf16" and 0 < deviation <= BF16_ORIGIN_TOLERANCE  # the stated tolerance holds here
    assert bf16.losses[1] == bf16.origin_loss  # the grid's centre, computed in bf16 like the origin
    auto = LandscapeOptions(dims=1, steps=3, precision="auto")
    chosen = compute_landscape(model, images, labels, auto, workers=1, num_threads=1)
    assert chosen.precision == "bf16" and chosen.origin_loss == bf16.origin_loss
    np.testing.assert_array_equal(chosen.losses, bf16.losses)
    monkeypatch.setattr("pretrainlab.analysis.landscape.BF16_ORIGIN_TOLERANCE", deviation / 2)
    strict = compute_landscape(model, images, labels, auto, workers=1, num_threads=1)
    assert strict.precision == "fp32" and strict.origin_loss == strict.origin_loss_fp32 == bf16.origin_loss_fp32
    assert strict.losses[1] == pytest.approx(strict.origin_loss_fp32, rel=1e-6)
    monkeypatch.setattr("pretrainlab.analysis.landscape.has_fast_bf16", lambda device_type: False)
    without_kernels = compute_landscape(model, images, labels, auto, workers=1, num_threads=1)
    assert without_kernels.precision == "fp32" and without_kernels.origin_loss == bf16.origin_loss_fp32


def test_two_workers_give_the_values_of_one() -> None:
    model = torch_only_classifier()
    images, labels = tiny_images()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    for options in (FP32_1D, FP32_2D):
        one = compute_landscape(model, images, labels, options, workers=1, batch_size=10, num_threads=1)
        two = compute_landscape(model, images, labels, options, workers=2, batch_size=10, num_threads=2)
        assert two.complete and two.num_evaluated == options.steps**options.dims
        np.testing.assert_allclose(two.losses, one.losses, rtol=1e-6, atol=0)
        assert len(np.unique(one.losses)) == one.losses.size  # distinct points, not one value copied
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_an_interrupted_grid_resumes_with_only_the_rest_and_identical_values(tmp_path: Path) -> None:
    model = tiny_classifier()
    images, labels = tiny_images()
    full = compute_landscape(model, images, labels, FP32_2D, workers=1, batch_size=10, num_threads=1)

    def interrupt(grid: LandscapeResult) -> None:
        if grid.computed.sum() >= 5:
            raise Interrupted

    path = tmp_path / "grid.npz"
    with pytest.raises(Interrupted):
        compute_landscape(model, images, labels, FP32_2D, grid_path=path, workers=1, batch_size=10, num_threads=1,
                          on_chunk=interrupt)  # fmt: skip
    saved = LandscapeResult.load(path)
    done = int(saved.computed.sum())
    assert 5 <= done < 16 and not saved.complete and np.isnan(saved.losses[~saved.computed]).all()
    np.testing.assert_array_equal(saved.losses[saved.computed], full.losses[saved.computed])
    resumed = compute_landscape(model, images, labels, FP32_2D, grid_path=path, workers=1, batch_size=10, num_threads=1)
    assert resumed.num_evaluated == 16 - done and resumed.complete and resumed.sessions == 2
    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert resumed.origin_loss == full.origin_loss and resumed.seconds >= saved.seconds

    partial_path = tmp_path / "partial.npz"  # max_points: stop, then finish
    first = compute_landscape(model, images, labels, FP32_2D, grid_path=partial_path, workers=1, num_threads=1,
                              batch_size=10, max_points=3)  # fmt: skip
    assert first.num_evaluated == 3 and int(first.computed.sum()) == 3
    rest = compute_landscape(model, images, labels, FP32_2D, grid_path=partial_path, workers=1, batch_size=10, num_threads=1)
    assert rest.num_evaluated == 13
    np.testing.assert_array_equal(rest.losses, full.losses)
    again = compute_landscape(model, images, labels, FP32_2D, grid_path=partial_path, workers=1, num_threads=1)
    assert again.num_evaluated == 0 and again.sessions == 2  # complete: nothing recomputed


def test_other_options_or_weights_are_refused(tmp_path: Path) -> None:
    model = tiny_classifier()
    images, labels = tiny_images()
    path = tmp_path / "grid.npz"
    compute_landscape(model, images, labels, FP32_1D, grid_path=path, workers=1, num_threads=1, max_points=1)
    other_steps = LandscapeOptions(dims=1, steps=7, low=-1.0, high=1.0, precision="fp32")
    with pytest.raises(ValueError, match=r"grid.npz: this grid was computed with other options \(steps 5 there, 7 now\)"):
        compute_landscape(model, images, labels, other_steps, grid_path=path, workers=1, num_threads=1)
    with torch.no_grad():
        model.backbone.model.conv1.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(ValueError, match="computed from other weights or images"):
        compute_landscape(model, images, labels, FP32_1D, grid_path=path, workers=1, num_threads=1)
    path.write_bytes(b"not a grid")
    with pytest.raises(ValueError, match="not a readable landscape grid"):
        compute_landscape(model, images, labels, FP32_1D, grid_path=path, workers=1, num_threads=1)
    with pytest.raises(ValueError, match=r"landscape option range=\(1.0, -1.0\) is not valid; expected finite MIN < MAX"):
        LandscapeOptions(low=1.0, high=-1.0)
    with pytest.raises(ValueError, match="landscape option steps=1 is not valid"):
        LandscapeOptions(steps=1)


def grid_result(x: np.ndarray, losses: np.ndarray, y: np.ndarray | None = None, origin: float = 0.0) -> LandscapeResult:
    options = LandscapeOptions(dims=1 if y is None else 2, steps=len(x), low=float(x[0]), high=float(x[-1]))
    return LandscapeResult(options, "", x, y, losses, np.ones(losses.shape, dtype=bool), origin_loss=origin)


def test_loss_rise_of_known_surfaces() -> None:
    x = np.linspace(-1.0, 1.0, 5)
    curve = grid_result(x, 2.0 + x**2 + 0.5 * x, origin=2.0)  # the odd part cancels between +-r
    assert loss_rise(curve, 0.5) == pytest.approx(0.25, abs=1e-12)
    assert loss_rise(curve, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert loss_rise(curve, 1.5) is None
    fine = np.linspace(-1.0, 1.0, 201)
    bowl = grid_result(fine, 3.0 + fine[:, None] ** 2 + 4.0 * fine[None, :] ** 2, y=fine, origin=3.0)
    assert loss_rise(bowl, 0.5) == pytest.approx(0.25 * (1 + 4) / 2, abs=1e-3)  # mean of cos^2 + 4 sin^2 = 2.5
    assert loss_rise(bowl, 1.0) == pytest.approx(2.5, abs=1e-3)
    tilted = grid_result(fine, 1.0 + 3.0 * fine[:, None] - 2.0 * fine[None, :], y=fine, origin=1.0)
    assert loss_rise(tilted, 1.0) == pytest.approx(0.0, abs=1e-9)  # a plane rises on one side, falls on the other


def test_figures_are_written_and_closed_and_markdown_sections_are_kept(tmp_path: Path) -> None:
    x = np.linspace(-1.0, 1.0, 7)
    paths = plot_landscape(grid_result(x, 1.0 + x**2), tmp_path / "plots", "line")
    paths += plot_landscape(grid_result(x, 1.0 + np.exp(3 * np.add.outer(x**2, x**2)), y=x), tmp_path / "plots", "bowl")
    assert [p.name for p in paths] == ["landscape_line_curve.png", "landscape_bowl_contour.png", "landscape_bowl_surface.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert plt.get_fignums() == []
    markdown = tmp_path / "landscape.md"
    write_markdown_section(markdown, "a", "## A\n\nfirst\n")
    write_markdown_section(markdown, "b", "## B\n\nsecond\n")
    write_markdown_section(markdown, "a", "## A\n\nreplaced\n")
    text = markdown.read_text()
    assert text.startswith("# Loss landscapes\n") and "replaced" in text and "first" not in text
    assert text.index("## A") < text.index("## B") and text.count("## B") == 1


def test_evenly_spaced_indices() -> None:
    assert evenly_spaced(10, 4) == [0, 2, 5, 7]
    assert evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(2000, 2000) == list(range(2000))


@pytest.mark.slow
def test_cli_on_a_tiny_run_writes_figures_markdown_and_resumes(tiny_synthetic: Path, tmp_path: Path) -> None:
    from pretrainlab.cli import main

    config = REPO_ROOT / "configs" / "quickstart.yaml"
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, **{"engine.max_epochs": 1, "study.phases": [{"name": "pretrain"}]})
    assert main(["-q", "study", str(config), *overrides]) == 0
    run = tmp_path / "quickstart"
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    common = ["--run", str(run), "--num-images", "20", "--workers", "1"]
    assert run_cli(parser.parse_args([*common, "--steps", "3", "--max-points", "4"])) == 0
    grid_path = run / "analysis" / "landscape" / "pretrained_2d.npz"
    assert int(LandscapeResult.load(grid_path).computed.sum()) == 4 and not (run / "analysis" / "landscape.md").exists()
    assert run_cli(parser.parse_args([*common, "--steps", "3"])) == 0
    grid = LandscapeResult.load(grid_path)
    assert grid.complete and grid.sessions == 2 and grid.options.precision == "auto"
    assert grid.precision in ("bf16", "fp32") and grid.origin_loss_fp32 > 0
    assert grid.losses[1, 1] == pytest.approx(grid.origin_loss, rel=1e-6)  # the centre is the origin
    assert run_cli(parser.parse_args([*common, "--dims", "1", "--steps", "5", "--precision", "fp32"])) == 0
    for name in ("landscape_pretrained_2d_contour.png", "landscape_pretrained_2d_surface.png",
                 "landscape_pretrained_1d_curve.png"):  # fmt: skip
        assert (run / "plots" / name).is_file(), name
    text = (run / "analysis" / "landscape.md").read_text()
    assert "## Loss landscape `pretrained_2d`" in text and "## Loss landscape `pretrained_1d`" in text
    assert "| loss at the origin |" in text and "../plots/landscape_pretrained_2d_contour.png" in text
    with pytest.raises(ValueError, match="other options"):
        run_cli(parser.parse_args([*common, "--steps", "5"]))
