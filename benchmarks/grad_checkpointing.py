"""Peak memory of one DINO training step (forward + backward) with and without `backbone.grad_checkpointing`.

The model and crops are `dino_step.py`'s (its constants and crops are imported from it): ViT-S/16
(timm, `dynamic_img_size`) student and EMA teacher, batch 8, 2 global crops of 224 px + 6 local
crops of 96 px, head 384-2048-2048-256 -> weight-normalised 65536, DINO loss (without its KoLeo
term); `DINO.training_step` then `backward()`. The optimizer step is left out: its state does not
depend on checkpointing.
Both settings start from the same weights and images, and the parent checks that they compute
the same loss and gradient norm.

How memory is measured: each (precision, setting) runs in a fresh Python process that builds
the model, reads its resident set size (`/proc/self/statm`), takes one step and reads the
process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`). The step's
peak is that high-water mark minus the resident size at the start of the step: every byte the
step made resident at its worst moment (activations kept for backward, gradients, the autograd
graph, allocator and thread-pool overhead), as the operating system counts it when it runs out
of memory. A fresh process per setting keeps the heap one setting freed (and glibc kept) from
hiding or inflating the other's; the step must raise the process's high-water mark (checked),
so the setup's own transient peak cannot mask it. Torch has no peak counter for CPU tensors
(`max_memory_allocated` is CUDA-only), and the profiler's memory timeline would add its own
bookkeeping to the process being measured. Other jobs on the machine change the timing, not
these numbers.

    python benchmarks/grad_checkpointing.py [--threads 2] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from dino_step import (
    ARCH,
    BATCH,
    BOTTLENECK_DIM,
    GLOBAL_SIZE,
    HIDDEN_DIM,
    LOCAL_SIZE,
    NUM_GLOBAL,
    NUM_LOCAL,
    OUT_DIM,
    PRECISIONS,
    TEACHER_TEMP,
    make_views,
    precision_context,
)

from _timing import write_results
from pretrainlab.engine.schedules import StepValues
from pretrainlab.methods.dino import DINO
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads.dino import DINOHead

log = logging.getLogger("grad_checkpointing_bench")

SETTINGS = {"plain": False, "checkpointed": True}
MIB = 2**20


def resident_bytes() -> int:
    """The process's current resident set size (Linux `/proc/self/statm`, in pages)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The process's peak resident set size so far (`ru_maxrss` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_step(use_grad_checkpointing: bool, precision: str, seed: int) -> dict[str, float]:
    """Build the DINO model, take one forward + backward, return the step's peak memory above its start."""
    torch.manual_seed(seed)
    backbone = TimmBackbone(ARCH, img_size=GLOBAL_SIZE, grad_checkpointing=use_grad_checkpointing)
    head = DINOHead(backbone.embed_dim, OUT_DIM, hidden_dim=HIDDEN_DIM, bottleneck_dim=BOTTLENECK_DIM)
    method = DINO(backbone, head, num_global=NUM_GLOBAL).train()
    views = make_views(seed)  # [(B, 3, 224, 224)] * 2 + [(B, 3, 96, 96)] * 6
    step = StepValues(iteration=0, epoch=1, lr=0.0, weight_decay=0.0, values={"teacher_temp": TEACHER_TEMP})
    start, peak_before = resident_bytes(), peak_resident_bytes()
    with precision_context(precision):
        outputs = method.training_step((views, torch.zeros(BATCH)), step)
    loss = sum(value for key, value in outputs.items() if key.startswith("loss"))
    loss.backward()
    peak = peak_resident_bytes()
    if peak <= peak_before:
        raise RuntimeError(f"the step did not raise the process's peak ({peak_before / MIB:.0f} MiB, set while "
                           "building the model): its own peak is hidden")  # fmt: skip
    grads = [param.grad for param in method.student.parameters() if param.grad is not None]
    return {
        "step_peak_mib": (peak - start) / MIB,
        "process_peak_mib": peak / MIB,
        "start_mib": start / MIB,
        "loss": loss.item(),
        "grad_norm": torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])).item(),
    }


def run_in_fresh_process(setting: str, precision: str, args: argparse.Namespace) -> dict[str, float]:
    """`measure_step` for one setting in a new Python process, which writes its result to a JSON file."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--measure", setting, "--precision", precision, "--result", str(result),
                   "--threads", str(args.threads), "--seed", str(args.seed)]  # fmt: skip
        log.info("%s, %s: one step in a fresh process", precision, setting)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{precision} {setting} failed:\n{done.stderr}")
        return json.loads(result.read_text())


def compare(precision: str, args: argparse.Namespace) -> dict[str, object]:
    """Both settings at one precision, checked to compute the same step, with the saving."""
    runs = {setting: run_in_fresh_process(setting, precision, args) for setting in SETTINGS}
    plain, checkpointed = runs["plain"], runs["checkpointed"]
    for key in ("loss", "grad_norm"):
        if not math.isclose(plain[key], checkpointed[key], rel_tol=1e-5):
            raise RuntimeError(f"{precision}: the two steps differ in {key} ({plain[key]} vs {checkpointed[key]})")
    saving = plain["step_peak_mib"] - checkpointed["step_peak_mib"]
    return {**runs, "saving_mib": saving, "saving_fraction": saving / plain["step_peak_mib"]}


def report(results: dict[str, dict]) -> None:
    log.info("")
    log.info("%-6s %16s %16s %12s", "", "plain MiB", "checkpointed MiB", "saving")
    for precision, result in results.items():
        plain, checkpointed = result["plain"]["step_peak_mib"], result["checkpointed"]["step_peak_mib"]
        log.info("%-6s %16.0f %16.0f %6.0f MiB %3.0f%%", precision, plain, checkpointed, result["saving_mib"],
                 100 * result["saving_fraction"])  # fmt: skip
    log.info("peak resident memory of one forward + backward above the resident memory at its start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the images")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--measure", choices=list(SETTINGS), help=argparse.SUPPRESS)  # the child processes' options
    parser.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
    torch.set_num_threads(args.threads)
    if args.measure is not None:
        args.result.write_text(json.dumps(measure_step(SETTINGS[args.measure], args.precision, args.seed)))
        return

    results = {precision: compare(precision, args) for precision in PRECISIONS}
    report(results)
    if args.json is not None:
        payload = {
            "benchmark": "grad_checkpointing",
            "setup": {"arch": ARCH, "batch": BATCH, "crops": f"{NUM_GLOBAL}x{GLOBAL_SIZE} + {NUM_LOCAL}x{LOCAL_SIZE}",
                      "head": f"{HIDDEN_DIM}-{BOTTLENECK_DIM}-{OUT_DIM}", "step": "DINO forward + backward",
                      "measure": "ru_maxrss after the step - resident size before it, fresh process per setting",
                      "threads": args.threads, "seed": args.seed},
            "versions": {"torch": torch.__version__, "timm": importlib.metadata.version("timm"),
                         "python": platform.python_version()},
            "results": results,
        }  # fmt: skip
        write_results(args.json, payload)


if __name__ == "__main__":
    main()
