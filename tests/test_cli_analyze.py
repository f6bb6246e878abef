"""`pretrainlab analyze embeddings|attention|gradcam|landscape --run DIR`: each writes its figure and its
report section on a tiny run; the sub-commands come from their modules; figures are always closed."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from conftest import tiny_run_overrides

from pretrainlab import cli
from pretrainlab.analysis.run_analysis import (
    AnalysisSection,
    display_images,
    evenly_spaced,
    saved_figure,
)
from pretrainlab.cli import build_parser, main, parse_arguments
from pretrainlab.config import load_config
from pretrainlab.study.run import pretrain

REPO = Path(__file__).resolve().parents[1]
SUPERVISED = {"method": {"name": "supervised", "head": {"name": "cls", "hidden_dim": 16}}, "engine.max_epochs": 1,
              "eval.knn.every_n_epochs": 0}  # fmt: skip
TINY_VIT = ("backbone={name: timm, arch: vit_tiny_patch16_224, img_size: 32, patch_size: 8, depth: 2, embed_dim: 48, "
            "num_heads: 3}")


@pytest.fixture(scope="module")
def resnet_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch supervised run of the tiny ResNet."""
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path_factory.mktemp("runs"), name="resnet", **SUPERVISED)
    return pretrain(load_config(None, overrides)).path


