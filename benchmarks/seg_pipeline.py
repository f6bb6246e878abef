"""Throughput of the segmentation train pipeline and IoU accumulation vs MMSegmentation 1.2.2.

Generates N synthetic 512 × (512–900) JPEG images with PNG label maps (ADE20k encoding,
0 = other, 1..150 classes) in a temporary folder, then times on one process:

* ours: `read_image_bgr` + `read_label` + `reduce_zero_label` + `SegTrainPipeline`
  (resize → cat-max crop 512 → flip → photometric → normalise to a float tensor);
* MMSeg 1.2.2 (when its interpreter is available): LoadImageFromFile → LoadAnnotations
  (reduce_zero_label) → RandomResize → RandomCrop(cat_max_ratio=0.75) → RandomFlip →
  PhotoMetricDistortion → PackSegInputs, on the same files, in a subprocess that prints JSON;
* IoU accumulation at 512 × 683 with 150 classes: `SegmentationMetric.update` vs
  `IoUMetric.process`.

MMSeg lives in a separate venv (see FACTS.md), e.g. /work/mmseg-venv; `mmcv.ops` is replaced
by a stand-in module because mmcv-lite has no compiled ops. Our side includes the
normalisation to float32, which MMSeg defers to its data preprocessor, so the ratio is
conservative. Both sides use one OpenCV and one torch thread; passes alternate between the
two sides and each side's best pass is reported, by wall clock and by process CPU time
(the latter is less disturbed by other jobs on a shared machine).

    PYTHONPATH=src python benchmarks/seg_pipeline.py [--num-images 64] [--mmseg-python PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
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

from pretrainlab.data.formats.segmentation_datasets import read_image_bgr, read_label, reduce_zero_label
from pretrainlab.data.transforms.seg_pipeline import SegTrainPipeline
from pretrainlab.eval.metrics import SegmentationMetric

log = logging.getLogger("seg_pipeline_bench")

DEFAULT_MMSEG_PYTHON = Path("/work/mmseg-venv/bin/python")
NUM_CLASSES = 150
IOU_HW = (512, 683)

MMSEG_DRIVER = textwrap.dedent(
    """
    import json, sys, time, types
    ops = types.ModuleType("mmcv.ops")  # mmcv-lite ships no compiled ops; mmseg imports this name
    def point_sample(*args, **kwargs):
        raise RuntimeError("mmcv.ops stand-in: point_sample is not available")
    ops.point_sample = point_sample
    sys.modules["mmcv.ops"] = ops
    import cv2, numpy as np, torch
    cv2.setNumThreads(1); torch.set_num_threads(1)
    import mmseg
    from mmcv.transforms import LoadImageFromFile, RandomFlip, RandomResize
    from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs, PhotoMetricDistortion, RandomCrop
    from mmseg.evaluation import IoUMetric

    args = json.loads(sys.argv[1])
    transforms = [
        LoadImageFromFile(),
        LoadAnnotations(reduce_zero_label=True),
        RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
        RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75),
        RandomFlip(prob=0.5),
        PhotoMetricDistortion(),
        PackSegInputs(),
    ]
    np.random.seed(args["seed"])

    def pipeline_pass():
        for image_path, label_path in args["pairs"]:
            results = dict(img_path=image_path, seg_map_path=label_path, reduce_zero_label=True, seg_fields=[])
            for transform in transforms:
                results = transform(results)
        return len(args["pairs"])

    rng = np.random.default_rng(args["seed"])
    h, w, c = args["iou_hw"][0], args["iou_hw"][1], args["num_classes"]
    batches = []
    for _ in range(args["iou_images"]):
        pred = torch.from_numpy(rng.integers(0, c, (1, h, w)))
        label = torch.from_numpy(rng.integers(0, c + 1, (1, h, w)))
        label[label == c] = 255
        batches.append([dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=label))])
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=[str(i) for i in range(c)])

    def iou_pass():
        metric.results.clear()
        for batch in batches:
            metric.process([], batch)
        return len(batches)

    print("@@", json.dumps(dict(version=mmseg.__version__)), flush=True)
    for command in sys.stdin:  # one timed pass per command line: "pipeline" or "iou"
        work = pipeline_pass if command.strip() == "pipeline" else iou_pass
        wall, cpu = time.perf_counter(), time.process_time()
        count = work()
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


def our_pipeline_pass(pairs: list[tuple[Path, Path]], seed: int) -> Callable[[], int]:
    """A callable running load + SegTrainPipeline over `pairs` once; returns the image count."""
    pipeline = SegTrainPipeline()
    rng = np.random.default_rng(seed)

    def one_pass() -> int:
        for image_path, label_path in pairs:
            pipeline(read_image_bgr(image_path), reduce_zero_label(read_label(label_path)), rng)
        return len(pairs)

    return one_pass


def our_iou_pass(num_images: int, size: tuple[int, int], seed: int) -> Callable[[], int]:
    """A callable feeding random (H, W) int64 pred/label maps (150 classes) to `SegmentationMetric.update`."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num_images):
        pred = torch.from_numpy(rng.integers(0, NUM_CLASSES, size))
        label = torch.from_numpy(rng.integers(0, NUM_CLASSES + 1, size))
        label[label == NUM_CLASSES] = 255
        pairs.append((pred, label))
    metric = SegmentationMetric(NUM_CLASSES, ignore_index=255)

    def one_pass() -> int:
        metric.reset()
        for pred, label in pairs:
            metric.update(pred, label)
        return num_images

    return one_pass


class MMSegDriver:
    """MMSeg's transforms and IoUMetric in a subprocess of another interpreter, one timed pass per request."""

    def __init__(self, python: Path, pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")  # the driver's stderr, shown if it fails
        payload = dict(
            pairs=[(str(a), str(b)) for a, b in pairs],
            seed=args.seed,
            iou_images=args.iou_images,
            iou_hw=list(IOU_HW),
            num_classes=NUM_CLASSES,
        )
        self.process = subprocess.Popen(
            [str(python), "-c", MMSEG_DRIVER, json.dumps(payload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
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

    def run(self, timings: Timings, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = self._read()
        timings.add(reply["count"], reply["wall"], reply["cpu"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.errors.close()


def start_mmseg(python: Path | None, pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> MMSegDriver | None:
    """Start the MMSeg driver; None (with the reason logged) when it cannot be started or imported."""
    if python is None:
        log.info("no MMSegmentation interpreter (pass --mmseg-python or create %s)", DEFAULT_MMSEG_PYTHON)
        return None
    try:
        return MMSegDriver(python, pairs, args)
    except (OSError, RuntimeError) as error:
        log.warning("MMSegmentation could not be imported or run with %s:\n%s", python, error)
        return None


def report(name: str, ours: Timings, theirs: Timings | None, version: str) -> None:
    our_wall, our_cpu = ours.rates()
    log.info("%s", name)
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    mmseg_python = args.mmseg_python or (DEFAULT_MMSEG_PYTHON if DEFAULT_MMSEG_PYTHON.exists() else None)
    with tempfile.TemporaryDirectory(prefix="seg_bench_") as tmp:
        pairs = write_synthetic_pairs(Path(tmp), args.num_images, args.seed)
        mmseg = start_mmseg(mmseg_python, pairs, args)
        ours_pipeline, ours_iou = Timings(), Timings()
        theirs_pipeline, theirs_iou = (Timings(), Timings()) if mmseg is not None else (None, None)
        pipeline_pass = our_pipeline_pass(pairs, args.seed)
        iou_pass = our_iou_pass(args.iou_images, IOU_HW, args.seed)
        # Alternate the two sides pass by pass (after one warm-up pass each) so that load from
        # other processes on the machine hits both alike; keep each side's best pass.
        for round_index in range(args.rounds + 1):
            record = round_index > 0
            timed(ours_pipeline if record else Timings(), pipeline_pass)
            timed(ours_iou if record else Timings(), iou_pass)
            if mmseg is not None and theirs_pipeline is not None and theirs_iou is not None:
                mmseg.run(theirs_pipeline if record else Timings(), "pipeline")
                mmseg.run(theirs_iou if record else Timings(), "iou")
        if mmseg is not None:
            mmseg.close()

    version = mmseg.version if mmseg is not None else ""
    report(f"train pipeline (load, resize, crop, flip, photometric), {len(pairs)} images, 1 process:",
           ours_pipeline, theirs_pipeline, version)  # fmt: skip
    report(f"IoU accumulation, {IOU_HW[0]}x{IOU_HW[1]}, {NUM_CLASSES} classes, {args.iou_images} images:",
           ours_iou, theirs_iou, version)  # fmt: skip


if __name__ == "__main__":
    main()
