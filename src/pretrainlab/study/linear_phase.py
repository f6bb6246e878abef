"""Phase `linear`: linear probe (`eval.linear`) on frozen, standardised features of the pretrained and
the random-init backbone -> linear.json in the phase folder.

The features are the pooled ones shared with kNN and t-SNE, or with `eval.linear.last_n_blocks` > 1
(or `avgpool_patch_tokens`) on a timm ViT, DINO's probe input: the CLS tokens of the last n blocks,
extracted in a pass of their own. The result names them (`linear_features`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.eval.pooled_features import PooledFeatures
    from pretrainlab.run_dir import Phase


class LinearPhaseConfig(PhaseConfig):
    """Linear probe of the current pretrained state (and the random init), settings in `eval.linear`."""

    name: Literal["linear"]
    summary_keys: ClassVar[tuple[str, ...]] = ("linear_top1", "linear_features")

    def check(self, config: Config, key: str) -> None:
        from pretrainlab.models.backbones.timm_backbone import is_vit

        linear, backbone = config.eval.linear, config.backbone
        if not linear.reads_last_blocks:
            return
        if backbone.name != "timm" or not is_vit(backbone.arch) or backbone.channel_adapter != "none":
            raise ValueError(
                f"{key}: eval.linear.last_n_blocks={linear.last_n_blocks}, avgpool_patch_tokens="
                f"{linear.avgpool_patch_tokens} read the tokens of a ViT's last blocks; backbone "
                f"{backbone.describe()} is not a timm ViT (set last_n_blocks: 1, avgpool_patch_tokens: false)"
            )


def linear_probe_features(context: StudyContext) -> dict[str, PooledFeatures]:
    """The features `eval.linear` reads, by evaluated backbone: the shared pooled features, else the
    last-blocks features of each ViT (extracted here, not cached)."""
    from pretrainlab.eval.pooled_features import extract_last_blocks_features

    linear = context.config.eval.linear
    if not linear.reads_last_blocks:
        return context.pooled_features()
    train_loader, val_loader = context.eval_loaders()
    return {
        name: extract_last_blocks_features(
            method.eval_backbone(),
            train_loader,
            val_loader,
            num_blocks=linear.last_n_blocks,
            use_patch_average=linear.avgpool_patch_tokens,
        )
        for name, method in context.methods().items()
    }


@PHASES.register(LinearPhaseConfig)
def run_linear_phase(phase: LinearPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.eval.linear_probe import linear_probe_scores
    from pretrainlab.run_dir import write_json

    started = time.perf_counter()
    linear = context.config.eval.linear
    described = linear.describe_features()
    scores = {
        name: linear_probe_scores(features, linear) | {"features": described}
        for name, features in linear_probe_features(context).items()
    }
    write_json(place.dir / "linear.json", scores)
    return {
        "epoch": context.epoch,
        "linear_top1": {name: s["top1"] for name, s in scores.items()},
        "linear_features": described,
        "seconds": time.perf_counter() - started,
    }
