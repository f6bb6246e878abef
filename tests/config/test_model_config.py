"""Neck, heads and losses on taps in the config: defaults, a DINO + DAPPM + KoLeo config, load-time errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.config import ConfigError, load_config
from pretrainlab.methods.dino import DINOConfig
from pretrainlab.methods.supervised import SupervisedConfig
from pretrainlab.methods.tap_losses import KoLeoLossConfig
from pretrainlab.models.heads import MultiTaskHeadConfig
from pretrainlab.models.necks import DAPPMConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_existing_configs_default_to_no_neck_and_no_extra_losses() -> None:
    for name in ("quickstart.yaml", "dino_small.yaml"):
        config = load_config(CONFIGS / name)
        assert config.neck.name == "none" and config.neck.restore_stride is None
        assert getattr(config.method, "losses", []) == []


def test_dino_with_dappm_and_koleo_at_neck(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dino_dappm.yaml",
        "backbone: {name: sebnet, size: s}\n"
        "neck: {name: dappm, branch_channels: 64, restore_stride: 8}\n"
        "method:\n"
        "  name: dino\n"
        "  losses:\n"
        "    - {name: koleo, tap: neck, weight: 0.05}\n"
        "    - {name: koleo, tap: backbone}\n",
    )
    config = load_config(path)
    assert isinstance(config.neck, DAPPMConfig) and config.neck.branch_channels == 64
    assert config.neck.restore_stride == 8
    assert isinstance(config.method, DINOConfig)
    assert config.method.losses == [
        KoLeoLossConfig(tap="neck", weight=0.05),
        KoLeoLossConfig(tap="backbone", weight=0.1),
    ]


def test_sweep_style_overrides_switch_neck_and_koleo() -> None:
    config = load_config(
        CONFIGS / "dino_small.yaml", ["neck.name=dappm", "method.losses=[{name: koleo, tap: neck, weight: 0.2}]"]
    )
    assert config.neck.name == "dappm" and config.method.losses[0].tap == "neck"


def test_loss_on_missing_neck_tap_is_a_load_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "method: {name: dino, losses: [{name: koleo, tap: neck}]}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and str(path) in message
    assert "method.losses.0.tap: no tap 'neck' (neck.name is 'none'); known taps: backbone, head:dino" in message


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["method.losses=[{name: kolo}]"], "method.losses.0.name: unknown loss 'kolo'; did you mean 'koleo'?"),
        (["method.losses=[{name: koleo, wieght: 1}]"], "method.losses.0.wieght: unknown key; did you mean 'weight'?"),
        (["method.losses=[{name: koleo, tap: nek}]"], "method.losses.0.tap: String should match pattern"),
        (["method.losses=[{name: koleo, tap: 'head:cls'}]"], "no tap 'head:cls'; known taps: backbone, head:dino"),
        (["neck.name=dapm"], "neck.name: unknown neck 'dapm'; did you mean 'dappm'? known: dappm, none, pappm"),
        (["neck={name: pappm, branch_chanels: 8}"], "neck.branch_chanels: unknown key; did you mean 'branch_channels'?"),
        (["method={name: simclr}", "neck.name=dappm"], "method simclr has no neck"),
        (["method.losses=[{name: cross_entropy, tap: 'head:dino'}]"], "method.losses.0.name: 'cross_entropy' needs labels; this method has none"),
        (["method={name: supervised, head: {name: lin}}"], "method.head.name: unknown head 'lin'; did you mean 'linear'?"),
        (  # a task of a multi-task head: named by its path, not mistaken for a component called `shape`
            ["method={name: supervised, head: {name: multi_task, tasks: {shape: {name: linaer}}}}"],
            "method.head.tasks.shape.name: unknown head 'linaer'; did you mean 'linear'? known: cls, dino, linear, multi_task",
        ),
        (
            ["method={name: supervised, head: {name: multi_task, tasks: {a: {}}, weights: {b: 1}}}"],
            "method.head: weights for unknown tasks ['b']; tasks: a",
        ),
    ],
)
def test_load_time_errors(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert expected in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_supervised_config_taps() -> None:
    config = load_config(
        None,
        [
            "method={name: supervised, head: {name: multi_task, tasks: {coarse: {}, fine: {name: cls}}}}",
            "method.losses=[{name: cross_entropy, tap: 'head:fine', label_smoothing: 0.1}, {name: koleo}]",
        ],
    )
    assert isinstance(config.method, SupervisedConfig) and isinstance(config.method.head, MultiTaskHeadConfig)
    assert [loss.tap for loss in config.method.losses] == ["head:fine", "backbone"]
