"""Segmentation metrics: reference numbers from mmsegmentation 1.2.2 `IoUMetric`, hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_reference

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
