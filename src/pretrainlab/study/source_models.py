"""Source models shared between runs (W2): a store keyed by the hash of everything that decides the
source model, so that runs which differ only in how they adapt — a sweep's variants — train it once.

    <online.source_cache>/<key>/source.pt     the segmentor's state dict
                               /recipe.yaml   the config sections the key is the hash of
                               /trained_by    the run that trained it

`online.source_cache` is relative to `output_root` (in a sweep: `runs/<study>/source_models`). The
recipe is `data`, `backbone`, `eval.seg`, `seed` and the precision the source trains in (`engine.precision`
as resolved on this machine: `auto` is bf16-mixed or 32): change any of them and a new model trains. The
run's own `adapt/source.pt` is a hard link to the stored file (a copy across file systems), so a run stays
complete when the store is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pretrainlab.run_dir import write_text

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config

log = logging.getLogger(__name__)


def source_recipe(config: Config) -> dict[str, Any]:
    """The config sections that decide the source model (see the module docstring)."""
    dumped = config.model_dump(mode="json")
    return {
        "data": dumped["data"],
        "backbone": dumped["backbone"],
        "eval.seg": dumped["eval"]["seg"],
        "seed": dumped["seed"],
        "engine.precision": config.engine.resolved_precision(),
    }


def recipe_key(recipe: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def stored_source_dir(config: Config) -> Path | None:
    """`<output_root>/<online.source_cache>/<key>` for this config's recipe; None without a store."""
    cache = config.online.source_cache
    if cache is None:
        return None
    root = cache if cache.is_absolute() else config.output_root / cache
    return root / recipe_key(source_recipe(config))


def store_source(stored: Path, source_file: Path, config: Config) -> None:
    """Put the run's freshly trained `source_file` into the store folder `stored` (with its recipe)."""
    stored.mkdir(parents=True, exist_ok=True)
    write_text(stored / "recipe.yaml", yaml.safe_dump(source_recipe(config), sort_keys=False))
    write_text(stored / "trained_by", f"{config.run_dir}\n")
    temporary = stored / "source.pt.tmp"
    temporary.unlink(missing_ok=True)
    _link_or_copy(source_file, temporary)
    os.replace(temporary, stored / "source.pt")  # readers never see a partial file
    log.info("source model stored as %s for runs with the same recipe", stored / "source.pt")


def take_stored_source(stored: Path, source_file: Path) -> bool:
    """Link the stored source model to the run's `source_file`; False when the store has none."""
    stored_file = stored / "source.pt"
    if not stored_file.is_file():
        return False
    trained_by = stored_trainer(stored) or "?"
    source_file.parent.mkdir(parents=True, exist_ok=True)
    source_file.unlink(missing_ok=True)
    _link_or_copy(stored_file, source_file)
    log.info("source model: %s (same recipe, trained by run %s)", stored_file, trained_by)
    return True


def stored_trainer(stored: Path) -> str | None:
    """The run directory that trained the stored source model (`trained_by`); None when not recorded."""
    path = stored / "trained_by"
    return path.read_text().strip() if path.is_file() else None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(src, dst)
