"""Segmentation IoU accumulation, pretrainlab vs MMSegmentation 1.2.2 `IoUMetric` (issue 14: >= 5x).

The work timed is the per-image part of an evaluation: accumulating intersection / union /
predicted / label areas of N prediction and label maps of 512 x 683 pixels, 150 classes, label
255 ignored. One pass = every map once:

* ours: `SegmentationMetric.update(pred, label)` per map after a `reset()` (one `bincount` over
  label * C + pred into a running confusion matrix, `eval/metrics.py`);
* MMSeg: `IoUMetric.process([], [sample])` per map after clearing its results (its
  `intersect_and_union`: masked selects and three `histc`), in its own venv (`_mmseg.py`).

Both sides get the same maps as int64 tensors, the dtypes MMSeg's own pipeline hands its metric
(`PackSegInputs` labels and `argmax` predictions); ours is also timed on uint8 copies of them
(`pretrainlab uint8`), which is what a caller can pass when the classes fit in a byte. Two kinds of
maps: `random` (every pixel drawn independently, as `seg_pipeline.py`'s `iou` task) and
`segments` (blocky label maps with about one block in twelve ignored, predictions that disagree
near block borders and in 5 % of the pixels). One torch thread on both sides; passes alternate
between the contenders (`_timing.time_interleaved`), MMSeg's are timed inside its process. Both
sides run with the engine's allocator setting (`--allocator tuned`, as in `seg_pipeline.py`: the
pretrainlab CLI keeps freed memory in every verb; MMSeg gets the same through glibc's variables)
or with glibc's defaults (`--allocator default`).

Checked once per kind, after the timing: the accumulated areas are equal; the per-class IoU and
Acc are equal as float32 (MMSeg divides float32 areas; ours divides int64 areas in float64 and is
cast: both are the correctly rounded quotient while every area is below 2^24, which the default
sizes keep); aAcc, mIoU and mAcc as MMSeg reports them (rounded to 2 decimals of a percentage)
are equal to `SegmentationMetric.summary()`'s. A difference raises.

    PYTHONPATH=src python benchmarks/iou.py [--images 30] [--repeats 7] [--mmseg-python PATH]
        [--allocator tuned|default] [--json PATH]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from _mmseg import MMSegProcess, add_mmseg_arguments, apply_allocator, mmseg_python, start_mmseg
from _timing import Measured, Timings, time_interleaved, write_results

from pretrainlab.eval.metrics import SegmentationMetric

log = logging.getLogger("iou_bench")

NUM_CLASSES = 150
IGNORE_INDEX = 255
HW = (512, 683)
KINDS = ("random", "segments")
GOAL = 5.0

MMSEG_SCRIPT = """
    import numpy as np, torch
    torch.set_num_threads(1)
    import mmseg
    from mmseg.evaluation import IoUMetric

    args = json.loads(sys.argv[1])
    maps = np.load(args["maps"])
    metric = IoUMetric(ignore_index=args["ignore_index"], iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=[str(i) for i in range(args["num_classes"])])

    def samples(kind):
        preds, labels = maps[f"{kind}/pred"], maps[f"{kind}/label"]
        return [
            [dict(pred_sem_seg=dict(data=torch.from_numpy(p)[None]), gt_sem_seg=dict(data=torch.from_numpy(t)[None]))]
            for p, t in zip(preds, labels)
        ]

    batches = {kind: samples(kind) for kind in args["kinds"]}

    def accumulate(kind):
        metric.results.clear()
        for batch in batches[kind]:
            metric.process([], batch)
        return len(batches[kind])

    def numbers(kind):
        accumulate(kind)
        areas = [sum(column) for column in zip(*metric.results)]  # float32 (C,) each, as compute_metrics sums them
        ratios = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU"])
        summary = metric.compute_metrics(metric.results)
        return dict(
            areas=[area.tolist() for area in areas],
            IoU=ratios["IoU"].tolist(),
            Acc=ratios["Acc"].tolist(),
            summary={key: float(value) for key, value in summary.items()},
        )

    work = {f"time {kind}": (lambda kind=kind: accumulate(kind)) for kind in args["kinds"]}
    work |= {f"numbers {kind}": (lambda kind=kind: numbers(kind)) for kind in args["kinds"]}
    serve(work, dict(version=mmseg.__version__))
