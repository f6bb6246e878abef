"""Segmentation metrics: reference numbers from mmsegmentation 1.2.2 `IoUMetric`, hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_reference

from pretrainlab.eval import metrics
from pretrainlab.eval.metrics import SegmentationMetric, intersect_and_union


@pytest.mark.reference
def test_matches_reference_cases() -> None:
    z = load_reference("iou")
    for i in range(int(z["n_cases"])):
        ref = {key[len(f"case{i}/") :]: z[key] for key in z.files if key.startswith(f"case{i}/")}
        metric = SegmentationMetric(int(ref["num_classes"]), ignore_index=int(ref["ignore_index"]))
        for j in range(int(ref["n_pairs"])):
            metric.update(torch.from_numpy(ref[f"pred{j}"]), torch.from_numpy(ref[f"label{j}"]))
        result, summary = metric.compute(), metric.summary()
        for key in ("area_intersect", "area_union", "area_pred_label", "area_label"):
            np.testing.assert_array_equal(result[key], ref[key].astype(np.int64), err_msg=f"case{i} {key}")
        for key in ("IoU", "Acc"):
            np.testing.assert_array_equal(np.isnan(result[key]), np.isnan(ref[key]), err_msg=f"case{i} {key} NaN")
            np.testing.assert_allclose(result[key], ref[key], rtol=1e-6, err_msg=f"case{i} {key}")
            rounded = ref[f"class_{key}_x100_rounded"]
            np.testing.assert_array_equal(np.isnan(summary[key]), np.isnan(rounded), err_msg=f"case{i} {key} summary")
            np.testing.assert_allclose(summary[key], rounded, atol=0.01 + 1e-6, err_msg=f"case{i} {key} summary")
        for key in ("aAcc", "mIoU", "mAcc"):
            np.testing.assert_allclose(result[key], float(ref[key]), rtol=1e-6, err_msg=f"case{i} {key}")
            assert abs(summary[key] - float(ref[f"summary_{key}"])) <= 0.01 + 1e-6, f"case{i} summary {key}"


def test_hand_example_with_absent_classes() -> None:
    # classes: 0 and 1 present; 2 predicted but never labelled; 3 in neither
    pred = torch.tensor([[0, 0, 1], [2, 1, 0]])
    label = torch.tensor([[0, 1, 1], [1, 255, 255]])
    areas = intersect_and_union(pred, label, num_classes=4)
    assert areas.intersect.tolist() == [1, 1, 0, 0]
    assert areas.pred.tolist() == [2, 1, 1, 0]
    assert areas.label.tolist() == [1, 3, 0, 0]
    assert areas.union.tolist() == [2, 3, 1, 0]
    metric = SegmentationMetric(4)
    metric.update(pred, label)
    result = metric.compute()
    np.testing.assert_allclose(result["IoU"], [0.5, 1 / 3, 0.0, np.nan])
    np.testing.assert_allclose(result["Acc"], [1.0, 1 / 3, np.nan, np.nan])
    assert result["aAcc"] == pytest.approx(0.5)
    assert result["mIoU"] == pytest.approx((0.5 + 1 / 3) / 3)
    assert result["mAcc"] == pytest.approx((1 + 1 / 3) / 2)
    assert metric.summary()["mIoU"] == 27.78


def test_counts_are_summed_before_ratios() -> None:
    # per-image IoU of class 0 would be 1.0 and 0.0 (mean 0.5); pooled it is 1/3
    metric = SegmentationMetric(2)
    metric.update(torch.tensor([[0]]), torch.tensor([[0]]))
    metric.update(torch.tensor([[1, 1]]), torch.tensor([[0, 0]]))
    assert metric.compute()["IoU"][0] == pytest.approx(1 / 3)


def test_batched_update_equals_per_map_updates_and_reset() -> None:
    pred, label = torch.randint(0, 5, (3, 6, 7)), torch.randint(0, 5, (3, 6, 7))
    label[label == 4] = 255
    batched, single = SegmentationMetric(5), SegmentationMetric(5)
    batched.update(pred, label)
    for p, t in zip(pred, label):
        single.update(p, t)
    for key in ("area_intersect", "area_union", "area_pred_label", "area_label"):
        np.testing.assert_array_equal(batched.compute()[key], single.compute()[key])
    batched.reset()
    assert batched.compute()["area_label"].sum() == 0


def test_numpy_maps_are_accepted() -> None:
    areas = intersect_and_union(np.array([[1, 0]]), np.array([[1, 1]], dtype=np.uint8), num_classes=2)
    assert areas.intersect.tolist() == [0, 1] and areas.union.tolist() == [1, 2]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(3, 2\)"):
        intersect_and_union(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"pred values .* must lie in \[0, 2\), got min 0 and max 2"):
        intersect_and_union(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]), 2)
    with pytest.raises(ValueError, match=r"label values .* must lie in \[0, 2\), got min 0 and max 7"):
        intersect_and_union(torch.tensor([[0, 1]]), torch.tensor([[0, 7]]), 2)
    with pytest.raises(ValueError, match="integer maps"):
        intersect_and_union(torch.zeros(2, 2), torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\), got shape \(4,\)"):
        SegmentationMetric(2).update(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))


def _per_class_loop(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> dict[str, list]:
    """The four areas class by class, straight from their definitions."""
    valid = label != ignore_index
    areas: dict[str, list] = {"intersect": [], "union": [], "pred": [], "label": []}
    for c in range(num_classes):
        is_pred, is_label = (pred == c) & valid, (label == c) & valid
        areas["intersect"].append(int((is_pred & is_label).sum()))
        areas["union"].append(int((is_pred | is_label).sum()))
        areas["pred"].append(int(is_pred.sum()))
        areas["label"].append(int(is_label.sum()))
    return areas


def _maps(seed: int, num_classes: int, shape: tuple[int, ...], ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps using only some classes (the rest absent), 10 % ignored pixels, 20 % wrong predictions."""
    rng = np.random.default_rng(seed)
    used = rng.choice(num_classes, max(1, num_classes // 2), replace=False)
    label = used[rng.integers(0, len(used), shape)]
    pred = np.where(rng.random(shape) < 0.2, rng.integers(0, num_classes, shape), label)
    label = np.where(rng.random(shape) < 0.1, ignore_index, label)
    return pred, label


_AREA_CASES = [
    (dtype, num_classes, ignore_index)
    for dtype in (np.uint8, np.int16, np.int32, np.int64)
    for num_classes, ignore_index in [(150, 255), (19, 255), (1, 255), (4, 7), (5, 0), (3, -1)]
    if not (dtype == np.uint8 and ignore_index < 0)  # uint8 maps cannot hold a negative ignore_index
]


@pytest.mark.parametrize(("dtype", "num_classes", "ignore_index"), _AREA_CASES)
def test_confusion_areas_equal_a_per_class_loop(dtype: type, num_classes: int, ignore_index: int) -> None:
    for seed, shape in enumerate([(37, 53), (3, 16, 21), (1, 1), (0, 4)]):
        pred, label = _maps(seed, num_classes, shape, ignore_index)
        expected = _per_class_loop(pred, label, num_classes, ignore_index)
        areas = intersect_and_union(torch.from_numpy(pred.astype(dtype)), torch.from_numpy(label.astype(dtype)),
                                    num_classes, ignore_index)  # fmt: skip
        for key, values in expected.items():
            assert getattr(areas, key).dtype == torch.int64
            assert getattr(areas, key).tolist() == values, (key, seed)


def test_one_bincount_path_serves_the_usual_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    pred, label = _maps(0, 150, (64, 80), 255)
    expected = intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), 150)

    def refuse(*args: object) -> None:
        raise AssertionError("the masked path ran")

    monkeypatch.setattr(metrics, "_confusion_masked", refuse)
    for dtype in (torch.uint8, torch.int64):
        areas = intersect_and_union(torch.from_numpy(pred).to(dtype), torch.from_numpy(label).to(dtype), 150)
        for key in ("intersect", "union", "pred", "label"):
            assert torch.equal(getattr(areas, key), getattr(expected, key))


