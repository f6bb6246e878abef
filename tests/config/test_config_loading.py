"""Config loading: defaults, extends, overrides, and one clear line per error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pretrainlab.cli import main
from pretrainlab.config import ConfigError, load_config
from pretrainlab.config.loading import dump_config, validate_config
from pretrainlab.methods.dino import DINOConfig
from pretrainlab.methods.simclr import SimCLRConfig
from pretrainlab.config.sweeps import expand_sweep


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_and_dotted_overrides() -> None:
    config = load_config(None, ["method.teacher_temp=0.07", "engine.max_epochs=3", "eval.knn.ks=[5, 7]"])
    assert isinstance(config.method, DINOConfig)
    assert config.method.teacher_temp == 0.07
    assert config.engine.max_epochs == 3
    assert config.eval.knn.ks == [5, 7]


def test_extends_deep_merges_and_child_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\nmethod: {name: dino, student_temp: 0.2, teacher_temp: 0.05}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nname: child\nmethod: {teacher_temp: 0.06}\n")
    config = load_config(child)
    assert config.name == "child"
    assert config.method.student_temp == 0.2 and config.method.teacher_temp == 0.06


def test_changing_component_name_replaces_the_component(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "method: {name: dino, teacher_temp: 0.05}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmethod: {name: simclr, temperature: 0.3}\n")
    config = load_config(child)
    assert isinstance(config.method, SimCLRConfig) and config.method.temperature == 0.3


def test_override_with_other_component_replaces_it() -> None:
    config = load_config(None, ["backbone.arch=vit_tiny_patch16_224", "backbone={name: sebnet, size: m}"])
    assert config.backbone.name == "sebnet" and config.backbone.size == "m"


def test_unknown_key_names_file_path_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "method: {name: dino, teacher_tmp: 0.07}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert str(path) in message
    assert "method.teacher_tmp: unknown key; did you mean 'teacher_temp'?" in message


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "engine: {max_epochs: ten}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "engine.max_epochs" in message and "integer" in message and "'ten'" in message


def test_unknown_component_name_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "method: {name: dinoo}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "method.name: unknown method 'dinoo'; did you mean 'dino'? known: " in message
    assert {"dino", "simclr", "supervised"} <= set(message.split("known: ")[1].split(", "))  # tests may register more


def test_unknown_key_in_override() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key; did you mean 'lr'\?"):
        load_config(None, ["optim.lrr=0.1"])


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["optim.lr"])


def test_extends_cycle_and_missing_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "bad.yaml", "backbone: {name: timmm}\n")
    assert main(["pretrain", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "backbone.name: unknown backbone 'timmm'; did you mean 'timm'?" in err


@pytest.mark.usefixtures("with_quickstart_export")  # W5's configs load the quickstart's exported backbone
def test_shipped_configs_load_and_their_saved_form_reloads_equal() -> None:
    """Every shipped config and sweep variant loads, and its config.yaml (what a run saves) validates back to the
    same config: resume, `evaluate --run` and sweeps compare against it."""
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert files, "no configs shipped"
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        if "variants" in data or "search" in data:
            configs = [config for preset in [None, *expand_sweep(path).file.presets]  # every variant, every preset
                       for config in expand_sweep(path, preset=preset).configs.values()]  # fmt: skip
        else:
            configs = [load_config(path)]
        for config in configs:
            saved = yaml.safe_load(dump_config(config))
            assert validate_config(saved, f"{path}: {config.name}") == config, f"{path}: {config.name}"


def test_a_dotted_name_switch_drops_the_old_components_options_in_any_order(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("eval: {seg: {head: {name: seg_linear, num_maps: 2}}}\n")  # an option of the linear head
    for order in (["eval.seg.head.name=uper", "eval.seg.head.channels=32"],
                  ["eval.seg.head.channels=32", "eval.seg.head.name=uper"]):  # fmt: skip
        head = load_config(base, order).eval.seg.head
        assert (head.name, head.channels) == ("uper", 32)
    with pytest.raises(ConfigError, match="eval.seg.head.num_maps: unknown key"):  # given with the switch: checked
        load_config(None, ["eval.seg.head.name=uper", "eval.seg.head.num_maps=2"])
    optim = load_config(None, ["optim.lr=0.5", "optim.name=sgd"]).optim  # one config class: every option stays
    assert (optim.name, optim.lr) == ("sgd", 0.5)
