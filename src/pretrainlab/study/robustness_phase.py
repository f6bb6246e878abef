"""Phase `robustness`: CIFAR-10-C corruptions (`eval.robustness`, Hendrycks & Dietterich 2019) of the val
images, classified with the clean train features of the pretrained and the random-init backbone ->
robustness.json, robustness.md (one table per backbone) and robustness.png in the phase folder."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.run_dir import write_text
from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.run_dir import Phase


class RobustnessPhaseConfig(PhaseConfig):
    """Accuracy under corruptions of the current pretrained state (and the random init), settings in
    `eval.robustness`."""

    name: Literal["robustness"]
    summary_keys: ClassVar[tuple[str, ...]] = ("mean_corruption_acc", "clean_acc", "robustness_table")

    def check(self, config: Config, key: str) -> None:
        from pretrainlab.eval.robustness import check_robustness_channels

        check_robustness_channels(config.eval.robustness, config.data.channels, key)


@PHASES.register(RobustnessPhaseConfig)
def run_robustness_phase(phase: RobustnessPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.eval.robustness import evaluate_robustness, plot_robustness, robustness_markdown
    from pretrainlab.run_dir import write_json

    started = time.perf_counter()
    settings = context.config.eval
    features = context.pooled_features()  # the clean features, shared with knn / linear
    val_loader = context.eval_loaders()[1]
    results = {
        name: evaluate_robustness(
            method.eval_backbone(),
            features[name],
            val_loader,
            settings.robustness,
            knn=settings.knn,
            linear=settings.linear,
        )
        for name, method in context.methods().items()
    }
    write_json(place.dir / "robustness.json", results)
    table = place.dir / "robustness.md"
    write_text(table, robustness_markdown(results))
    plot_robustness(results, place.dir / "robustness.png")
    return {
        "epoch": context.epoch,
        "clean_acc": {name: result["clean_acc"] for name, result in results.items()},
        "mean_corruption_acc": {name: result["mean_corruption_acc"] for name, result in results.items()},
        "robustness_table": str(table.relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }
