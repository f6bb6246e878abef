"""Phase `knn`: weighted kNN (DINO protocol, `eval.knn`) of the pretrained and the random-init
backbone on the run's classification images -> in the phase folder knn.json, knn.md (a table of
every k per backbone), confusion_<backbone>.png (row-normalised) and a t-SNE plot."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.run_dir import write_text
from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.run_dir import Phase


class KNNPhaseConfig(PhaseConfig):
    """kNN of the current pretrained state (and the random init), settings in `eval.knn`."""

    name: Literal["knn"]
    summary_keys: ClassVar[tuple[str, ...]] = ("knn_top1", "knn_f1", "knn_per_k", "knn_table", "tsne")


@PHASES.register(KNNPhaseConfig)
def run_knn_phase(phase: KNNPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.analysis.embeddings import plot_embeddings
    from pretrainlab.eval.knn_eval import knn_scores
    from pretrainlab.report.classification_tables import knn_markdown, plot_confusion
    from pretrainlab.run_dir import write_json

    started = time.perf_counter()
    features = context.pooled_features()
    class_names = list(context.eval_loaders()[1].dataset.classes)
    config = context.config.eval.knn
    scores = {name: knn_scores(f, config, num_classes=len(class_names)) for name, f in features.items()}
    write_json(place.dir / "knn.json", scores)
    confusion_images = {name: f"confusion_{name}.png" for name in scores}
    for name, image in confusion_images.items():
        title = f"kNN confusion, {name} (k = {scores[name]['k']}, T = {config.temperature:g}), row-normalised"
        plot_confusion(scores[name]["confusion"], class_names, place.dir / image, title=title)
    table = place.dir / "knn.md"
    write_text(table, knn_markdown(scores, confusion_images))
    tsne = place.dir / "tsne.png"
    plot_embeddings(features, class_names, tsne)
    return {
        "epoch": context.epoch,
        "knn_top1": {name: s["top1"] for name, s in scores.items()},
        "knn_f1": {name: 100.0 * s["f1"] for name, s in scores.items()},  # macro F1 in % (score tables are %)
        "knn_per_k": {name: s["per_k"] for name, s in scores.items()},
        "knn_table": str(table.relative_to(context.run.path)),
        "tsne": str(tsne.relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }
