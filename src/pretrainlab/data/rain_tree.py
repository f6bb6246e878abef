"""Rain domains of a segmentation dataset, written in the tree of the public rain-rendered
Cityscapes (Halder et al. ICCV 2019 / Tremblay et al. IJCV 2020 release), so a clear domain and
one domain per rain rate share the same labels.

Layout under `out/`:

    leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png                    clear domain (source pixels, PNG)
    leftImg8bit/{train,val}/rain/<R>mm/rainy_image/<stem>_leftImg8bit.png    rain domain of R mm/h
    gtFine/{train,val}/<city>/<stem>_gtFine_labelTrainIds.png                labels of every domain: source bytes
    classes.json                                                             the source's, when it has one
    rain_complete.json                                                       written last (parameters, see below)

`<city>` is the source's city folder for a Cityscapes-layout source and `clear` for an
ADE20k-layout one; `<R>` is written as an int when integral (`25mm`, `200mm`), else as `12.5mm`.
Labels are copied unchanged, so they keep the source's encoding: an ADE20k-layout source (the
synthetic one) has 0 = "other" and needs `reduce_zero_label` (recorded in the marker, and in the
copied `classes.json` of the synthetic set); a Cityscapes source has train ids, 255 = ignore.

Reading it back: the clear domain is a plain Cityscapes-layout split (`find_cityscapes_pairs(out,
split)`: its `*/*_leftImg8bit.png` glob does not reach the deeper rain folders), and
`find_rain_domain_pairs(out, split, rate)` gives any domain's (image, label) pairs: a rain image
`<stem>_leftImg8bit.png` takes the label of the clear image with the same `<stem>`.

Sources: the ADE20k layout (`images/{training,validation}/<stem>.jpg`, `annotations/.../<stem>.png`,
optional `depth/.../<stem>.png` uint16 mm as `pretrainlab data synth` writes under `segmentation/`)
or the Cityscapes layout (no depth is read: the rain uses the row-gradient depth of
`render_rain`). Rain is rendered by `pretrainlab.data.transforms.rain.render_rain` with
`key = crc32("<split>/<city>/<stem>")`, so every file is byte-identical for a seed whatever the
number of workers or the other files.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pretrainlab.data.formats.segmentation_datasets import find_ade20k_pairs, find_cityscapes_pairs
from pretrainlab.data.transforms.rain import render_rain, row_gradient_depth

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER_NAME = "rain_complete.json"
SPLITS: tuple[str, ...] = ("train", "val")
RAIN_FOLDER = "rain"
CLEAR_CITY = "clear"  # city folder of the clear images of an ADE20k-layout source
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
SourceLayout = Literal["ade20k", "cityscapes"]
_ADE20K_SPLITS = {"train": "training", "val": "validation"}
_IMAGES_PER_TASK = 16


@dataclass(frozen=True)
class RainTreeSummary:
    """What `write_rain_tree` wrote (also the content of the completion marker, without root and seconds)."""

    root: str
    source: str
    layout: SourceLayout
    intensities: list[float]
    seed: int
    depth_scale: float
    num_train: int
    num_val: int
    reduce_zero_label: bool
    format_version: int
    seconds: float


@dataclass(frozen=True)
class _Sample:
    split: str
    city: str
    stem: str
    image: Path
    label: Path
    depth: Path | None  # uint16 PNG in millimetres


@dataclass(frozen=True)
class _Task:
    out: Path
    samples: tuple[_Sample, ...]
    intensities: tuple[float, ...]
    seed: int
    depth_scale: float


def rain_folder_name(rate_mm_h: float) -> str:
    """'25mm' for 25.0, '12.5mm' for 12.5."""
    return f"{int(rate_mm_h)}mm" if float(rate_mm_h).is_integer() else f"{rate_mm_h:g}mm"


def rain_image_dir(root: Path, split: str, rate_mm_h: float) -> Path:
    """`root/leftImg8bit/<split>/rain/<R>mm/rainy_image`."""
    return root / "leftImg8bit" / split / RAIN_FOLDER / rain_folder_name(rate_mm_h) / "rainy_image"


def find_rain_domain_pairs(root: Path, split: str, rate_mm_h: float | None = None) -> list[tuple[Path, Path]]:
    """(image, label) pairs of one domain of a rain tree: the clear one (`rate_mm_h` None) or rain of R mm/h.

    A rain image `<stem>_leftImg8bit.png` (directly in `rainy_image/` or in a city folder below it)
    takes the label of the clear image `<city>/<stem>_leftImg8bit.png`; pairs come in the clear
    domain's order, so index i is the same scene in every domain that holds all of them.
    """
    clear = find_cityscapes_pairs(root, split)
    if rate_mm_h is None:
        return clear
    folder = rain_image_dir(root, split, rate_mm_h)
    if not folder.is_dir():
        raise ValueError(f"expected the rain folder {folder} (split {split!r}, {rate_mm_h} mm/h) but it does not exist")
    position = {image.name: index for index, (image, _) in enumerate(clear)}
    indexed = []
    for image in folder.rglob(f"*{IMAGE_SUFFIX}"):
        if image.name not in position:
            clear_dir = root / "leftImg8bit" / split
            raise ValueError(f"rain image {image} has no clear image of the same name under {clear_dir}")
        index = position[image.name]
        indexed.append((index, image, clear[index][1]))
    return [(image, label) for _, image, label in sorted(indexed)]


def detect_layout(src: Path) -> SourceLayout:
    """'ade20k' when `src` holds images/ and annotations/, 'cityscapes' when it holds leftImg8bit/ and gtFine/."""
    is_ade20k = (src / "images").is_dir() and (src / "annotations").is_dir()
    is_cityscapes = (src / "leftImg8bit").is_dir() and (src / "gtFine").is_dir()
    if is_ade20k == is_cityscapes:
        found = sorted(path.name for path in src.iterdir()) if src.is_dir() else "nothing (no such folder)"
        hint = " (for the synthetic set, pass its segmentation/ folder)" if (src / "segmentation").is_dir() else ""
        raise ValueError(
            f"cannot tell the layout of {src}: expected images/ + annotations/ (ADE20k) or leftImg8bit/ + gtFine/ "
            f"(Cityscapes), found {found}{hint}"
        )
    return "ade20k" if is_ade20k else "cityscapes"


def _source_samples(src: Path, layout: SourceLayout, split: str) -> list[_Sample]:
    samples = []
    if layout == "ade20k":
        depth_dir = src / "depth" / _ADE20K_SPLITS[split]
        for image, label in find_ade20k_pairs(src, split):
            depth = depth_dir / f"{image.stem}.png"
            samples.append(_Sample(split, CLEAR_CITY, image.stem, image, label, depth if depth.is_file() else None))
        return samples
    for image, label in find_cityscapes_pairs(src, split):
        if image.parent.name == RAIN_FOLDER:
            raise ValueError(f"source city folder {image.parent} is named {RAIN_FOLDER!r}, the rain domains' folder")
        samples.append(_Sample(split, image.parent.name, image.name[: -len(IMAGE_SUFFIX)], image, label, None))
    return samples


def _check_unique_stems(samples: list[_Sample]) -> None:
    """Rain folders hold no city level, so two cities' images of one name would overwrite each other."""
    seen: dict[tuple[str, str], Path] = {}
    for sample in samples:
        other = seen.setdefault((sample.split, sample.stem), sample.image)
        if other != sample.image:
            raise ValueError(
                f"images {other} and {sample.image} share the name {sample.stem!r} in split {sample.split!r}"
            )


