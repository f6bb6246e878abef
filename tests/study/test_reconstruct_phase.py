"""Phase `reconstruct`: a tiny MAE's reconstructions of whole images with their chosen segments, the
figure in eval/epoch_<k>/reconstruct/, and the load-time check of the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pretrainlab.report.reconstructions as reconstructions
from pretrainlab.config import load_config
from pretrainlab.config.schema import Config
from pretrainlab.data.formats.masks import read_segment
from pretrainlab.data.images import read_image
from pretrainlab.methods.base import build_method
from pretrainlab.run_dir import RunDir
from pretrainlab.study.phase import StudyContext, run_phase

IMAGES, MASKS = "segmentation/images/training", "segmentation/sam_masks/training"
TINY_MAE = {"backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 64, "backbone.patch_size": 8,
            "backbone.embed_dim": 32, "backbone.depth": 1, "backbone.num_heads": 2, "method.name": "mae",
            "method.images": IMAGES, "method.masks.root": MASKS, "method.masks.coverage_ratio": 30.0,
            "method.decoder.embed_dim": 16, "method.decoder.depth": 1, "method.decoder.num_heads": 2,
            "engine.max_epochs": 2}  # fmt: skip


def config_with(phases: list[dict], **extra: object) -> Config:
    return load_config(None, [f"{key}={value}" for key, value in {**TINY_MAE, "study.phases": phases, **extra}.items()])


def record_figures(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The arguments of every reconstruction figure drawn from now on (the figures are still written)."""
    drawn: list[tuple] = []
    plot = reconstructions.plot_reconstructions

    def record(*args: object) -> None:
        drawn.append(args)
        plot(*args)

    monkeypatch.setattr(reconstructions, "plot_reconstructions", record)
    return drawn


def test_reconstructions_of_whole_images_with_their_segments(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with([{"name": "pretrain", "until_epoch": 1}, {"name": "reconstruct", "num_images": 3}],
                         **{"method.mask_method": "segments", "data.root": tiny_synthetic,
                            "output_root": tmp_path})  # fmt: skip
    phase = config.study.phases[1]
    torch.manual_seed(0)
    method = build_method(config).train()
    context = StudyContext(config, RunDir(config.run_dir), _methods={"pretrained": method}, _epoch=1)
    drawn = record_figures(monkeypatch)
    folder = phase.folder(config, 1, lambda: 0)
    assert folder == "eval/epoch_1/reconstruct"

    result = run_phase(phase, context.run.phase(1, "reconstruct", folder), context)

    assert result["epoch"] == 1 and result["reconstructions"] == "eval/epoch_1/reconstruct/reconstructions.png"
    assert method.training  # the run's method is handed back in the mode it came in
    original, reconstruction, removed, names, title, path = drawn[0]
    files = sorted(path for path in (tiny_synthetic / IMAGES).rglob("*") if path.is_file())[:3]
    assert names == [file.relative_to(tiny_synthetic / IMAGES).with_suffix("").as_posix() for file in files]
    assert original.shape == reconstruction.shape == (3, 64, 64, 3) and removed.shape == (3, 64, 64)
    for row, file in enumerate(files):  # the whole image, unflipped, back in [0, 1] pixels
        np.testing.assert_allclose(original[row], read_image(file, channels=3) / 255.0, atol=1e-5)
        segment = read_segment(tiny_synthetic / MASKS, names[row], "sam_json", 30.0)
        assert segment is not None and removed[row][segment].all()  # the chosen segment is hidden
    kept = ~removed
    np.testing.assert_allclose(reconstruction[kept], original[kept], atol=1e-5)  # only hidden pixels are predicted
    assert title == "mae (segments masking) after epoch 1"
    with Image.open(path) as figure:
        assert figure.format == "PNG" and figure.height > figure.width  # 3 rows of 3 columns, and the title


def test_patches_masking_hides_the_same_random_patches_at_every_evaluation(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with([{"name": "pretrain", "until_epoch": 1}, {"name": "reconstruct", "num_images": 2}],
                         **{"data.root": tiny_synthetic, "output_root": tmp_path})  # fmt: skip
    context = StudyContext(config, RunDir(config.run_dir), _methods={"pretrained": build_method(config)}, _epoch=1)
    drawn = record_figures(monkeypatch)
    for index, folder in ((1, "eval/epoch_1/reconstruct"), (3, "eval/epoch_2/reconstruct")):
        run_phase(config.study.phases[1], context.run.phase(index, "reconstruct", folder), context)
    first, second = drawn[0][2], drawn[1][2]  # removed (2, 64, 64)
    assert first.mean() == pytest.approx(0.75)  # mask_ratio 0.75 of the 8 x 8 patches
    assert np.array_equal(first, second) and not np.array_equal(first[0], first[1])


def test_the_phase_needs_a_method_that_reconstructs() -> None:
    with pytest.raises(ValueError, match=r"study.phases.1: phase reconstruct needs a method that reconstructs"):
        load_config(None, ["study.phases=[{name: pretrain}, {name: reconstruct}]"])
    assert config_with([{"name": "pretrain"}, {"name": "reconstruct"}]).study.phases[1].num_images == 4