"""

AREA_KEYS = ("area_intersect", "area_union", "area_pred_label", "area_label")  # MMSeg's order of the four areas


def make_maps(kind: str, num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) int64 predictions in [0, C) and labels in [0, C) or `IGNORE_INDEX`."""
    rng = np.random.default_rng(seed)
    height, width = HW
    if kind == "random":
        preds = rng.integers(0, NUM_CLASSES, (num_images, height, width))
        labels = rng.integers(0, NUM_CLASSES + 1, (num_images, height, width))
        labels[labels == NUM_CLASSES] = IGNORE_INDEX
        return preds, labels
    preds, labels = [], []
    for _ in range(num_images):
        classes = rng.choice(NUM_CLASSES, 12, replace=False)
        blocks = rng.integers(0, 12, (6, 8))
        label = np.append(classes[:11], IGNORE_INDEX)[blocks]  # about 1 block in 12 ignored
        label = cv2.resize(label.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)
        # the same blocks drawn 5 % larger: borders shifted, ignored blocks predicted as some class
        pred = cv2.resize(classes[blocks].astype(np.int32), (width * 21 // 20, height * 21 // 20),
                          interpolation=cv2.INTER_NEAREST)[:height, :width]  # fmt: skip
        pred = np.where(rng.random(HW) < 0.05, rng.integers(0, NUM_CLASSES, HW), pred)  # 5 % pixel noise
        preds.append(pred)
        labels.append(label)
    return np.stack(preds).astype(np.int64), np.stack(labels).astype(np.int64)


def our_pass(metric: SegmentationMetric, preds: torch.Tensor, labels: torch.Tensor) -> Callable[[], int]:
    """One pass of `update` over every map (after a reset)."""

    def accumulate() -> int:
        metric.reset()
        for pred, label in zip(preds, labels):
            metric.update(pred, label)
        return len(preds)

    return accumulate


def mmseg_pass(mmseg: MMSegProcess, kind: str) -> Callable[[], Measured]:
    """One pass of `IoUMetric.process` over every map in the MMSeg process, timed there."""

    def accumulate() -> Measured:
        reply = mmseg.run(f"time {kind}")
        return Measured(reply.wall, reply.cpu)

    return accumulate


def compare(ours: SegmentationMetric, theirs: dict) -> dict[str, object]:
    """Exact comparison of our accumulated numbers with MMSeg's; raises on any difference."""
    computed, summary = ours.compute(sync=False), ours.summary(sync=False)
    checks: dict[str, object] = {}
    for key, area in zip(AREA_KEYS, theirs["areas"]):
        checks[key] = bool(np.array_equal(computed[key], np.array(area, dtype=np.float64)))
    for key in ("IoU", "Acc"):
        mine, reference = computed[key].astype(np.float32), np.array(theirs[key], dtype=np.float32)
        checks[key] = bool(np.array_equal(mine, reference, equal_nan=True))
    for key in ("aAcc", "mIoU", "mAcc"):
        mine, reference = summary[key], round(theirs["summary"][key], 2)
        checks[f"summary {key}"] = mine == reference or (math.isnan(mine) and math.isnan(reference))
    if not all(checks.values()):
        raise RuntimeError(f"pretrainlab and MMSeg accumulate different numbers: {checks}")
    checks["summary"] = {key: summary[key] for key in ("aAcc", "mIoU", "mAcc")}
    return checks


def measure(kind: str, args: argparse.Namespace, mmseg: MMSegProcess | None) -> dict[str, object]:
    """Timings of every contender on maps of `kind`, per image, and the comparison with MMSeg."""
    preds, labels = (torch.from_numpy(array) for array in make_maps(kind, args.images, args.seed))
    metric = SegmentationMetric(NUM_CLASSES, IGNORE_INDEX)
    ours = {
        "pretrainlab int64": our_pass(metric, preds, labels),
        "pretrainlab uint8": our_pass(metric, preds.to(torch.uint8), labels.to(torch.uint8)),
    }
    contenders: dict[str, Callable[[], object]] = dict(ours)
    if mmseg is not None:
        contenders["MMSeg"] = mmseg_pass(mmseg, kind)
    timings = time_interleaved(contenders, warmup=1, repeats=args.repeats)
    result: dict[str, object] = {"timings": {name: per_image(t, args.images) for name, t in timings.items()}}
    if mmseg is not None:
        theirs = mmseg.run(f"numbers {kind}").result
        for name, accumulate in ours.items():
            result[f"ratio MMSeg / {name}"] = timings["MMSeg"].median_wall / timings[name].median_wall
            result[f"cpu ratio MMSeg / {name}"] = timings["MMSeg"].median_cpu / timings[name].median_cpu
            accumulate()
            result[f"identical {name}"] = compare(metric, theirs)
    return result


def per_image(timings: Timings, num_images: int) -> dict[str, object]:
    return {
        "ms_per_image": 1e3 * timings.median_wall / num_images,
        "cpu_ms_per_image": 1e3 * timings.median_cpu / num_images,
        "best_ms_per_image": 1e3 * timings.best_wall / num_images,
        "wall_passes": timings.wall,
        "cpu_passes": timings.cpu,
    }


def report(results: dict[str, dict]) -> None:
    log.info("")
    log.info("%-9s %-18s %10s %10s %10s %9s", "maps", "", "ms/image", "CPU ms", "best ms", "img/s")
    for kind, result in results.items():
        for name, row in result["timings"].items():
            log.info(
                "%-9s %-18s %10.3f %10.3f %10.3f %9.0f",
                kind, name, row["ms_per_image"], row["cpu_ms_per_image"], row["best_ms_per_image"],
                1e3 / row["ms_per_image"],
            )  # fmt: skip
        for name in ("pretrainlab int64", "pretrainlab uint8"):
            if f"ratio MMSeg / {name}" in result:
                log.info(
                    "%-9s MMSeg / %-10s %9.2fx %9.2fx  (goal >= %.0fx); identical areas, IoU, Acc and summary %s",
                    kind, name.split()[1], result[f"ratio MMSeg / {name}"], result[f"cpu ratio MMSeg / {name}"], GOAL,
                    result[f"identical {name}"]["summary"],
                )  # fmt: skip
    log.info("ms/image and CPU ms: medians of the passes; best ms: fastest pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30, help="maps per pass")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per contender (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    add_mmseg_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mmseg_env = apply_allocator(args.allocator)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="iou_bench_") as tmp:
        maps_file = Path(tmp) / "maps.npz"
        arrays = {}
        for kind in KINDS:
            arrays[f"{kind}/pred"], arrays[f"{kind}/label"] = make_maps(kind, args.images, args.seed)
        np.savez(maps_file, **arrays)
        settings = {"maps": str(maps_file), "kinds": list(KINDS), "num_classes": NUM_CLASSES, "ignore_index": IGNORE_INDEX}
        mmseg = start_mmseg(mmseg_python(args.mmseg_python), MMSEG_SCRIPT, settings, mmseg_env)
        results = {kind: measure(kind, args, mmseg) for kind in KINDS}
        if mmseg is not None:
            mmseg.close()
    load = {"before": load_before, "after": os.getloadavg()[0]}
    report(results)
    log.info("1-min load average: %.1f before, %.1f after", load["before"], load["after"])
    if args.json is not None:
        payload = {
            "benchmark": "iou",
            "setup": {"images": args.images, "hw": list(HW), "num_classes": NUM_CLASSES, "ignore_index": IGNORE_INDEX,
                      "repeats": args.repeats, "threads": 1, "seed": args.seed, "allocator": args.allocator},
            "versions": {"torch": torch.__version__, "python": platform.python_version(),
                         "mmseg": mmseg.info["version"] if mmseg is not None else None},
            "load_average_1min": load,
            "results": results,
        }  # fmt: skip
        write_results(args.json, payload)


if __name__ == "__main__":
    main()