def test_out_of_range_predictions_on_ignored_pixels_are_dropped() -> None:
    # a 255 prediction where the label is ignored is fine (the one-pass path declines, the masked path counts)
    pred = torch.tensor([[0, 255, 1], [1, 1, 0]], dtype=torch.uint8)
    label = torch.tensor([[0, 255, 1], [0, 255, 0]], dtype=torch.uint8)
    areas = intersect_and_union(pred, label, num_classes=2)
    expected = _per_class_loop(pred.numpy(), label.numpy(), 2, 255)
    assert {key: getattr(areas, key).tolist() for key in expected} == expected


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_labels_between_classes_and_ignore_raise_on_every_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=r"label values .* must lie in \[0, 4\), got min 0 and max 9"):
        intersect_and_union(torch.tensor([[0, 1]], dtype=dtype), torch.tensor([[0, 9]], dtype=dtype), 4)
    with pytest.raises(ValueError, match=r"label values .* must lie in \[0, 4\), got min 0 and max 254"):
        intersect_and_union(torch.tensor([[0, 1]], dtype=dtype), torch.tensor([[0, 254]], dtype=dtype), 4, 200)
    with pytest.raises(ValueError, match=r"pred values .* must lie in \[0, 4\), got min 0 and max 4"):
        intersect_and_union(torch.tensor([[0, 4]], dtype=dtype), torch.tensor([[0, 1]], dtype=dtype), 4)
    if dtype == torch.int64:
        with pytest.raises(ValueError, match=r"label values .* got min -3 and max 1"):
            intersect_and_union(torch.tensor([[0, 1]]), torch.tensor([[-3, 1]]), 4)
        with pytest.raises(ValueError, match=r"pred values .* got min -1 and max 1"):
            intersect_and_union(torch.tensor([[-1, 1]]), torch.tensor([[0, 1]]), 4)


def test_uint8_and_int64_accumulate_the_same_numbers() -> None:
    wide, narrow = SegmentationMetric(150), SegmentationMetric(150)
    for seed in range(3):
        pred, label = _maps(seed, 150, (2, 40, 30), 255)
        wide.update(torch.from_numpy(pred), torch.from_numpy(label))
        narrow.update(torch.from_numpy(pred.astype(np.uint8)), torch.from_numpy(label.astype(np.uint8)))
    for key in ("area_intersect", "area_union", "area_pred_label", "area_label"):
        np.testing.assert_array_equal(wide.compute()[key], narrow.compute()[key])
