"""Throughput of the segmentation train pipeline and IoU accumulation vs MMSegmentation 1.2.2.

Generates N synthetic 512 × (512–900) JPEG images with PNG label maps (ADE20k encoding,
0 = other, 1..150 classes) in a temporary folder, then times on one process, one OpenCV
and one torch thread each:

* `transforms`: file → one augmented uint8 sample; both sides normalise later, per batch.
  Ours: `read_image_bgr` + `read_label` + `reduce_zero_label` + `SegTrainPipeline`
  (resize → cat-max crop 512 → flip → photometric → `SegTrainSample`: uint8 HWC image, its
  pending brightness / contrast table, uint8 label).
  MMSeg: LoadImageFromFile → LoadAnnotations(reduce_zero_label) → RandomResize →
  RandomCrop(cat_max_ratio=0.75) → RandomFlip → PhotoMetricDistortion → PackSegInputs
  (uint8 CHW image tensor, int64 label tensor).
* `batches`: file → normalised, padded (8, 3, 512, 512) float32 batch and (8, 512, 512) int64
  labels — the whole input pipeline, the same work on both sides. Ours: the above +
  `collate_segmentation(size=(512, 512))`; MMSeg: the above +
  `SegDataPreProcessor(bgr_to_rgb, mean/std, size=(512, 512))` run on the CPU.
* `iou`: per-image accumulation at 512 × 683, 150 classes: `SegmentationMetric.update` vs
  `IoUMetric.process`.

Before timing, both sides augment every image once from the same random numbers (numpy's
legacy stream, seeded per image) and the uint8 outputs (ours: `SegTrainPipeline`, the code
that is timed) are compared bit for bit.

MMSeg runs in its own venv (see FACTS.md, e.g. /work/mmseg-venv) in a subprocess. mmcv-lite
has no compiled ops, so a stand-in `mmcv.ops` module is registered before importing mmseg;
every name in it is a placeholder that raises if used (none is used here). Passes alternate
between the two sides so load from other jobs hits both alike; each side's best pass is
reported by wall clock and by process CPU time (less disturbed on a shared machine).

`--allocator tuned` (the default) gives both sides the glibc allocator setting that
pretrainlab's training engine applies in its training process (`keep_freed_memory`: mmap and
trim thresholds raised, so freed arrays stay in the heap instead of being unmapped and
page-faulted back in): `mallopt` in this process, and the same values as
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the MMSeg subprocess's environment.
`--allocator default` keeps glibc's defaults on both sides (those two variables are removed
from the subprocess's environment).

    PYTHONPATH=src python benchmarks/seg_pipeline.py [--num-images 48] [--mmseg-python PATH]
        [--allocator tuned|default]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import logging
import os
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pretrainlab.data.formats.segmentation_datasets import (
    read_image_bgr,
    read_label,
    reduce_zero_label,
)
from pretrainlab.data.transforms.seg_collate import collate_segmentation
from pretrainlab.data.transforms.seg_pipeline import SegTrainPipeline
from pretrainlab.data.transforms.seg_sample import SegTrainSample
from pretrainlab.engine.malloc import keep_freed_memory
from pretrainlab.eval.metrics import SegmentationMetric

log = logging.getLogger("seg_pipeline_bench")

DEFAULT_MMSEG_PYTHON = Path("/work/mmseg-venv/bin/python")
NUM_CLASSES = 150
IOU_HW = (512, 683)
CROP = (512, 512)
BATCH = 8
TASKS = ("transforms", "batches", "iou")
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tuned_thresholds() -> dict[str, int]:
    """The engine's `keep_freed_memory` defaults, keyed by the glibc variable setting the same value."""
    parameters = inspect.signature(keep_freed_memory).parameters
    return {
        "MALLOC_MMAP_THRESHOLD_": parameters["mmap_threshold"].default,
        "MALLOC_TRIM_THRESHOLD_": parameters["trim_threshold"].default,
    }


def apply_allocator(setting: str) -> dict[str, str]:
    """Apply `setting` in this process; return the environment for the MMSeg subprocess."""
    env = {key: value for key, value in os.environ.items() if key not in ALLOCATOR_ENV}
    inherited = {key: os.environ[key] for key in ALLOCATOR_ENV if key in os.environ}
    if setting == "default":
        if inherited or "GLIBC_TUNABLES" in os.environ:
            log.warning(
                "allocator: glibc variables set in this environment apply to this process: %s",
                inherited or os.environ["GLIBC_TUNABLES"],
            )
        log.info("allocator: glibc defaults on both sides (%s removed for MMSeg)", " / ".join(ALLOCATOR_ENV))
        return env
    thresholds = tuned_thresholds()
    applied = keep_freed_memory(thresholds["MALLOC_MMAP_THRESHOLD_"], thresholds["MALLOC_TRIM_THRESHOLD_"])
    env.update({key: str(value) for key, value in thresholds.items()})
    log.info(
        "allocator: tuned on both sides -- ours: keep_freed_memory() (mallopt %s), MMSeg: %s",
        "applied" if applied else "NOT applied",
        " ".join(f"{key}={value}" for key, value in thresholds.items()),
    )
    return env


MMSEG_DRIVER = textwrap.dedent(
    """
    import json, sys, time, types

    def _placeholder(name):
        if name.startswith("__"):
            raise AttributeError(name)
        def unavailable(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops stand-in: {name} needs compiled mmcv ops")
        return type(name, (), {"__init__": unavailable, "__call__": unavailable})

    ops = types.ModuleType("mmcv.ops")  # mmcv-lite ships no compiled ops; mmseg imports names from here
    ops.__getattr__ = _placeholder
    sys.modules["mmcv.ops"] = ops
    import cv2, numpy as np, torch
    cv2.setNumThreads(1); torch.set_num_threads(1)
    import mmseg
    from mmcv.transforms import LoadImageFromFile, RandomFlip, RandomResize
    from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs, PhotoMetricDistortion, RandomCrop
    from mmseg.evaluation import IoUMetric
    from mmseg.models.data_preprocessor import SegDataPreProcessor

    args = json.loads(sys.argv[1])
    transforms = [
        LoadImageFromFile(),
        LoadAnnotations(reduce_zero_label=True),
        RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
        RandomCrop(crop_size=tuple(args["crop"]), cat_max_ratio=0.75),
        RandomFlip(prob=0.5),
        PhotoMetricDistortion(),
        PackSegInputs(),
    ]
    preprocessor = SegDataPreProcessor(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
        pad_val=0, seg_pad_val=255, size=tuple(args["crop"]),
    )
    np.random.seed(args["seed"])

    def sample(image_path, label_path):
        results = dict(img_path=image_path, seg_map_path=label_path, reduce_zero_label=True, seg_fields=[])
        for transform in transforms:
            results = transform(results)
        return results

    def transforms_pass():
        for image_path, label_path in args["pairs"]:
            sample(image_path, label_path)
        return len(args["pairs"])

    def batches_pass():
        pairs, size = args["pairs"], args["batch"]
        for start in range(0, len(pairs), size):
            packed = [sample(*pair) for pair in pairs[start:start + size]]
            data = dict(inputs=[p["inputs"] for p in packed], data_samples=[p["data_samples"] for p in packed])
            preprocessor(data, training=True)
        return len(pairs)

    rng = np.random.default_rng(args["seed"])
    h, w, c = args["iou_hw"][0], args["iou_hw"][1], args["num_classes"]
    iou_batches = []
    for _ in range(args["iou_images"]):
        pred = torch.from_numpy(rng.integers(0, c, (1, h, w)))
        label = torch.from_numpy(rng.integers(0, c + 1, (1, h, w)))
        label[label == c] = 255
        iou_batches.append([dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=label))])
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=[str(i) for i in range(c)])

    def iou_pass():
        metric.results.clear()
        for batch in iou_batches:
            metric.process([], batch)
        return len(iou_batches)

    def check_pass():
        # Seed numpy's global stream per image and keep the uint8 outputs before PackSegInputs.
        arrays = {}
        for i, (image_path, label_path) in enumerate(args["pairs"]):
            np.random.seed(args["seed"] + i)
            results = dict(img_path=image_path, seg_map_path=label_path, reduce_zero_label=True, seg_fields=[])
            for transform in transforms[:-1]:
                results = transform(results)
            arrays[f"image{i}"], arrays[f"label{i}"] = results["img"], results["gt_seg_map"]
        np.savez(args["check_file"], **arrays)
        return len(args["pairs"])

    work = dict(transforms=transforms_pass, batches=batches_pass, iou=iou_pass, check=check_pass)
    print("@@", json.dumps(dict(version=mmseg.__version__)), flush=True)
    for command in sys.stdin:  # one timed pass per line naming a task
        wall, cpu = time.perf_counter(), time.process_time()
        count = work[command.strip()]()
        timing = dict(count=count, wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
        print("@@", json.dumps(timing), flush=True)
    """
)


class Timings:
    """Best (smallest) wall-clock and CPU seconds per item over repeated passes."""

    def __init__(self) -> None:
        self.wall = float("inf")
        self.cpu = float("inf")

    def add(self, count: int, wall: float, cpu: float) -> None:
        self.wall = min(self.wall, wall / count)
        self.cpu = min(self.cpu, cpu / count)

    def rates(self) -> tuple[float, float]:
        """(items/s by wall clock, items/s by process CPU time)."""
        return 1.0 / self.wall, 1.0 / self.cpu


def timed(timings: Timings, work: Callable[[], int]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    count = work()
    timings.add(count, time.perf_counter() - wall, time.process_time() - cpu)


def write_synthetic_pairs(folder: Path, num_images: int, seed: int) -> list[tuple[Path, Path]]:
    """N smooth-coloured 512 × (512–900) JPEGs and blocky 0..150 label PNGs (ADE20k encoding)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(num_images):
        width = int(rng.integers(512, 901))
        coarse = rng.integers(0, 256, (12, max(1, 12 * width // 512), 3), dtype=np.uint8)
        image = cv2.resize(coarse, (width, 512), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 24, image.shape, dtype=np.uint8))  # texture for JPEG
        blocks = rng.integers(0, 12, (6, max(1, 6 * width // 512)))
        classes = rng.choice(NUM_CLASSES + 1, 12, replace=False)
        label = cv2.resize(classes[blocks].astype(np.uint8), (width, 512), interpolation=cv2.INTER_NEAREST)
        image_path, label_path = folder / f"img_{i:04d}.jpg", folder / f"img_{i:04d}.png"
        cv2.imwrite(str(image_path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        Image.fromarray(label).save(label_path)
        pairs.append((image_path, label_path))
    return pairs


def our_passes(pairs: list[tuple[Path, Path]], num_iou: int, seed: int) -> dict[str, Callable[[], int]]:
    """One callable per task, each running one pass and returning the number of images."""
    pipeline = SegTrainPipeline(crop_size=CROP)
    rng = np.random.default_rng(seed)
    collate = functools.partial(collate_segmentation, size=CROP)

    def sample(image_path: Path, label_path: Path) -> SegTrainSample:
        return pipeline(read_image_bgr(image_path), reduce_zero_label(read_label(label_path)), rng)

    def transforms_pass() -> int:
        for pair in pairs:
            sample(*pair)
        return len(pairs)

    def batches_pass() -> int:
        for start in range(0, len(pairs), BATCH):
            collate([sample(*pair) for pair in pairs[start : start + BATCH]])
        return len(pairs)

    maps = np.random.default_rng(seed)
    iou_pairs = []
    for _ in range(num_iou):
        pred = torch.from_numpy(maps.integers(0, NUM_CLASSES, IOU_HW))
        label = torch.from_numpy(maps.integers(0, NUM_CLASSES + 1, IOU_HW))
        label[label == NUM_CLASSES] = 255
        iou_pairs.append((pred, label))
    metric = SegmentationMetric(NUM_CLASSES, ignore_index=255)

    def iou_pass() -> int:
        metric.reset()
        for pred, label in iou_pairs:
            metric.update(pred, label)
        return num_iou

    return {"transforms": transforms_pass, "batches": batches_pass, "iou": iou_pass}


class MMSegDriver:
    """MMSeg's transforms, preprocessor and IoUMetric in another interpreter, one timed pass per request."""

    def __init__(
        self,
        python: Path,
        pairs: list[tuple[Path, Path]],
        args: argparse.Namespace,
        check_file: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- the driver's stderr for its lifetime, shown if it fails
        payload = {
            "pairs": [(str(a), str(b)) for a, b in pairs],
            "seed": args.seed,
            "crop": list(CROP),
            "batch": BATCH,
            "iou_images": args.iou_images,
            "iou_hw": list(IOU_HW),
            "num_classes": NUM_CLASSES,
            "check_file": str(check_file),
        }
        self.process = subprocess.Popen(
            [str(python), "-c", MMSEG_DRIVER, json.dumps(payload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=env,
        )
        self.version = self._read()["version"]

    def _read(self) -> dict:
        """Next reply line (marked "@@"; anything else mmseg prints is skipped)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        self.process.wait(timeout=60)
        self.errors.seek(0)
        raise RuntimeError(self.errors.read().strip()[-2000:])

    def run(self, timings: Timings, task: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(task + "\n")
        self.process.stdin.flush()
        reply = self._read()
        timings.add(reply["count"], reply["wall"], reply["cpu"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.errors.close()


def start_mmseg(
    python: Path | None,
    pairs: list[tuple[Path, Path]],
    args: argparse.Namespace,
    check_file: Path,
    env: dict[str, str] | None = None,
) -> MMSegDriver | None:
    """Start the MMSeg driver; None (with the reason logged) when it cannot be started or imported."""
    if python is None:
        log.info("no MMSegmentation interpreter (pass --mmseg-python or create %s)", DEFAULT_MMSEG_PYTHON)
        return None
    try:
        return MMSegDriver(python, pairs, args, check_file, env)
    except (OSError, RuntimeError) as error:
        log.warning("MMSegmentation could not be imported or run with %s:\n%s", python, error)
        return None


class LegacyNumpyStream:
    """The `np.random.Generator` calls our transforms make, answered from numpy's legacy
    `RandomState` the way MMSeg draws (`random_sample`, `randint`, `uniform`), so both
    implementations see the same random numbers."""

    def __init__(self, seed: int) -> None:
        self.state = np.random.RandomState(seed)

    def random(self) -> float:
        return float(self.state.random_sample())

    def integers(self, low: int, high: int | None = None) -> int:
        return int(self.state.randint(low, high))

    def uniform(self, low: float, high: float) -> float:
        return float(self.state.uniform(low, high))


def count_identical(pairs: list[tuple[Path, Path]], check_file: Path, seed: int) -> int:
    """Images whose augmented uint8 image and label equal MMSeg's bit for bit, given the same draws."""
    reference = np.load(check_file)
    pipeline = SegTrainPipeline(crop_size=CROP)
    identical = 0
    for i, (image_path, label_path) in enumerate(pairs):
        rng = LegacyNumpyStream(seed + i)  # duck-types the Generator methods the transforms call
        sample = pipeline(read_image_bgr(image_path), reduce_zero_label(read_label(label_path)), rng)  # type: ignore[arg-type]
        identical += np.array_equal(sample.augmented_image(), reference[f"image{i}"]) and np.array_equal(
            sample.label.numpy(), reference[f"label{i}"]
        )
    return identical


def report(title: str, ours: Timings, theirs: Timings | None, version: str) -> None:
    our_wall, our_cpu = ours.rates()
    log.info("%s", title)
    log.info("  %-22s %7.1f img/s wall   %7.1f img/s CPU time", "pretrainlab", our_wall, our_cpu)
    if theirs is None:
        log.info("  %-22s not available", "MMSegmentation")
        return
    their_wall, their_cpu = theirs.rates()
    log.info("  %-22s %7.1f img/s wall   %7.1f img/s CPU time", f"MMSegmentation {version}", their_wall, their_cpu)
    log.info("  %-22s %7.2f×  wall         %7.2f×  CPU time", "ratio", our_wall / their_wall, our_cpu / their_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed passes per side; the best is kept")
    parser.add_argument("--iou-images", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mmseg-python", type=Path, default=None, help=f"default: {DEFAULT_MMSEG_PYTHON} if it exists")
    parser.add_argument(
        "--allocator",
        choices=("tuned", "default"),
        default="tuned",
        help="glibc allocator on both sides: 'tuned' = the training engine's keep_freed_memory thresholds "
        "(mallopt here, MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ for MMSeg); 'default' = glibc's defaults",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mmseg_env = apply_allocator(args.allocator)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    mmseg_python = args.mmseg_python or (DEFAULT_MMSEG_PYTHON if DEFAULT_MMSEG_PYTHON.exists() else None)
    ours = {task: Timings() for task in TASKS}
    theirs: dict[str, Timings] | None = None
    with tempfile.TemporaryDirectory(prefix="seg_bench_") as tmp:
        pairs = write_synthetic_pairs(Path(tmp), args.num_images, args.seed)
        passes = our_passes(pairs, args.iou_images, args.seed)
        check_file = Path(tmp) / "mmseg_outputs.npz"
        mmseg = start_mmseg(mmseg_python, pairs, args, check_file, mmseg_env)
        identical = None
        if mmseg is not None:
            theirs = {task: Timings() for task in TASKS}
            mmseg.run(Timings(), "check")
            identical = count_identical(pairs, check_file, args.seed)
        for round_index in range(args.rounds + 1):  # round 0 is a warm-up
            for task in TASKS:
                timed(ours[task] if round_index else Timings(), passes[task])
                if mmseg is not None and theirs is not None:
                    mmseg.run(theirs[task] if round_index else Timings(), task)
        if mmseg is not None:
            mmseg.close()

    version = mmseg.version if mmseg is not None else ""
    log.info("allocator setting (both sides): %s", args.allocator)
    if identical is not None:
        log.info("same random draws -> %d / %d augmented images and labels bit-identical to MMSeg", identical, len(pairs))
    titles = {
        "transforms": f"file -> augmented uint8 sample (both sides normalise per batch), {len(pairs)} images:",
        "batches": f"file -> normalised padded batch ({BATCH}, 3, {CROP[0]}, {CROP[1]}), {len(pairs)} images:",
        "iou": f"IoU accumulation, {IOU_HW[0]}x{IOU_HW[1]}, {NUM_CLASSES} classes, {args.iou_images} images:",
    }
    for task in TASKS:
        report(titles[task], ours[task], None if theirs is None else theirs[task], version)


if __name__ == "__main__":
    main()
