"""Per-image sets of segment masks in the two on-disk layouts of Segment Anything
(Kirillov et al., "Segment Anything", ICCV 2023; its SA-1B data set and `scripts/amg.py`).

`sam_json`, one JSON file per image, ``<root>/<stem>.json``, either

* the automatic mask generator's output (``output_mode="coco_rle"``): a list of records
  ``{"segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"}, "area", "bbox",
  "predicted_iou", "point_coords", "stability_score", "crop_box"}``, or
* SA-1B's per-image file: ``{"image": {"image_id", "width", "height", "file_name"},
  "annotations": [the same records, plus "id"]}``.

  ``counts`` may also be an uncompressed RLE, a list of run lengths.

`png_stack`, the folder `amg.py` writes, ``<root>/<stem>/``::

    <i>.png          mask i as 8-bit grayscale, 255 inside and 0 outside
    metadata.csv     header PNG_STACK_COLUMNS, then one row per mask (id = i)

Areas are the recorded ones (``area`` / the ``area`` column), so choosing a mask by its
coverage decodes only that mask. A file that exists but is malformed raises `MaskSetError`
naming the file, the record (or row) and the field. Validation is cheap and done when a set
is opened (JSON syntax, record fields, sizes, CSV header, listed PNGs exist) and when a
mask is decoded (its RLE, its PNG): reading the areas does not decode any RLE.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

MaskFormat = Literal["sam_json", "png_stack"]
MASK_FORMATS: tuple[str, ...] = get_args(MaskFormat)
PNG_STACK_COLUMNS: tuple[str, ...] = (
    "id", "area", "bbox_x0", "bbox_y0", "bbox_w", "bbox_h", "point_input_x", "point_input_y",
    "predicted_iou", "stability_score", "crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h",
)  # fmt: skip
METADATA_NAME = "metadata.csv"
_PNG_MODES = ("L", "1")  # 8-bit grayscale (what amg.py writes) or bilevel


class MaskSetError(ValueError):
    """A mask-set file that exists but is malformed; the message names the file, the record and the field."""


def mask_set_path(root: Path, stem: str, fmt: MaskFormat) -> Path:
    """Where image `stem`'s masks are: ``<root>/<stem>.json`` (sam_json) or the folder ``<root>/<stem>/``
    (png_stack)."""
    _check_format(fmt)
    return Path(root) / f"{stem}.json" if fmt == "sam_json" else Path(root) / stem


def read_mask_areas(path: Path, fmt: MaskFormat) -> tuple[np.ndarray, tuple[int, int]]:
    """The recorded areas (K,) int64 and the image size (H, W) of one mask set, without decoding any mask.

    The size comes from ``image.height/width`` (SA-1B), the records' ``segmentation.size`` (AMG list) or
    the first PNG (png_stack); it is (0, 0) when the set holds no mask and its layout records no size.
    """
    mask_set = _open(Path(path), fmt)
    return mask_set.areas, mask_set.image_size


def read_mask(path: Path, fmt: MaskFormat, index: int) -> np.ndarray:
    """Mask `index` of one mask set, (H, W) bool, decoding only that mask."""
    return _open(Path(path), fmt).mask(index)


def read_all_masks(path: Path, fmt: MaskFormat) -> np.ndarray:
    """Every mask of one mask set, (K, H, W) bool."""
    mask_set = _open(Path(path), fmt)
    if len(mask_set.areas) == 0:
        return np.zeros((0, *mask_set.image_size), dtype=bool)
    return np.stack([mask_set.mask(index) for index in range(len(mask_set.areas))])


def choose_by_coverage(areas: np.ndarray, image_area: int, coverage_ratio: float) -> int:
    """Index of the mask whose area is the closest to `coverage_ratio` percent of `image_area`; ties go to the first.

    Args:
        areas: (K,) mask areas in pixels, K >= 1.
        image_area: H * W of the image, > 0.
        coverage_ratio: the wanted fraction of the image in percent, in [0, 100] (40.0 means 40 %).
    """
    areas = np.asarray(areas)
    if areas.ndim != 1 or areas.size == 0:
        raise ValueError(f"areas must be a non-empty 1-D array; got shape {areas.shape}")
    if image_area <= 0:
        raise ValueError(f"image_area={image_area} is not valid; expected a positive number of pixels")
    if not 0.0 <= coverage_ratio <= 100.0:
        raise ValueError(f"coverage_ratio={coverage_ratio} is not valid; expected a percentage in [0, 100]")
    # Compare area * 100 with ratio * image_area rather than fractions, so equal distances stay exactly equal.
    distance = np.abs(areas.astype(np.float64) * 100.0 - coverage_ratio * image_area)  # (K,)
    return int(np.argmin(distance))


def read_segment(root: Path, stem: str, fmt: MaskFormat, coverage_ratio: float) -> np.ndarray | None:
    """The mask of image `stem` chosen by `choose_by_coverage`, (H, W) bool, or None when the image has no
    mask set (no file / folder, or zero masks). A malformed set raises `MaskSetError`."""
    path = mask_set_path(root, stem, fmt)
    if not path.exists():
        return None
    mask_set = _open(path, fmt)
    if len(mask_set.areas) == 0:
        return None
    height, width = mask_set.image_size
    return mask_set.mask(choose_by_coverage(mask_set.areas, height * width, coverage_ratio))


def write_sam_json(path: Path, masks: np.ndarray) -> None:
    """Write (K, H, W) bool `masks` as the automatic mask generator's ``coco_rle`` JSON list.

    Every mask must be non-empty. ``bbox`` is COCO's XYWH (width = last column - first column + 1),
    ``point_coords`` the pixel farthest inside the mask, ``predicted_iou`` and ``stability_score`` 1.0,
    ``crop_box`` the whole image. Keys are sorted, so equal masks give equal bytes.
    """
    records = []
    for mask in masks:
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": [int(size) for size in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
        records.append({"segmentation": segmentation, **_amg_fields(mask)})
    Path(path).write_text(json.dumps(records, sort_keys=True))


def write_png_stack(folder: Path, masks: np.ndarray) -> None:
    """Write (K, H, W) bool `masks` as amg.py does: ``<folder>/<i>.png`` (mask × 255) and ``metadata.csv``
    (rows joined by newlines, none after the last). Fields as in `write_sam_json`; `folder` is created."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [",".join(PNG_STACK_COLUMNS)]
    for index, mask in enumerate(masks):
        ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * np.uint8(255))
        if not ok:
            raise ValueError(f"OpenCV could not encode mask {index} of shape {mask.shape} for {folder}")
        (folder / f"{index}.png").write_bytes(encoded.tobytes())
        fields = _amg_fields(mask)
        values = [index, fields["area"], *fields["bbox"], *fields["point_coords"][0], fields["predicted_iou"],
                  fields["stability_score"], *fields["crop_box"]]  # fmt: skip
        rows.append(",".join(str(value) for value in values))
    (folder / METADATA_NAME).write_text("\n".join(rows))


