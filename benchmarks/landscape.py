"""2-D loss landscape of the quickstart model, pretrainlab vs a reference in the spirit of loss-landscape.

The task (issue 13, "landscape"): the 21 x 21 landscape (Li et al. 2018, arXiv:1712.09913) of a run's
backbone + linear probe on 2 000 val images, along two random filter-normalised directions of the
backbone. Goal: <= 5 minutes on 2 cores (a naive version took 2 h 30 min for 15 x 15).

* ours: `pretrainlab.analysis.landscape.landscape_for_run`, end to end and from scratch (its grid
  file `<run>/analysis/landscape/benchmark.npz` is deleted first): load the backbone, fit the probe,
  decode + transform the images once, the grid (bf16 autocast by default, channels-last, `_foreach`
  weight updates, `--workers` processes), the plots and `<run>/analysis/landscape.md`.
* reference: written as github.com/tomgoldstein/loss-landscape's `plot_surface.crunch` and
  `evaluation.eval_loss` do it (its `net_plotter.set_weights`, no deepcopy per point):
  per grid point, a Python loop sets `p.data = w + (x d1 + y d2)` for every backbone parameter, then
  a DataLoader (batch 128, the original's default; no worker processes) transforms each image again
  (`EvalView`: resize check, crop, normalise) and collates the batches; fp32, no autocast, one
  process with torch's default threads. Same model, probe, images and directions as ours. Timed on
  `--reference-points` grid points spread over the grid and extrapolated to all of them (+ the same
  set-up as ours: model, probe, images).

Both sides' losses at the reference points are printed side by side (ours in the precision `auto`
chose: bf16 differs from fp32 by the autocast rounding). Both sides run with glibc's freed memory kept
(`keep_freed_memory`, as the CLI). Run it alone on the machine: both sides use every core.

    python benchmarks/landscape.py [RUN_DIR] [--workers 2] [--precision auto] [--reference-points 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from _timing import write_results
from pretrainlab.analysis.landscape import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRECISION,
    DEFAULT_WORKERS,
    PRECISION_CHOICES,
    LandscapeOptions,
    evenly_spaced,
    landscape_for_run,
)
from pretrainlab.analysis.landscape_directions import random_directions
from pretrainlab.analysis.probed_model import probed_model
from pretrainlab.engine.malloc import keep_freed_memory

log = logging.getLogger("landscape_bench")

GOAL_SECONDS = 5 * 60
NAME = "benchmark"
REFERENCE_BATCH = 128  # loss-landscape's default --batch_size


class ReferenceLandscape:
    """Per point: weights set in a Python loop, a DataLoader with per-sample transforms, fp32 (docstring)."""

    def __init__(self, classifier: nn.Module, dataset: torch.utils.data.Dataset, indices: list[int],
                 directions: list[list[Tensor]]) -> None:  # fmt: skip
        self.net = copy.deepcopy(classifier)
        self.params = list(self.net.backbone.parameters())
        self.weights = [p.data.clone() for p in self.params]
        self.directions = directions
        self.loader = DataLoader(Subset(dataset, indices), batch_size=REFERENCE_BATCH, shuffle=False, num_workers=0)

    def loss_at(self, x: float, y: float) -> float:
        for p, w, d1, d2 in zip(self.params, self.weights, *self.directions):
            p.data = w + (d1 * x + d2 * y)
        self.net.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for images, labels in self.loader:
                loss = F.cross_entropy(self.net(images), labels)
                total += loss.item() * len(images)
                count += len(images)
        return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", default=Path("runs/quickstart"), help="run directory")
    parser.add_argument("--steps", type=int, default=21, help="grid points per direction")
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=DEFAULT_PRECISION)
    parser.add_argument("--reference-points", type=int, default=3, help="grid points the reference is timed on")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_freed_memory()  # as the `pretrainlab` CLI does; both sides run in this process
    load_before = os.getloadavg()[0]
    options = LandscapeOptions(dims=2, steps=args.steps, num_images=args.num_images, precision=args.precision)
    grid_file = args.run / "analysis" / "landscape" / f"{NAME}.npz"
    grid_file.unlink(missing_ok=True)

    log.info("ours: %d x %d grid, %d images, %s, %d workers, end to end", args.steps, args.steps, args.num_images,
             args.precision, args.workers)  # fmt: skip
    started = time.perf_counter()
    ours = landscape_for_run(args.run, options, name=NAME, workers=args.workers, batch_size=args.batch_size,
                             show_progress=True)  # fmt: skip
    ours_seconds = time.perf_counter() - started
    num_points = ours.losses.size

    log.info("reference: %d points of the same grid", args.reference_points)
    started = time.perf_counter()
    probed = probed_model(args.run, options.weights)
    dataset = probed.val_loader.dataset
    indices = evenly_spaced(len(dataset), args.num_images)
    directions = random_directions(list(probed.classifier.backbone.parameters()), 2, options.seed)
    reference = ReferenceLandscape(probed.classifier, dataset, indices, directions)
    setup_seconds = time.perf_counter() - started
    flat = np.linspace(0, num_points - 1, args.reference_points).round().astype(int)
    point_seconds, rows = [], []
    for index in flat:
        i, j = np.unravel_index(index, ours.losses.shape)
        started = time.perf_counter()
        loss = reference.loss_at(float(ours.x[i]), float(ours.y[j]))
        point_seconds.append(time.perf_counter() - started)
        rows.append((float(ours.x[i]), float(ours.y[j]), float(ours.losses[i, j]), loss, point_seconds[-1]))
    reference_seconds = setup_seconds + float(np.mean(point_seconds)) * num_points
    load = {"before": load_before, "after": os.getloadavg()[0]}
    report(ours_seconds, ours.seconds, reference_seconds, setup_seconds, rows, num_points, ours.precision, load)
    if args.json is not None:
        payload = {
            "benchmark": "landscape",
            "setup": {"run": str(args.run), "steps": args.steps, "num_images": args.num_images, "workers": args.workers,
                      "batch_size": args.batch_size, "precision": ours.precision,
                      "reference_points": args.reference_points},
            "load_average_1min": load,
            "results": {"ours_s": ours_seconds, "ours_grid_s": ours.seconds, "reference_s": reference_seconds,
                        "reference_setup_s": setup_seconds,
                        "ratio_reference_over_ours": reference_seconds / ours_seconds, "goal_s": GOAL_SECONDS,
                        "points": [dict(zip(("x", "y", "ours", "reference", "reference_s"), row)) for row in rows]},
        }  # fmt: skip
        write_results(args.json, payload)


def report(ours_seconds: float, ours_grid_seconds: float, reference_seconds: float, setup_seconds: float,
           rows: list[tuple[float, float, float, float, float]], num_points: int, precision: str,
           load: dict[str, float]) -> None:  # fmt: skip
    log.info("")
    log.info("%8s %8s %12s %12s %10s %9s", "x", "y", f"ours {precision}", "ref fp32", "rel diff", "ref s")
    for x, y, ours_loss, reference_loss, seconds in rows:
        log.info("%8.2f %8.2f %12.5f %12.5f %10.2e %9.2f", x, y, ours_loss, reference_loss,
                 abs(ours_loss - reference_loss) / reference_loss, seconds)  # fmt: skip
    log.info("")
    log.info("ours, end to end:        %8.1f s (grid %.1f s, %.3f s per point)", ours_seconds, ours_grid_seconds,
             ours_grid_seconds / num_points)  # fmt: skip
    log.info("reference, extrapolated: %8.1f s (set-up %.1f s + %d points x %.2f s)", reference_seconds, setup_seconds,
             num_points, (reference_seconds - setup_seconds) / num_points)  # fmt: skip
    log.info("reference / ours:        %8.1fx", reference_seconds / ours_seconds)
    verdict = "met" if ours_seconds <= GOAL_SECONDS else "NOT met"
    log.info("goal <= %d s end to end: %s (%.1f s)", GOAL_SECONDS, verdict, ours_seconds)
    log.info("1-min load average: %.1f before, %.1f after (other jobs on the machine slow both sides)",
             load["before"], load["after"])  # fmt: skip


if __name__ == "__main__":
    main()
