"""Sweep files: expansion into one validated config per variant, and errors that name the variant."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.config import ConfigError
from pretrainlab.config.sweeps import expand_sweep

REPO = Path(__file__).resolve().parents[2]

BASE = """\
name: base
output_root: {output_root}
method: {{name: simclr, temperature: 0.2}}
engine: {{max_epochs: 10}}
optim: {{warmup_epochs: 1}}
"""


def write_sweep(folder: Path, text: str) -> Path:
    (folder / "configs").mkdir(exist_ok=True)
    (folder / "configs" / "base.yaml").write_text(BASE.format(output_root=folder / "runs"))
    path = folder / "configs" / "sweep.yaml"
    path.write_text(text)
    return path


SWEEP = """\
study: ablation
base: base.yaml
variants:
  warm: {optim.lr: 1.0e-3, engine.max_epochs: 6}
  cold: {method.temperature: 0.5}
presets:
  small: {engine.max_epochs: 2}
"""


def test_variants_expand_into_their_own_run_directories(tmp_path: Path) -> None:
    sweep = expand_sweep(write_sweep(tmp_path, SWEEP))
    assert list(sweep.configs) == ["warm", "cold"]
    assert sweep.study_dir == tmp_path / "runs" / "ablation"
    warm, cold = sweep.configs["warm"], sweep.configs["cold"]
    assert warm.run_dir == tmp_path / "runs" / "ablation" / "warm"
    assert warm.name == "warm" and warm.optim.lr == 1e-3 and warm.engine.max_epochs == 6
    assert cold.method.temperature == 0.5 and cold.optim.lr == 5e-4  # untouched keys keep the base value
    assert sweep.file.metric == "knn_top1"


def test_preset_applies_to_every_variant_after_it_and_cli_overrides_come_last(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SWEEP)
    sweep = expand_sweep(path, preset="small", overrides=["optim.lr=0.01"])
    assert {config.engine.max_epochs for config in sweep.configs.values()} == {2}  # preset beats the variant
    assert {config.optim.lr for config in sweep.configs.values()} == {0.01}
    moved = expand_sweep(path, overrides=[f"output_root={tmp_path / 'elsewhere'}"], study="other")
    assert moved.configs["cold"].run_dir == tmp_path / "elsewhere" / "other" / "cold"


def test_sweep_overrides_apply_to_every_variant_before_its_own(tmp_path: Path) -> None:
    text = SWEEP.replace("variants:", "overrides: {optim.lr: 0.02, seed: 7}\nvariants:")
    sweep = expand_sweep(write_sweep(tmp_path, text))
    assert sweep.configs["warm"].optim.lr == 1e-3 and sweep.configs["cold"].optim.lr == 0.02
    assert {config.seed for config in sweep.configs.values()} == {7}


def test_the_w1_ablations_file_holds_the_five_seed_ablations() -> None:
    sweep = expand_sweep(REPO / "configs" / "w1_sebnet" / "ablations.yaml", preset="small")
    described = {
        name: (config.neck.name, [(loss.name, loss.tap) for loss in config.method.losses])
        for name, config in sweep.configs.items()
    }
    assert described == {
        "no_neck": ("none", []),
        "dappm": ("dappm", []),
        "koleo_backbone": ("none", [("koleo", "backbone")]),
        "dappm_koleo_backbone": ("dappm", [("koleo", "backbone")]),
        "dappm_koleo_neck": ("dappm", [("koleo", "neck")]),
    }
    for config in sweep.configs.values():
        assert config.backbone.name == "sebnet" and config.method.name == "dino" and [p.name for p in config.study.phases] == ["pretrain", "knn", "linear"]
        assert config.run_dir.parent == Path("runs") / "w1_ablations"
        assert config.data.root != Path("data/synthetic")  # the small preset never rewrites the shared dataset


def test_a_bad_key_names_file_variant_and_dotted_key(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SWEEP.replace("method.temperature: 0.5", "method.temprature: 0.5"))
    with pytest.raises(ConfigError) as error:
        expand_sweep(path)
    message = str(error.value)
    assert message == (
        f"{path}: variant 'cold': method.temprature: unknown key; did you mean 'temperature'? "
        "known: name, proj_hidden_dim, proj_out_dim, temperature, views"
    )


def test_every_invalid_variant_is_reported_before_anything_runs(tmp_path: Path) -> None:
    text = SWEEP.replace("optim.lr: 1.0e-3", "optim.lr: -1").replace("method.temperature: 0.5", "backbone.name: rsnet")
    with pytest.raises(ConfigError) as error:
        expand_sweep(write_sweep(tmp_path, text))
    lines = str(error.value).splitlines()
    assert len(lines) == 2
    assert "variant 'warm': optim.lr: Input should be greater than 0" in lines[0]
    assert "variant 'cold': backbone.name: unknown backbone 'rsnet'" in lines[1]


def test_a_preset_that_breaks_a_variant_names_both(tmp_path: Path) -> None:
    text = SWEEP.replace("small: {engine.max_epochs: 2}", "small: {engine.max_epochs: 2, optim.warmup_epochs: 3}")
    with pytest.raises(ConfigError, match=r"variant 'warm': optim.warmup_epochs=3.0 exceeds"):
        expand_sweep(write_sweep(tmp_path, text), preset="small")


def test_mapping_in_the_path_of_a_dotted_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"variant 'cold': key 'method.temperature.x': 'method.temperature' is"):
        expand_sweep(write_sweep(tmp_path, SWEEP.replace("method.temperature:", "method.temperature.x:")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SWEEP.replace("study: ablation\n", ""), r"sweep.yaml: study: Field required"),
        (SWEEP + "metrc: knn_top1\n", r"metrc: unknown key; did you mean 'metric'\?"),
        (SWEEP + "metric: knn_top_1\n", r"unknown metric 'knn_top_1'; did you mean 'knn_top1'\?"),
        (SWEEP.replace("cold:", "co/ld:"), r"'co/ld' must be a folder name"),
        (SWEEP.replace("cold: {", "cold: {name: other, "), r"'cold' sets 'name', which the sweep sets"),
        (SWEEP + "overrides: {output_root: x}\n", r"overrides sets 'output_root', which the sweep sets"),
        (SWEEP.replace("base: base.yaml", "base: missing.yaml"), r"missing.yaml not found"),
    ],
)
def test_sweep_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        expand_sweep(write_sweep(tmp_path, text))


def test_unknown_preset_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'smal'; did you mean 'small'\? known: small"):
        expand_sweep(write_sweep(tmp_path, SWEEP), preset="smal")
