"""kNN Markdown tables (k and T in every row, the primary k marked, the right numbers) and confusion PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from pretrainlab.report.classification_tables import knn_markdown, knn_table, plot_confusion, row_normalised


def _scores(k: int, top1: dict[int, float]) -> dict:
    per_k = {str(key): {"top1": value, "top5": 99.0, "precision": value / 200, "recall": value / 100 - 0.25,
                        "f1": 0.123456} for key, value in top1.items()}  # fmt: skip
    return {"k": k, "temperature": 0.07, "per_k": per_k, "num_train": 5000, "num_val": 1000, "top1": top1[k]}


def test_knn_table_has_k_and_t_on_every_row_and_marks_the_primary_k() -> None:
    lines = knn_table(_scores(20, {200: 71.0, 10: 70.4, 20: 72.6})).splitlines()
    assert lines[0] == "| k | T | top-1 | top-5 | precision | recall | F1 |"
    assert lines[1] == "|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2:] == [
        "| 10 | 0.07 | 70.40 | 99.00 | 0.3520 | 0.4540 | 0.1235 |",  # ks in numeric order
        "| 20 (primary) | 0.07 | 72.60 | 99.00 | 0.3630 | 0.4760 | 0.1235 |",
        "| 200 | 0.07 | 71.00 | 99.00 | 0.3550 | 0.4600 | 0.1235 |",
    ]


def test_knn_markdown_has_a_table_per_backbone_and_links_the_confusion_images() -> None:
    results = {"pretrained": _scores(20, {10: 80.0, 20: 81.0}), "random_init": _scores(10, {10: 30.0, 20: 31.0})}
    text = knn_markdown(results, {"pretrained": "confusion_pretrained.png"})
    assert text.count("| k | T | top-1 | top-5 | precision | recall | F1 |") == 2
    pretrained, random_init = text.split("## pretrained")[1].split("## random_init")
    assert "| 20 (primary) | 0.07 | 81.00 |" in pretrained and "| 10 | 0.07 | 80.00 |" in pretrained
    assert "| 10 (primary) | 0.07 | 30.00 |" in random_init and "| 20 | 0.07 | 31.00 |" in random_init
    assert "5000 train (bank) and 1000 val images" in pretrained
    assert "![pretrained confusion matrix](confusion_pretrained.png)" in pretrained
    assert "confusion" not in random_init


def test_incomplete_scores_are_a_clear_error() -> None:
    scores = _scores(20, {20: 50.0})
    del scores["temperature"], scores["per_k"]["20"]["recall"]
    with pytest.raises(ValueError, match="kNN scores of random_init lack temperature, per_k.20.recall"):
        knn_markdown({"random_init": scores})


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero() -> None:
    fractions = row_normalised(np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]]))
    np.testing.assert_allclose(fractions, [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]])


@pytest.mark.parametrize("num_classes", [3, 20])
def test_confusion_png_is_written_and_no_figure_stays_open(tmp_path: Path, num_classes: int) -> None:
    confusion = np.random.default_rng(0).integers(0, 9, size=(num_classes, num_classes))
    path = tmp_path / "knn" / "confusion.png"
    plot_confusion(confusion, [f"class {i}" for i in range(num_classes)], path, title="kNN, pretrained")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200
    assert plt.get_fignums() == []


def test_confusion_errors_close_the_figure_and_name_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 class names for a 3 x 3 confusion matrix"):
        plot_confusion(np.eye(3, dtype=int), ["a", "b"], tmp_path / "c.png", title="t")
    with pytest.raises(ValueError, match=r"square \(C, C\) confusion matrix, got shape \(2, 3\)"):
        plot_confusion(np.zeros((2, 3), dtype=int), ["a", "b"], tmp_path / "c.png", title="t")
    with pytest.raises(ValueError, match="xyz"):  # matplotlib refuses the format while saving
        plot_confusion(np.eye(2, dtype=int), ["a", "b"], tmp_path / "c.xyz", title="t")
    assert plt.get_fignums() == []