@pytest.fixture(scope="module")
def vit_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch supervised run of a 2-block ViT with 3 heads on a 4 x 4 patch grid."""
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path_factory.mktemp("runs"), name="vit", **SUPERVISED)
    overrides = [item for item in overrides if not item.startswith("backbone.")] + [TINY_VIT]
    return pretrain(load_config(None, overrides)).path


def assert_figure_and_section(run: Path, name: str, *texts: str) -> str:
    assert (run / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    section = (run / "analysis" / f"{name}.md").read_text()
    assert f"](../plots/{name}.png)" in section  # relative to analysis/<name>.md
    for text in texts:
        assert text in section
    assert plt.get_fignums() == []
    return section


def test_embeddings_of_both_weights(resnet_run: Path) -> None:
    argv = ["-q", "analyze", "embeddings", "--run", str(resnet_run), "--num-points", "30", "--perplexity", "5"]
    assert main(argv) == 0
    assert_figure_and_section(resnet_run, "embeddings_tsne", "## Embeddings (t-SNE)", "perplexity `5.0`",
                              "| pretrained: points | 30 |", "| random_init: points | 30 |",
                              "random_init: 5-NN label agreement in the map")  # fmt: skip


def test_attention_of_a_vit_run(vit_run: Path) -> None:
    assert main(["-q", "analyze", "attention", "--run", str(vit_run), "--num-images", "2"]) == 0
    section = assert_figure_and_section(vit_run, "attention", "patch grid | 4 x 4", "threshold `0.6`")
    assert section.count("of the CLS attention") == 3  # one row per head


def test_attention_of_a_cnn_run_is_refused_by_name(resnet_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "analyze", "attention", "--run", str(resnet_run)]) == 2
    assert f"attention needs a ViT backbone, run {resnet_run} has resnet18" in capsys.readouterr().err


@pytest.mark.parametrize(("run_name", "layer"), [("resnet_run", "last feature map"),
                                                  ("vit_run", "last block's normalised input tokens")])  # fmt: skip
def test_gradcam_of_cnn_and_vit_runs(run_name: str, layer: str, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(run_name)
    argv = ["-q", "analyze", "gradcam", "--run", str(run), "--num-images", "3", "--target", "label"]
    assert main(argv) == 0
    assert_figure_and_section(run, "gradcam", layer, "target `label`", "linear probe val top-1", "/ 3 |")


def test_umap_without_umap_learn_fails_before_loading_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    assert main(["-q", "analyze", "embeddings", "--run", str(tmp_path / "missing"), "--method", "umap"]) == 2
    assert "umap-learn" in capsys.readouterr().err


def test_each_analysis_takes_its_options_from_its_module(capsys: pytest.CaptureFixture[str]) -> None:
    from pretrainlab.analysis import attention, embeddings, gradcam

    argv = ["analyze", "gradcam", "--run", "r", "--target", "label", "--num-images", "2"]
    args = parse_arguments(build_parser(), argv)
    assert args.handler is gradcam.run_cli and (args.run, args.target, args.num_images) == (Path("r"), "label", 2)
    args = parse_arguments(build_parser(), ["analyze", "attention", "--run", "r", "--threshold", "0.5"])
    assert args.handler is attention.run_cli and args.threshold == 0.5 and args.weights == "pretrained"
    args = parse_arguments(build_parser(), ["analyze", "embeddings", "--run", "r", "--method", "umap"])
    assert args.handler is embeddings.run_cli and args.weights == "both" and args.learning_rate == "auto"
    for name in ("embeddings", "attention", "gradcam"):
        with pytest.raises(SystemExit) as exit_info:
            main(["analyze", name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: pretrainlab analyze {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "attention", "--run", "r", "--threshold", "1.5"])
    assert exit_info.value.code == 2 and "expected a number in (0, 1]" in capsys.readouterr().err


def test_analyze_params_is_still_registered() -> None:
    argv = ["analyze", "params", str(REPO / "configs" / "quickstart.yaml"), "--depth", "1", "name=late"]
    args = parse_arguments(build_parser(), argv)
    assert args.handler is cli.cmd_analyze_params and args.depth == 1
    assert args.overrides == ["name=late"]  # dotted overrides may still follow the options


def test_an_analysis_that_cannot_be_imported_breaks_only_its_sub_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.ANALYSES, "broken", ("pretrainlab.analysis.no_such_module", "not there"))
    assert parse_arguments(build_parser(), ["report", "runs"]).handler is cli.cmd_report
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "broken", "--run", "r"])
    assert exit_info.value.code == 2
    assert "pretrainlab.analysis.no_such_module cannot be imported" in capsys.readouterr().err


def test_landscape_is_registered_by_the_same_contract(capsys: pytest.CaptureFixture[str]) -> None:
    from pretrainlab.analysis import landscape

    assert callable(landscape.add_cli_arguments) and callable(landscape.run_cli)
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "landscape", "--help"])
    assert exit_info.value.code == 0
    assert "--run" in capsys.readouterr().out


def test_saved_figure_is_closed_even_when_drawing_fails(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "x.png"
    with pytest.raises(RuntimeError), saved_figure(path, 1, 2, figsize=(4, 2)) as (_, axes):
        assert axes.shape == (1, 2)
        raise RuntimeError("drawing failed")
    assert plt.get_fignums() == [] and not path.exists()
    with saved_figure(path, figsize=(2, 2)) as (_, axes):
        axes[0][0].plot([0, 1])
    assert plt.get_fignums() == [] and path.read_bytes().startswith(b"\x89PNG")


def test_section_markdown_and_where_it_is_written(tmp_path: Path) -> None:
    section = AnalysisSection("gradcam", "Grad-CAM", {"num_images": 3, "target": "label"}, {"top-1": "91.50"})
    path = section.write(tmp_path)
    assert path == tmp_path / "analysis" / "gradcam.md"
    assert path.read_text().splitlines() == [
        "## Grad-CAM", "", "Options: num images `3`, target `label`.", "", "![Grad-CAM](../plots/gradcam.png)", "",
        "| quantity | value |", "|---|---:|", "| top-1 | 91.50 |",
    ]  # fmt: skip


def test_evenly_spaced_and_display_images() -> None:
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(7, 1) == [0]
    grey = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]]])  # (1, 1, 2, 2), normalised with mean 0.5, std 0.25
    shown = display_images(grey, (0.5,), (0.25,))
    assert shown.shape == (1, 2, 2, 3)
    assert shown[0, :, :, 0].tolist() == [[0.25, 0.5], [0.75, 1.0]]  # 3.0 -> 1.25, clipped to 1
    assert (shown[..., 0] == shown[..., 2]).all()
