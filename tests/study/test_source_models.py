"""The source-model store's key (study/source_models.py): what changes the source model changes the key,
how a run adapts does not."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT

from pretrainlab.config import load_config
from pretrainlab.precision import resolve_precision
from pretrainlab.study.source_models import recipe_key, source_recipe, stored_source_dir

CONFIG = REPO_ROOT / "configs" / "w2_uda" / "rain_sequence.yaml"


def key(*overrides: str) -> str:
    return recipe_key(source_recipe(load_config(CONFIG, list(overrides))))


def test_the_key_follows_the_source_recipe_only() -> None:
    base = key()  # the shipped config trains in `engine.precision: auto`
    assert key("online.adaptation=source_only", "online.dacs.gt_mix=true", "online.steps_per_domain=3",
               "name=other") == base  # fmt: skip
    resolved = resolve_precision("auto", "cpu")
    assert key(f"engine.precision={resolved}") == base  # the key holds the precision the source trains in
    other_precision = "32" if resolved == "bf16-mixed" else "bf16-mixed"
    changed = [key("eval.seg.lr=1e-3"), key("backbone.variant=b1"), key("seed=1"),
               key(f"engine.precision={other_precision}"), key("data.root=elsewhere")]  # fmt: skip
    assert len({base, *changed}) == 1 + len(changed)


def test_the_store_is_under_output_root_unless_absolute(tmp_path: Path) -> None:
    config = load_config(CONFIG, ["output_root=runs/study", "online.source_cache=source_models"])
    assert stored_source_dir(config) == Path("runs/study/source_models") / key("output_root=runs/study")
    absolute = load_config(CONFIG, [f"online.source_cache={tmp_path}"])
    assert stored_source_dir(absolute).parent == tmp_path
    assert stored_source_dir(load_config(CONFIG, ["online.source_cache=null"])) is None
