"""SAM-layout mask sets: coverage choice, the RLE JSON and PNG-stack readers against the generator's
instance masks, SA-1B's dict layout, uncompressed RLE, and malformed files reported by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.data.formats.masks import (
    MaskSetError,
    choose_by_coverage,
    compressed_rle_runs,
    mask_set_path,
    read_all_masks,
    read_mask,
    read_mask_areas,
    read_segment,
    write_png_stack,
    write_sam_json,
)
from pretrainlab.data.synthetic import write_synthetic_dataset

SPLIT_COUNTS = {"training": 4, "validation": 2}


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_masks")
    write_synthetic_dataset(root, num_classes=2, num_train=2, num_val=2, num_seg_train=4, num_seg_val=2, workers=1)
    return root / "segmentation"


def _two_masks() -> np.ndarray:
    """(2, 6, 8) bool: a 2 x 3 block and everything else."""
    first = np.zeros((6, 8), dtype=bool)
    first[1:3, 4:7] = True
    return np.stack([first, ~first])


def _column_major_runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE of an (H, W) bool mask: alternating 0 / 1 run lengths in column-major order."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


@pytest.mark.parametrize(
    ("areas", "coverage_ratio", "expected"),
    [
        ([10, 30, 55, 90], 40.0, 1),
        ([10, 30, 55, 90], 50.0, 2),
        ([10, 30, 55, 90], 100.0, 3),
        ([10, 30, 55, 90], 0.0, 0),
        ([10, 30, 50, 90], 40.0, 1),  # 30 and 50 tie: the first
        ([50, 30, 10, 90], 40.0, 0),
        ([90, 90], 90.0, 0),
    ],
)
def test_choose_by_coverage_picks_the_closest_area(areas: list[int], coverage_ratio: float, expected: int) -> None:
    assert choose_by_coverage(np.asarray(areas), 100, coverage_ratio) == expected


def test_choose_by_coverage_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        choose_by_coverage(np.zeros(0, dtype=np.int64), 100, 40.0)
    with pytest.raises(ValueError, match="coverage_ratio=-0.4"):
        choose_by_coverage(np.array([1]), 100, -0.4)
    with pytest.raises(ValueError, match="image_area=0"):
        choose_by_coverage(np.array([1]), 0, 40.0)


def test_compressed_rle_runs_invert_the_pycocotools_encoder() -> None:
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for density in (0.02, 0.5, 0.98):
        mask = rng.random((37, 53)) < density
        mask[0, 0] = density > 0.5  # both a leading 0 run and a leading 1 run occur
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert compressed_rle_runs(encoded["counts"].decode()) == _column_major_runs(mask)
    assert compressed_rle_runs("!!!garbage") is None
    assert compressed_rle_runs("R") is None  # 'R' announces another group that never comes


def test_both_layouts_read_the_generator_instances(seg_root: Path) -> None:
    for split, count in SPLIT_COUNTS.items():
        for index in range(count):
            stem = f"{index:06d}"
            with np.load(seg_root / "instances" / split / f"{stem}.npz") as instances:
                masks, areas = instances["masks"], instances["areas"]
            assert len(masks) >= 2
            for fmt, folder in (("sam_json", "sam_masks"), ("png_stack", "sam_png")):
                path = mask_set_path(seg_root / folder / split, stem, fmt)
                read_areas, size = read_mask_areas(path, fmt)
                assert size == (64, 64)
                np.testing.assert_array_equal(read_areas, areas)
                all_masks = read_all_masks(path, fmt)
                assert all_masks.dtype == bool
                np.testing.assert_array_equal(all_masks, masks)
                np.testing.assert_array_equal(read_mask(path, fmt, len(masks) - 1), masks[-1])
                chosen = choose_by_coverage(areas, 64 * 64, 30.0)
                np.testing.assert_array_equal(read_segment(seg_root / folder / split, stem, fmt, 30.0), masks[chosen])


def test_generated_records_follow_the_amg_layout(seg_root: Path) -> None:
    records = json.loads((seg_root / "sam_masks" / "training" / "000000.json").read_text())
    with np.load(seg_root / "instances" / "training" / "000000.npz") as instances:
        masks = instances["masks"]
    metadata = (seg_root / "sam_png" / "training" / "000000" / "metadata.csv").read_text()
    lines = metadata.split("\n")
    assert not metadata.endswith("\n") and len(lines) == len(masks) + 1
    assert lines[0].startswith("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,")
    for record, mask, line in zip(records, masks, lines[1:]):
        rows, columns = np.nonzero(mask)
        x0, y0 = columns.min(), rows.min()
        assert record["bbox"] == [x0, y0, columns.max() - x0 + 1, rows.max() - y0 + 1]
        (x, y), = record["point_coords"]
        assert mask[int(y), int(x)]
        assert record["crop_box"] == [0, 0, 64, 64] and record["predicted_iou"] == record["stability_score"] == 1.0
        assert line.split(",")[1:6] == [str(record["area"]), *map(str, record["bbox"])]
    png = cv2.imread(str(seg_root / "sam_png" / "training" / "000000" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.shape == (64, 64) and set(np.unique(png)) <= {0, 255}


def test_sa1b_dict_layout_reads_like_the_list_layout(seg_root: Path, tmp_path: Path) -> None:
    list_path = seg_root / "sam_masks" / "validation" / "000001.json"
    records = json.loads(list_path.read_text())
    image = {"image_id": 1, "width": 64, "height": 64, "file_name": "sa_1.jpg"}
    dict_path = tmp_path / "sa_1.json"
    dict_path.write_text(json.dumps({"image": image, "annotations": [{**r, "id": i} for i, r in enumerate(records)]}))
    list_areas, list_size = read_mask_areas(list_path, "sam_json")
    dict_areas, dict_size = read_mask_areas(dict_path, "sam_json")
    np.testing.assert_array_equal(dict_areas, list_areas)
    assert dict_size == list_size == (64, 64)
    np.testing.assert_array_equal(read_all_masks(dict_path, "sam_json"), read_all_masks(list_path, "sam_json"))
    np.testing.assert_array_equal(
        read_segment(tmp_path, "sa_1", "sam_json", 50.0), read_segment(list_path.parent, "000001", "sam_json", 50.0)
    )


def test_uncompressed_rle_reads_like_the_compressed_one(tmp_path: Path) -> None:
    masks = _two_masks()
    write_sam_json(tmp_path / "compressed.json", masks)
    records = json.loads((tmp_path / "compressed.json").read_text())
    for record, mask in zip(records, masks):
        record["segmentation"]["counts"] = _column_major_runs(mask)
    (tmp_path / "uncompressed.json").write_text(json.dumps(records))
    np.testing.assert_array_equal(read_all_masks(tmp_path / "uncompressed.json", "sam_json"), masks)
    np.testing.assert_array_equal(read_all_masks(tmp_path / "compressed.json", "sam_json"), masks)


def test_missing_or_empty_mask_sets_give_none(tmp_path: Path) -> None:
    assert read_segment(tmp_path, "absent", "sam_json", 40.0) is None
    assert read_segment(tmp_path, "absent", "png_stack", 40.0) is None
    (tmp_path / "empty.json").write_text("[]")
    assert read_segment(tmp_path, "empty", "sam_json", 40.0) is None
    areas, size = read_mask_areas(tmp_path / "empty.json", "sam_json")
    assert areas.shape == (0,) and size == (0, 0)
    (tmp_path / "sa_0.json").write_text(json.dumps({"image": {"height": 5, "width": 7}, "annotations": []}))
    assert read_all_masks(tmp_path / "sa_0.json", "sam_json").shape == (0, 5, 7)
    write_png_stack(tmp_path / "no_masks", np.zeros((0, 6, 8), dtype=bool))
    assert read_segment(tmp_path, "no_masks", "png_stack", 40.0) is None
    with pytest.raises(ValueError, match="unknown mask format 'coco'"):
        read_segment(tmp_path, "absent", "coco", 40.0)  # type: ignore[arg-type]


def _break_json(records: list[dict], field: str) -> object:
    record = records[1]
    if field == "segmentation":
        del record["segmentation"]
    elif field == "garbage counts":
        record["segmentation"]["counts"] = "!!!garbage"
    elif field == "truncated counts":  # runs cover fewer pixels than H * W: pycocotools would return junk
        record["segmentation"]["counts"] = record["segmentation"]["counts"][:-1]
    elif field == "overlong counts":  # pycocotools raises on this one
        record["segmentation"]["counts"] += "9"
    elif field == "negative run":
        record["segmentation"]["counts"] = [6, -2, 2, 2, 40]
    elif field == "size":
        for each in records:
            each["segmentation"]["size"] = [6, 0]
    elif field == "area":
        record["area"] = 12.5
    return records


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("invalid json", "not valid JSON"),
        ("not a list", "expected a JSON list"),
        ("segmentation", "record 1 has no 'segmentation'"),
        ("garbage counts", "record 1 'segmentation.counts' is not a COCO compressed RLE"),
        ("truncated counts", "record 1 'segmentation.counts': the runs cover 39 pixels"),
        ("overlong counts", r"record 1 'segmentation.counts': the runs cover 59 pixels .*= 6 \* 8 = 48"),
        ("negative run", "record 1 'segmentation.counts': an uncompressed RLE must hold non-negative"),
        ("size", r"record 0 'segmentation.size' is \[6, 0\]; expected two positive ints"),
        ("area", "record 1 'area' is 12.5"),
    ],
)
def test_malformed_sam_json_is_reported_by_file_name(tmp_path: Path, field: str, message: str) -> None:
    path = tmp_path / "sa_bad.json"
    write_sam_json(path, _two_masks())
    if field == "invalid json":
        path.write_text(path.read_text()[:-5])
    elif field == "not a list":
        path.write_text('{"masks": []}')
    else:
        path.write_text(json.dumps(_break_json(json.loads(path.read_text()), field)))
    with pytest.raises(MaskSetError, match=re.escape(str(path))) as raised:
        read_all_masks(path, "sam_json")
    assert re.search(message, str(raised.value))
    with pytest.raises(MaskSetError, match="sa_bad.json"):
        read_segment(tmp_path, "sa_bad", "sam_json", 90.0)  # the larger mask, record 1


@pytest.mark.parametrize(
    ("damage", "bad_file", "message"),
    [
        ("no header column", "metadata.csv", r"lacks column\(s\) \['stability_score'\]"),
        ("no metadata", "metadata.csv", "metadata.csv is missing"),
        ("missing png", "1.png", "1.png is missing; .* line 3 lists it"),
        ("other size", "1.png", r"1.png is \(5, 8\) \(H, W\); expected \(6, 8\)"),
        ("colour png", "1.png", "mode 'RGB'"),
        ("bad area", "metadata.csv", "line 2 'area' is '-3'"),
    ],
)
def test_malformed_png_stack_is_reported_by_file_name(tmp_path: Path, damage: str, bad_file: str, message: str) -> None:
    folder = tmp_path / "sa_bad"
    write_png_stack(folder, _two_masks())
    metadata = folder / "metadata.csv"
    if damage == "no header column":
        metadata.write_text(metadata.read_text().replace("stability_score", "stability"))
    elif damage == "no metadata":
        metadata.unlink()
    elif damage == "missing png":
        (folder / "1.png").unlink()
    elif damage == "other size":
        cv2.imwrite(str(folder / "1.png"), np.zeros((5, 8), dtype=np.uint8))
    elif damage == "colour png":
        cv2.imwrite(str(folder / "1.png"), np.zeros((6, 8, 3), dtype=np.uint8))
    elif damage == "bad area":
        lines = metadata.read_text().split("\n")
        lines[1] = lines[1].replace(",6,", ",-3,", 1)
        metadata.write_text("\n".join(lines))
    with pytest.raises(MaskSetError, match=re.escape(str(folder / bad_file))) as raised:
        read_all_masks(folder, "png_stack")
    assert re.search(message, str(raised.value))
