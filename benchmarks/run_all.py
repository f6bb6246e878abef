"""Run every benchmark, measure the machine's dense matmul peak, and write `benchmarks/results.md`
against issue 14's goals.

One after another, each benchmark script runs in its own process with `--json runs/bench/<name>.json`
(its output also goes to `runs/bench/<name>.log`): `dino_step`, `knn`, `iou`, `seg_pipeline`,
`grad_checkpointing`, `compile`, and `landscape` with `--landscape` (it needs a trained
`runs/quickstart`). Before them, in this process: the machine (CPU model and the flags that decide bf16
speed, `avx512_bf16` / `amx_bf16`, cores, RAM, torch and Python versions, date) and its dense matmul
peak: `torch.matmul` of two n x n fp32 matrices, n = 2048 and 4096, in fp32 and under bf16 autocast (the
casts included, as a model's layers pay them), 2 threads, best of 5 after one warm-up; the peak is the
best n. Both go to `runs/bench/run_all.json` with each script's exit status.

`results.md` has one row per measurement: ours, the reference, their ratio, the goal from issue 14 and
whether it is met. A measurement that could not be made says why in its row ("not measured: ..."):
MMSeg's venv missing (`seg_pipeline`, `iou` then time our side only), a script that failed (its last
output line), a JSON file that does not exist. `--skip-run` rebuilds `results.md` from the JSON files
and `run_all.json` already there; `--only` runs a subset and keeps the others' earlier files.
`--smoke` passes each script tiny sizes (seconds each; the numbers mean nothing, and results.md says so).

    python benchmarks/run_all.py [--only NAME[,NAME]] [--skip-run] [--landscape] [--smoke] [--out-dir runs/bench]
        [--results benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _mmseg import DEFAULT_MMSEG_PYTHON

log = logging.getLogger("run_all")

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
RELEVANT_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
PEAK_SIZES = (2048, 4096)
# setting -> (input dtype, context): the goal's bf16 peak is autocast's (casts included, as a model's layers pay
# them); matmul of bf16 tensors, without the casts, is shown beside it
PEAK_SETTINGS: dict[str, tuple[torch.dtype, Callable[[], contextlib.AbstractContextManager]]] = {
    "fp32": (torch.float32, contextlib.nullcontext),
    "bf16 autocast": (torch.float32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    "bf16 inputs": (torch.bfloat16, contextlib.nullcontext),
}
PEAK_OF_PRECISION = {"fp32": "fp32", "bf16": "bf16 autocast"}  # dino_step.py's precisions
PEAK_THREADS = 2
PEAK_REPEATS = 5

# issue 14's goals, as thresholds and as the table states them
DINO_GOAL, DINO_PEAK_GOAL, KNN_GOAL, IOU_GOAL, PIPELINE_GOAL = 1.3, 0.60, 2.0, 5.0, 2.0
MMSEG_MISSING = f"no MMSeg venv at {DEFAULT_MMSEG_PYTHON}; benchmarks/README.md, 'MMSegmentation venv', creates it"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script's `--smoke` sizes, and whether it runs only when asked."""

    smoke_args: tuple[str, ...] = ()
    optional: bool = False  # run only when asked (`--landscape`)


BENCHMARKS = {
    "dino_step": Benchmark(smoke_args=("--steps", "1", "--warmup", "0", "--threads", "1")),
    "knn": Benchmark(smoke_args=("--bank", "5000", "--queries", "500", "--repeats", "1", "--threads", "1")),
    "iou": Benchmark(smoke_args=("--images", "2", "--repeats", "1")),
    "seg_pipeline": Benchmark(smoke_args=("--num-images", "4", "--rounds", "1", "--iou-images", "2")),
    "grad_checkpointing": Benchmark(smoke_args=("--threads", "1")),  # one step per process already
    "compile": Benchmark(smoke_args=("--steps", "1", "--warmup", "0", "--threads", "1", "--warm-cache")),
    "landscape": Benchmark(
        smoke_args=("--steps", "3", "--num-images", "200", "--reference-points", "1"), optional=True
    ),
}


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    measurement: str
    ours: str
    reference: str
    ratio: str
    goal: str
    status: str
    notes: str = ""


# ---------------------------------------------------------------------------------------------- measuring


def describe_machine() -> dict[str, Any]:
    """CPU model and flags, cores, RAM, versions, date, load."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    memory_kib = 0
    if Path("/proc/meminfo").exists():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpu": fields.get("model name") or platform.processor() or "unknown",
        "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": memory_kib / 2**20,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_1min": os.getloadavg()[0],
        "mmseg_python": str(DEFAULT_MMSEG_PYTHON) if DEFAULT_MMSEG_PYTHON.exists() else None,
    }


def matmul_peak() -> dict[str, Any]:
    """GFLOP/s of `torch.matmul` (n x n) @ (n x n), best of `PEAK_REPEATS`, for each of `PEAK_SETTINGS`; the peak
    of a setting is its best n."""
    torch.set_num_threads(PEAK_THREADS)
    generator = torch.Generator().manual_seed(0)
    rates: dict[str, dict[str, float]] = {}
    for setting, (dtype, context) in PEAK_SETTINGS.items():
        rates[setting] = {}
        for n in PEAK_SIZES:
            a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
            best = float("inf")
            for repeat in range(PEAK_REPEATS + 1):  # the first call is a warm-up
                start = time.perf_counter()
                with context():
                    torch.matmul(a, b)
                if repeat:
                    best = min(best, time.perf_counter() - start)
            rates[setting][str(n)] = 2 * n**3 / best / 1e9
            log.info("matmul %s n=%d: %.0f GFLOP/s", setting, n, rates[setting][str(n)])
    return {
        "threads": PEAK_THREADS,
        "repeats": PEAK_REPEATS,
        "gflop_per_s": rates,
        "peak_gflop_per_s": {setting: max(by_size.values()) for setting, by_size in rates.items()},
    }


def run_benchmark(name: str, out_dir: Path, *, smoke: bool) -> dict[str, Any]:
    """Run `<name>.py --json <out_dir>/<name>.json` in its own process, its output shown and kept in
    `<name>.log`; returns its exit code, seconds and last output lines."""
    json_path, log_path = out_dir / f"{name}.json", out_dir / f"{name}.log"
    json_path.unlink(missing_ok=True)  # a failed run must not leave an earlier run's numbers behind
    command = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--json", str(json_path)]
    if smoke:
        command += BENCHMARKS[name].smoke_args
    log.info("=== %s: %s", name, " ".join(command[1:]))
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=5)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            log.info("  %s", line.rstrip())
            if line.strip():
                tail.append(line.strip())
        exit_code = process.wait()
    seconds = time.perf_counter() - started
    log.info("=== %s: exit %d after %.0f s", name, exit_code, seconds)
    return {"exit_code": exit_code, "seconds": seconds, "last_lines": list(tail), "smoke": smoke}


# ---------------------------------------------------------------------------------------------- reporting


def times(value: float) -> str:
    return f"{value:.2f}×"


def verdict(is_met: bool, detail: str = "") -> str:
    return ("**met**" if is_met else "**not met**") + (f" ({detail})" if detail else "")


def mmseg_why(summary: dict, name: str) -> str:
    """Why a benchmark has no MMSeg numbers: no venv when it ran, or MMSeg failed to start in it."""
    machine = summary.get("machine") or {}
    if machine.get("mmseg_python") is None:
        return MMSEG_MISSING
    return f"MMSeg did not start with {machine['mmseg_python']} (see {name}.log)"


def load_note(payload: dict) -> str:
    load = payload.get("load_average_1min")
    if isinstance(load, dict):
        return f"load {load['before']:.1f}→{load['after']:.1f}"
    return ""


def dino_step_rows(payload: dict, summary: dict) -> list[Row]:
    rows = []
    setup, peak = payload["setup"], summary.get("peak")
    for precision in ("fp32", "bf16"):
        result = payload["results"][precision]
        ratio = result["ratio_lightly_over_ours"]
        notes = (f"CPU-time ratio {times(result['cpu_ratio_lightly_over_ours'])}, fastest steps "
                 f"{times(result['best_ratio_lightly_over_ours'])}; {setup['steps']} timed steps, "
                 f"{setup['threads']} threads; {load_note(payload)}")  # fmt: skip
        is_goal = precision == "bf16"
        rows.append(Row(
            "dino_step", f"DINO step {precision}, s/step (median)", f"{result['ours']['s_per_step']:.2f} s",
            f"lightly {payload['versions']['lightly']}: {result['lightly']['s_per_step']:.2f} s", times(ratio),
            f"≥ {DINO_GOAL}× lightly" if is_goal else "—",
            verdict(ratio >= DINO_GOAL) if is_goal else "measured", notes,
        ))  # fmt: skip
    for precision in ("bf16", "fp32"):
        rows.append(dino_peak_row(payload, precision, peak))
    return rows


def dino_peak_row(payload: dict, precision: str, peak: dict | None) -> Row:
    """Our DINO step's GFLOP/s as a fraction of this machine's matmul peak at the same precision."""
    achieved, threads = payload["results"][precision]["ours"]["gflop_per_s"], payload["setup"]["threads"]
    is_goal = precision == "bf16"
    goal = f"≥ {DINO_PEAK_GOAL:.0%} of the bf16 (autocast) matmul peak" if is_goal else "—"
    measurement = f"DINO step {precision}, ours GFLOP/s vs this machine's {PEAK_OF_PRECISION[precision]} matmul peak"
    ours = f"{achieved:.0f} GFLOP/s"
    if peak is None:
        why = "not measured: no matmul peak in run_all.json (run without --skip-run)"
        return Row("dino_step", measurement, ours, "not measured", "—", goal, why)
    reference = peak["peak_gflop_per_s"][PEAK_OF_PRECISION[precision]]
    fraction = achieved / reference
    status = verdict(fraction >= DINO_PEAK_GOAL) if is_goal else "measured"
    if threads != peak["threads"]:
        status = f"not comparable: step on {threads} threads, peak on {peak['threads']}"
    notes = f"{payload['gflop_per_step']['ours']:.1f} GFLOP per step (FlopCounterMode) / median s"
    if is_goal:
        notes += f"; {achieved / peak['peak_gflop_per_s']['bf16 inputs']:.0%} of the bf16-input matmul peak"
    return Row("dino_step", measurement, ours, f"peak {reference:.0f} GFLOP/s", f"{fraction:.0%}", goal, status, notes)


def knn_rows(payload: dict, summary: dict) -> list[Row]:
    results, setup = payload["results"], payload["setup"]
    ratio, identical = payload["ratio_dino_over_ours"], payload["identical_predictions"]
    notes = (f"bank {setup['bank']} × {setup['dim']}, {setup['queries']} queries, k = {setup['k']}; CPU-time ratio "
             f"{times(payload['cpu_ratio_dino_over_ours'])}; {load_note(payload)}")  # fmt: skip
    return [Row(
        "knn", "weighted kNN, s per call (median)", f"{results['pretrainlab']['s']:.3f} s",
        f"DINO knn_classifier: {results['DINO knn_classifier']['s']:.3f} s", times(ratio),
        f"≥ {KNN_GOAL:.0f}× the chunked fp32 torch baseline, identical predictions",
        verdict(ratio >= KNN_GOAL and identical, "predictions identical" if identical else "predictions differ"), notes,
    )]  # fmt: skip


def iou_rows(payload: dict, summary: dict) -> list[Row]:
    rows, why = [], mmseg_why(summary, "iou")
    goal = f"≥ {IOU_GOAL:.0f}× MMSeg IoUMetric, identical numbers"
    for kind, result in payload["results"].items():
        timings = result["timings"]
        for dtype in ("int64", "uint8"):
            name = f"pretrainlab {dtype}"
            ours = f"{timings[name]['ms_per_image']:.2f} ms"
            measurement = f"IoU accumulation, {kind} maps, ours on {dtype}, ms/image (median)"
            if "MMSeg" not in timings:
                rows.append(Row("iou", measurement, ours, "not measured", "—", goal, f"not measured: {why}"))
                continue
            ratio = result[f"ratio MMSeg / {name}"]
            identical = all(value for key, value in result[f"identical {name}"].items() if key != "summary")
            rows.append(Row(
                "iou", measurement, ours,
                f"MMSeg {payload['versions']['mmseg']}: {timings['MMSeg']['ms_per_image']:.2f} ms", times(ratio), goal,
                verdict(ratio >= IOU_GOAL and identical, "numbers identical" if identical else "numbers differ"),
                f"{payload['setup']['images']} maps per pass; {load_note(payload)}",
            ))  # fmt: skip
    return rows


def seg_pipeline_rows(payload: dict, summary: dict) -> list[Row]:
    rows, why = [], mmseg_why(summary, "seg_pipeline")
    titles = {"transforms": "file → augmented sample", "batches": "file → normalised padded batch",
              "iou": "IoU accumulation (random maps)"}  # fmt: skip
    identical, num_images = payload["identical_images"], payload["setup"]["num_images"]
    for task, result in payload["results"].items():
        goal = f"≥ {IOU_GOAL:.0f}× MMSeg (numbers: iou.py)" if task == "iou" else f"≥ {PIPELINE_GOAL:.0f}× MMSeg"
        threshold = IOU_GOAL if task == "iou" else PIPELINE_GOAL
        ours = f"{result['ours']['img_per_s']:.0f} img/s"
        measurement = f"seg pipeline: {titles.get(task, task)}, img/s (best pass)"
        if result["mmseg"] is None:
            rows.append(
                Row("seg_pipeline", measurement, ours, "not measured", "—", goal, f"not measured: {why}")
            )
            continue
        notes = f"CPU-time ratio {times(result['cpu_ratio_ours_over_mmseg'])}; {load_note(payload)}"
        if task != "iou" and identical is not None:
            notes = f"{identical} / {num_images} augmented images bit-identical to MMSeg; " + notes
        rows.append(Row(
            "seg_pipeline", measurement, ours,
            f"MMSeg {payload['versions']['mmseg']}: {result['mmseg']['img_per_s']:.0f} img/s",
            times(result["ratio_ours_over_mmseg"]), goal, verdict(result["ratio_ours_over_mmseg"] >= threshold), notes,
        ))  # fmt: skip
    return rows


def grad_checkpointing_rows(payload: dict, summary: dict) -> list[Row]:
    rows = []
    for precision, result in payload["results"].items():
        plain, checkpointed = result["plain"]["step_peak_mib"], result["checkpointed"]["step_peak_mib"]
        rows.append(Row(
            "grad_checkpointing", f"DINO step {precision}, peak memory above the step's start",
            f"{checkpointed:.0f} MiB with", f"{plain:.0f} MiB without", f"{checkpointed / plain:.2f}×",
            "peak memory saving",
            verdict(result["saving_mib"] > 0, f"saves {result['saving_mib']:.0f} MiB, {result['saving_fraction']:.0%}"),
            "same loss and gradient norm (checked)",
        ))  # fmt: skip
    return rows


def compile_rows(payload: dict, summary: dict) -> list[Row]:
    from pretrainlab.config import load_config
    from pretrainlab.engine.trainer import EngineConfig

    rows = []
    for workload, result in payload["results"].items():
        setup = payload["setup"]["workloads"][workload]
        if workload == "quickstart":
            is_default_on = load_config(REPO_ROOT / setup["config"]).engine.compile
        else:
            is_default_on = EngineConfig().compile
        steps, run_steps = result["break_even_steps"], result.get("run_steps")
        wins = steps is not None and (run_steps is None or steps <= run_steps)
        where = f"break-even after {steps} steps" if steps is not None else "compiled steps are not faster"
        if run_steps is not None:
            where += f", the run has {run_steps}"
        state = "on" if is_default_on else "off"
        rows.append(Row(
            "compile", f"{workload} step, {setup['precision']}, s/step (median), compiled vs eager",
            f"{result['compiled']['s_per_step']:.3f} s compiled", f"{result['eager']['s_per_step']:.3f} s eager",
            times(result["speedup"]), "compile on by default only where it wins",
            verdict(wins == is_default_on, f"{'wins' if wins else 'does not win'}: {where}; default {state}"),
            f"compile {result['compile_s']:.1f} s (first step {result['compiled']['first_step_s']:.1f} s vs eager "
            f"{result['eager']['first_step_s']:.1f} s); {load_note(payload)}",
        ))  # fmt: skip
    return rows


def landscape_rows(payload: dict, summary: dict) -> list[Row]:
    result = payload["results"]
    return [Row(
        "landscape", f"{payload['setup']['steps']}² loss landscape, end to end", f"{result['ours_s']:.0f} s",
        f"loss-landscape style: {result['reference_s']:.0f} s (extrapolated)",
        times(result["ratio_reference_over_ours"]),
        f"≤ {result['goal_s'] / 60:.0f} min end to end (issue 13)", verdict(result["ours_s"] <= result["goal_s"]),
        load_note(payload),
    )]  # fmt: skip


ROWS: dict[str, Callable[[dict, dict], list[Row]]] = {
    "dino_step": dino_step_rows, "knn": knn_rows, "iou": iou_rows, "seg_pipeline": seg_pipeline_rows,
    "grad_checkpointing": grad_checkpointing_rows, "compile": compile_rows, "landscape": landscape_rows,
}  # fmt: skip
GOALS = {
    "dino_step": f"≥ {DINO_GOAL}× lightly (bf16), ≥ {DINO_PEAK_GOAL:.0%} of the bf16 peak",
    "knn": f"≥ {KNN_GOAL:.0f}× the chunked fp32 torch baseline, identical predictions",
    "iou": f"≥ {IOU_GOAL:.0f}× MMSeg IoUMetric, identical numbers",
    "seg_pipeline": f"≥ {PIPELINE_GOAL:.0f}× MMSeg",
    "grad_checkpointing": "peak memory saving",
    "compile": "compile on by default only where it wins",
    "landscape": "≤ 5 min end to end (issue 13)",
}


def benchmark_rows(name: str, out_dir: Path, summary: dict) -> list[Row]:
    """The rows of one benchmark from its JSON file, or one 'not measured' row saying why there is none."""
    json_path, outcome = out_dir / f"{name}.json", summary["runs"].get(name)

    def missing(why: str) -> list[Row]:
        return [Row(name, "—", "—", "—", "—", GOALS[name], f"not measured: {why}")]

    if outcome is not None and outcome["exit_code"] != 0:
        last = outcome["last_lines"][-1] if outcome["last_lines"] else "no output"
        return missing(f"`{name}.py` exited with {outcome['exit_code']}: {last.replace('|', '/')}")
    if not json_path.exists():
        return missing(f"no {json_path.relative_to(REPO_ROOT) if json_path.is_relative_to(REPO_ROOT) else json_path}")
    try:
        return ROWS[name](json.loads(json_path.read_text()), summary)
    except (KeyError, TypeError, ValueError) as error:
        return missing(f"{json_path.name} unreadable ({type(error).__name__}: {error})")


def machine_lines(machine: dict, peak: dict | None) -> list[str]:
    """The machine section of results.md."""
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["flags"].items())
    cores = f"{machine['logical_cores']} logical cores ({machine['usable_cores']} usable)"
    lines = [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}; {cores}",
        f"- flags: {flags}",
        f"- RAM: {machine['ram_gib']:.1f} GiB",
        f"- torch {machine['torch']}, Python {machine['python']}",
        f"- date: {machine['date']}; 1-min load average at the start: {machine['load_average_1min']:.2f}",
        f"- MMSeg interpreter: {machine['mmseg_python'] or f'none ({MMSEG_MISSING})'}",
    ]
    if peak is not None:
        sizes = {precision: ", ".join(f"n = {n}: {rate:.0f}" for n, rate in by_size.items())
                 for precision, by_size in peak["gflop_per_s"].items()}  # fmt: skip
        setting = f"`torch.matmul`, n × n, {peak['threads']} threads, best of {peak['repeats']}"
        rates = "; ".join(f"{name} {by_size}" for name, by_size in sizes.items())
        lines.append(f"- dense matmul ({setting}), GFLOP/s: {rates}")
    return lines


def write_results(path: Path, summary: dict, rows: list[Row]) -> None:
    runs = summary.get("runs", {})
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`); the raw numbers are in `runs/bench/*.json`, each script's",
        "output in `runs/bench/*.log`. What each script measures: `benchmarks/README.md` and its docstring. Goals:",
        "issue 14, item 5.",
        "",
    ]
    if any(run.get("smoke") for run in runs.values()):
        lines += ["**Smoke run (`--smoke`): tiny sizes, the numbers below mean nothing.**", ""]
    if summary.get("machine") is not None:
        lines += [*machine_lines(summary["machine"], summary.get("peak")), ""]
    lines += [
        "## Results",
        "",
        "| benchmark | measurement | ours | reference | ratio | goal | status | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (row.benchmark, row.measurement, row.ours, row.reference, row.ratio, row.goal, row.status, row.notes)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    lines += [
        "",
        "Ratios: reference / ours for times, ours / reference for rates (above 1: we are faster); grad checkpointing:",
        "with / without; peak rows: the fraction of the peak reached.",
    ]
    if runs:
        lines += ["", "Runs: " + "; ".join(f"`{name}` exit {run['exit_code']}, {run['seconds']:.0f} s"
                                           for name, run in runs.items())]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip-run", action="store_true", help="rebuild results.md from the existing JSON files")
    parser.add_argument("--landscape", action="store_true", help="also run landscape.py (needs runs/quickstart)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for every script: checks the plumbing only")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "runs" / "bench", help="JSON and log files")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.md", help="the table written")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    default = [name for name, bench in BENCHMARKS.items() if not bench.optional or args.landscape]
    selected = default if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown or not selected:
        parser.error(f"--only: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(BENCHMARKS)}")
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "run_all.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"runs": {}}

    if not args.skip_run:
        summary["machine"] = describe_machine()
        log.info("machine: %s", summary["machine"])
        summary["peak"] = matmul_peak()
        for name in selected:
            summary["runs"][name] = run_benchmark(name, out_dir, smoke=args.smoke)
            summary_path.write_text(json.dumps(summary, indent=2))
    shown = [name for name in BENCHMARKS if name in default or name in selected or (out_dir / f"{name}.json").exists()]
    rows = [row for name in shown for row in benchmark_rows(name, out_dir, summary)]
    write_results(args.results, summary, rows)
    log.info("wrote %s (%d rows)", args.results, len(rows))


if __name__ == "__main__":
    main()