def _check_intensities(intensities: list[float]) -> tuple[float, ...]:
    if not intensities:
        raise ValueError("give at least one rain intensity (mm/h)")
    for rate in intensities:
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(
                f"rain intensity {rate} is not valid; expected a finite rate > 0 mm/h (the clear domain is always made)"
            )
    names = [rain_folder_name(rate) for rate in intensities]
    if len(set(names)) != len(names):
        raise ValueError(f"rain intensities {intensities} give repeated folders {names}")
    return tuple(float(rate) for rate in intensities)


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return image[:, :, ::-1]  # BGR -> RGB, (H, W, 3)


def _read_depth_m(path: Path, shape: tuple[int, int]) -> np.ndarray:
    depth = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.dtype != np.uint16 or depth.shape != shape:
        found = "undecodable" if depth is None else f"{depth.dtype} {depth.shape}"
        raise ValueError(f"depth map {path} is {found}; expected a uint16 (H, W) = {shape} PNG in millimetres")
    return depth.astype(np.float32) / 1000.0


def _write_png(path: Path, image_rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    path.write_bytes(encoded.tobytes())


def _run_task(task: _Task) -> int:
    cv2.setNumThreads(1)
    for sample in task.samples:
        image_name = f"{sample.stem}{IMAGE_SUFFIX}"
        clear_dir = task.out / "leftImg8bit" / sample.split / sample.city
        label_dir = task.out / "gtFine" / sample.split / sample.city
        image = _read_rgb(sample.image)
        if sample.image.suffix == ".png":  # already lossless: keep the source bytes
            shutil.copyfile(sample.image, clear_dir / image_name)
        else:
            _write_png(clear_dir / image_name, image)
        shutil.copyfile(sample.label, label_dir / f"{sample.stem}{LABEL_SUFFIX}")
        if sample.depth is None:
            depth = row_gradient_depth(image.shape[0], image.shape[1]) * task.depth_scale
        else:
            depth = _read_depth_m(sample.depth, image.shape[:2]) * task.depth_scale
        key = zlib.crc32(f"{sample.split}/{sample.city}/{sample.stem}".encode())
        for rate in task.intensities:
            rainy = render_rain(image, rate, depth_m=depth, seed=task.seed, key=key)
            _write_png(rain_image_dir(task.out, sample.split, rate) / image_name, rainy)
    return len(task.samples)


def _marker_parameters(summary: RainTreeSummary) -> dict[str, object]:
    parameters = asdict(summary)
    del parameters["root"], parameters["seconds"]
    return parameters


def _is_complete(out: Path, parameters: dict[str, object]) -> bool:
    marker = out / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == parameters
    except (OSError, json.JSONDecodeError):
        return False


def write_rain_tree(
    src: Path | str,
    out: Path | str,
    intensities: list[float],
    *,
    layout: SourceLayout | None = None,
    seed: int = 0,
    depth_scale: float = 1.0,
    workers: int = 1,
) -> RainTreeSummary:
    """Write the clear domain and one rain domain per intensity (mm/h) of `src` under `out` (module docstring).

    `layout` None detects it from the folders of `src`. Does nothing (and returns the summary, with
    `seconds` 0) when `out` already holds a complete tree of the same parameters; otherwise any
    earlier `leftImg8bit/` and `gtFine/` under `out` are removed first and the marker
    `rain_complete.json` is written last, so an interrupted run is redone. `depth_scale` multiplies
    the depth maps (and the row-gradient default) before the attenuation: a small rendered scene
    whose depths span tens of metres can be rained on as if it spanned a street.
    """
    if depth_scale <= 0:
        raise ValueError(f"depth_scale={depth_scale} is not valid; expected a positive factor")
    src, out = Path(src).resolve(), Path(out).resolve()
    if src == out:
        raise ValueError(f"the rain tree cannot be written into its source folder {src}")
    if workers < 1:
        raise ValueError(f"workers={workers} is not valid; expected an integer >= 1")
    rates = _check_intensities(intensities)
    layout = detect_layout(src) if layout is None else layout
    if layout not in ("ade20k", "cityscapes"):
        raise ValueError(f"unknown source layout {layout!r}; known: ade20k, cityscapes")
    samples = [sample for split in SPLITS for sample in _source_samples(src, layout, split)]
    if not samples:
        raise ValueError(f"no images found under {src} (layout {layout!r}, splits {SPLITS})")
    _check_unique_stems(samples)
    started = time.perf_counter()
    summary = RainTreeSummary(
        root=str(out), source=str(src), layout=layout, intensities=list(rates), seed=seed, depth_scale=depth_scale,
        num_train=sum(sample.split == "train" for sample in samples),
        num_val=sum(sample.split == "val" for sample in samples),
        reduce_zero_label=layout == "ade20k", format_version=FORMAT_VERSION, seconds=0.0,
    )  # fmt: skip
    if _is_complete(out, _marker_parameters(summary)):
        log.info("rain tree %s is complete; nothing to do", out)
        return summary
    (out / MARKER_NAME).unlink(missing_ok=True)
    for folder in ("leftImg8bit", "gtFine"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for sample in samples:
        for top in ("leftImg8bit", "gtFine"):
            (out / top / sample.split / sample.city).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for rate in rates:
            rain_image_dir(out, split, rate).mkdir(parents=True, exist_ok=True)
    if (src / "classes.json").is_file():
        shutil.copyfile(src / "classes.json", out / "classes.json")
    tasks = [
        _Task(out, tuple(samples[start : start + _IMAGES_PER_TASK]), rates, seed, depth_scale)
        for start in range(0, len(samples), _IMAGES_PER_TASK)
    ]
    if workers == 1:
        written = sum(_run_task(task) for task in tasks)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            written = sum(pool.imap_unordered(_run_task, tasks))
    summary = replace(summary, seconds=time.perf_counter() - started)
    (out / MARKER_NAME).write_text(json.dumps(_marker_parameters(summary), indent=1))
    log.info("wrote %d clear images and %d rain domains under %s in %.1f s", written, len(rates), out, summary.seconds)
    return summary
