"""Phase `knn`: weighted kNN (DINO protocol, `eval.knn`) of the pretrained and the random-init
backbone on the run's classification images -> knn.json and a t-SNE plot in the phase folder."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.run_dir import Phase


class KNNPhaseConfig(PhaseConfig):
    """kNN of the current pretrained state (and the random init), settings in `eval.knn`."""

    name: Literal["knn"]
    summary_keys: ClassVar[tuple[str, ...]] = ("knn_top1", "knn_per_k", "tsne")


@PHASES.register(KNNPhaseConfig)
def run_knn_phase(phase: KNNPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.analysis.embeddings import plot_embeddings
    from pretrainlab.eval.knn_eval import knn_scores
    from pretrainlab.run_dir import write_json

    started = time.perf_counter()
    features = context.pooled_features()
    scores = {name: knn_scores(f, context.config.eval.knn) for name, f in features.items()}
    write_json(place.dir / "knn.json", scores)
    tsne = place.dir / "tsne.png"
    plot_embeddings(features, list(context.eval_loaders()[1].dataset.classes), tsne)
    return {
        "epoch": context.epoch,
        "knn_top1": {name: s["top1"] for name, s in scores.items()},
        "knn_per_k": {name: s["per_k"] for name, s in scores.items()},
        "tsne": str(tsne.relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }
