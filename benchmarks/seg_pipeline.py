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

MMSeg runs in its own venv in a subprocess (`_mmseg.py`: the venv, the stand-in for mmcv-lite's
missing compiled ops, none of which is used here, and the request protocol). Passes alternate
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
        [--allocator tuned|default] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from _mmseg import MMSegProcess, add_mmseg_arguments, apply_allocator, mmseg_python, start_mmseg
from PIL import Image

from _timing import write_results
from pretrainlab.data.formats.segmentation_datasets import (
    read_image_bgr,
    read_label,
    reduce_zero_label,
)
from pretrainlab.data.transforms.seg_collate import collate_segmentation
from pretrainlab.data.transforms.seg_pipeline import SegTrainPipeline
from pretrainlab.data.transforms.seg_sample import SegTrainSample
from pretrainlab.eval.metrics import SegmentationMetric

log = logging.getLogger("seg_pipeline_bench")

NUM_CLASSES = 150
IOU_HW = (512, 683)
CROP = (512, 512)
BATCH = 8
TASKS = ("transforms", "batches", "iou")


MMSEG_SCRIPT = """
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
    serve(work, dict(version=mmseg.__version__))  # one timed pass per line naming a task
"""


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


def mmseg_payload(pairs: list[tuple[Path, Path]], args: argparse.Namespace, check_file: Path) -> dict:
    """What `MMSEG_SCRIPT` reads: the image / label files and the settings of every task."""
    return {
        "pairs": [(str(a), str(b)) for a, b in pairs],
        "seed": args.seed,
        "crop": list(CROP),
        "batch": BATCH,
        "iou_images": args.iou_images,
        "iou_hw": list(IOU_HW),
        "num_classes": NUM_CLASSES,
        "check_file": str(check_file),
    }


def run_mmseg(mmseg: MMSegProcess, timings: Timings, task: str) -> None:
    """One MMSeg pass of `task`, timed inside its process."""
    reply = mmseg.run(task)
    timings.add(reply.result, reply.wall, reply.cpu)  # the result is the number of images


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
    add_mmseg_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mmseg_env = apply_allocator(args.allocator)
    load_before = os.getloadavg()[0]
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    python = mmseg_python(args.mmseg_python)
    ours = {task: Timings() for task in TASKS}
    theirs: dict[str, Timings] | None = None
    with tempfile.TemporaryDirectory(prefix="seg_bench_") as tmp:
        pairs = write_synthetic_pairs(Path(tmp), args.num_images, args.seed)
        passes = our_passes(pairs, args.iou_images, args.seed)
        check_file = Path(tmp) / "mmseg_outputs.npz"
        mmseg = start_mmseg(python, MMSEG_SCRIPT, mmseg_payload(pairs, args, check_file), mmseg_env)
        identical = None
        if mmseg is not None:
            theirs = {task: Timings() for task in TASKS}
            mmseg.run("check")
            identical = count_identical(pairs, check_file, args.seed)
        for round_index in range(args.rounds + 1):  # round 0 is a warm-up
            for task in TASKS:
                timed(ours[task] if round_index else Timings(), passes[task])
                if mmseg is not None and theirs is not None:
                    run_mmseg(mmseg, theirs[task] if round_index else Timings(), task)
        if mmseg is not None:
            mmseg.close()

    version = mmseg.info["version"] if mmseg is not None else ""
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
    if args.json is not None:
        payload = {
            "benchmark": "seg_pipeline",
            "setup": {"num_images": args.num_images, "rounds": args.rounds, "iou_images": args.iou_images,
                      "seed": args.seed, "allocator": args.allocator, "threads": 1, "titles": titles},
            "versions": {"torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
                         "mmseg": version or None},
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "identical_images": identical,
            "results": {task: rates_payload(ours[task], None if theirs is None else theirs[task]) for task in TASKS},
        }  # fmt: skip
        write_results(args.json, payload)


def rates_payload(ours: Timings, theirs: Timings | None) -> dict[str, object]:
    """Best-pass images per second of both sides (None for MMSeg when it did not run) and ours / MMSeg."""
    our_wall, our_cpu = ours.rates()
    result: dict[str, object] = {"ours": {"img_per_s": our_wall, "cpu_img_per_s": our_cpu}, "mmseg": None}
    if theirs is not None:
        their_wall, their_cpu = theirs.rates()
        result["mmseg"] = {"img_per_s": their_wall, "cpu_img_per_s": their_cpu}
        result |= {"ratio_ours_over_mmseg": our_wall / their_wall, "cpu_ratio_ours_over_mmseg": our_cpu / their_cpu}
    return result


if __name__ == "__main__":
    main()