def _amg_fields(mask: np.ndarray) -> dict[str, Any]:
    """The automatic mask generator's per-mask fields except ``segmentation``, for one (H, W) bool mask."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot describe an empty mask: it has no box and no point inside")
    # Distance to the nearest outside pixel (the image border counts as outside); its argmax lies inside.
    inside_distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    point_y, point_x = np.unravel_index(int(np.argmax(inside_distance)), mask.shape)
    height, width = mask.shape
    return {
        "area": int(mask.sum()),
        "bbox": [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)],
        "predicted_iou": 1.0,
        "point_coords": [[float(point_x), float(point_y)]],
        "stability_score": 1.0,
        "crop_box": [0, 0, width, height],
    }


def _check_format(fmt: str) -> None:
    if fmt not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {fmt!r}; known: {', '.join(MASK_FORMATS)}")


def _open(path: Path, fmt: MaskFormat) -> _SamJsonSet | _PngStackSet:
    _check_format(fmt)
    return _SamJsonSet(path) if fmt == "sam_json" else _PngStackSet(path)


def _as_size(value: Any) -> tuple[int, int] | None:
    """(H, W) when `value` is two positive ints (JSON booleans are not ints here), else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    if not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in value):
        return None
    return int(value[0]), int(value[1])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def compressed_rle_runs(counts: str) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string, or None when `counts` is not one.

    Each run length is stored as 5-bit groups, least significant first, in the characters
    chr(48 + group); bit 0x20 of a character says another group follows and bit 0x10 of the last
    group is the sign. From the fourth run on, the stored value is the difference to the run two before.
    """
    runs: list[int] = []
    value = shift = 0
    for character in counts:
        code = ord(character) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift  # negative: sign-extend from the last group
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if shift else runs  # a last character that announces another group means a cut-off string


class _SamJsonSet:
    """A `sam_json` file, parsed and checked field by field; RLEs are decoded on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            content = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise MaskSetError(f"{path}: not valid JSON ({error})") from error
        image_size: tuple[int, int] | None = None
        if isinstance(content, dict) and "annotations" in content:  # SA-1B
            image = content.get("image")
            image_size = _as_size([image.get("height"), image.get("width")]) if isinstance(image, dict) else None
            if image_size is None:
                raise MaskSetError(f"{path}: 'image' must hold 'height' and 'width' as positive ints; got {image!r}")
            records = content["annotations"]
            if not isinstance(records, list):
                raise MaskSetError(
                    f"{path}: 'annotations' must be a list of mask records; got a {type(records).__name__}"
                )
        elif isinstance(content, list):  # automatic mask generator
            records = content
        else:
            raise MaskSetError(
                f"{path}: expected a JSON list of mask records (SAM automatic mask generator) or a dict with "
                f"'image' and 'annotations' (SA-1B); got a {type(content).__name__}"
            )
        self.segmentations: list[dict[str, Any]] = []
        areas = []
        for index, record in enumerate(records):
            segmentation = self._check_record(index, record)
            record_size = _as_size(segmentation["size"])
            image_size = image_size or record_size
            if record_size != image_size:
                raise MaskSetError(
                    f"{path}: record {index} 'segmentation.size' is {segmentation['size']}; expected the image size "
                    f"{list(image_size)}"
                )
            self.segmentations.append(segmentation)
            areas.append(record["area"])
        self.areas = np.asarray(areas, dtype=np.int64)  # (K,)
        self.image_size: tuple[int, int] = image_size or (0, 0)

    def _check_record(self, index: int, record: Any) -> dict[str, Any]:
        where = f"{self.path}: record {index}"
        if not isinstance(record, dict):
            raise MaskSetError(f"{where} is a {type(record).__name__}; expected a dict")
        segmentation = record.get("segmentation")
        if not isinstance(segmentation, dict):
            raise MaskSetError(f"{where} has no 'segmentation' dict with 'size' and 'counts'; got {segmentation!r:.80}")
        if _as_size(segmentation.get("size")) is None:
            size = segmentation.get("size")
            raise MaskSetError(f"{where} 'segmentation.size' is {size!r}; expected two positive ints")
        if not isinstance(segmentation.get("counts"), (str, list)):
            raise MaskSetError(
                f"{where} 'segmentation.counts' is {segmentation.get('counts')!r:.80}; expected a compressed RLE "
                f"string or a list of run lengths"
            )
        if not _is_count(record.get("area")):
            raise MaskSetError(f"{where} 'area' is {record.get('area')!r}; expected a non-negative int")
        return segmentation

    def mask(self, index: int) -> np.ndarray:
        """Mask `index`, (H, W) bool."""
        if not 0 <= index < len(self.segmentations):
            raise IndexError(f"{self.path}: mask index {index} out of range; the file holds {len(self.segmentations)}")
        where = f"{self.path}: record {index} 'segmentation.counts'"
        height, width = self.image_size
        counts = self.segmentations[index]["counts"]
        # pycocotools returns uninitialised memory for runs that cover less than H * W pixels: check them first.
        if isinstance(counts, str):
            runs = compressed_rle_runs(counts)
            if runs is None:
                raise MaskSetError(f"{where} is not a COCO compressed RLE string: {counts!r:.80}")
            rle = {"size": [height, width], "counts": counts.encode("ascii")}
        else:
            runs = counts
            if not all(_is_count(run) for run in runs):
                raise MaskSetError(f"{where}: an uncompressed RLE must hold non-negative ints; got {counts!r:.80}")
            rle = coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        if min(runs, default=0) < 0 or sum(runs) != height * width:
            raise MaskSetError(
                f"{where}: the runs cover {sum(runs)} pixels (smallest run {min(runs, default=0)}); expected "
                f"non-negative runs covering H * W = {height} * {width} = {height * width}"
            )
        try:
            decoded = coco_mask.decode(rle)
        except (ValueError, OverflowError, TypeError) as error:
            raise MaskSetError(f"{where}: pycocotools cannot decode it ({error})") from error
        if decoded.shape != (height, width):
            raise MaskSetError(f"{where} decodes to shape {decoded.shape}; expected {(height, width)}")
        return np.ascontiguousarray(decoded, dtype=bool)


class _PngStackSet:
    """A `png_stack` folder: metadata.csv parsed and checked, the listed PNGs present; PNGs decoded on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        metadata = folder / METADATA_NAME
        if not metadata.is_file():
            raise MaskSetError(f"{metadata} is missing; a png_stack folder needs it beside its <i>.png masks")
        try:
            text = metadata.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise MaskSetError(f"{metadata}: not UTF-8 text ({error})") from error
        rows = [row for row in csv.reader(text.splitlines()) if row]
        if not rows:
            raise MaskSetError(f"{metadata} is empty; expected the header {','.join(PNG_STACK_COLUMNS)}")
        header = rows[0]
        missing = [column for column in PNG_STACK_COLUMNS if column not in header]
        if missing:
            expected = ",".join(PNG_STACK_COLUMNS)
            raise MaskSetError(f"{metadata}: the header lacks column(s) {missing}; expected {expected}")
        self.pngs: list[Path] = []
        areas = []
        ids: set[int] = set()
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise MaskSetError(f"{metadata} line {line} has {len(row)} fields; the header has {len(header)}")
            fields = dict(zip(header, row))
            for column in ("id", "area"):
                if not fields[column].isdigit():
                    raise MaskSetError(f"{metadata} line {line} '{column}' is {fields[column]!r}; expected an int >= 0")
            mask_id = int(fields["id"])
            if mask_id in ids:
                raise MaskSetError(f"{metadata} line {line} repeats id {mask_id}")
            ids.add(mask_id)
            png = folder / f"{mask_id}.png"
            if not png.is_file():
                raise MaskSetError(f"{png} is missing; {metadata} line {line} lists it")
            self.pngs.append(png)
            areas.append(int(fields["area"]))
        self.areas = np.asarray(areas, dtype=np.int64)  # (K,)
        self.image_size: tuple[int, int] = self._png_size(self.pngs[0]) if self.pngs else (0, 0)

    def _png_size(self, png: Path) -> tuple[int, int]:
        """(H, W) of a mask PNG, from its header."""
        with self._open_png(png) as image:
            return image.height, image.width

    def _open_png(self, png: Path) -> Image.Image:
        """The PNG opened lazily (header read), checked to be a one-channel mask."""
        try:
            image = Image.open(png)
        except OSError as error:
            raise MaskSetError(f"{png}: not a readable image ({error})") from error
        if image.mode not in _PNG_MODES:
            image.close()
            modes = ", ".join(_PNG_MODES)
            raise MaskSetError(f"{png} has PIL mode {image.mode!r}; expected a one-channel mask ({modes})")
        return image

    def mask(self, index: int) -> np.ndarray:
        """Mask `index` (row `index` of metadata.csv), (H, W) bool: the non-zero pixels of its PNG."""
        if not 0 <= index < len(self.pngs):
            raise IndexError(f"{self.folder}: mask index {index} out of range; the folder lists {len(self.pngs)}")
        png = self.pngs[index]
        with self._open_png(png) as image:
            size = (image.height, image.width)
            if size != self.image_size:
                raise MaskSetError(f"{png} is {size} (H, W); expected {self.image_size} like {self.pngs[0].name}")
            try:
                pixels = np.asarray(image)  # (H, W) uint8, or bool for mode "1"
            except OSError as error:
                raise MaskSetError(f"{png}: cannot decode it ({error})") from error
        return pixels > 0
