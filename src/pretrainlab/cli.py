"""`pretrainlab` command line: data synth|rain | pretrain | evaluate knn|linear|seg | study | sweep | search | export | report | analyze params|embeddings|attention|gradcam|landscape.

Config errors print one line per problem (file, dotted key, what was expected) and
exit with status 2, before any data is read. A run directory another process is writing
(run_lock.py) and a write that failed (a full disk) print one line and exit with status 1.

`analyze embeddings|attention|gradcam|landscape --run DIR` each come from a module of
`pretrainlab.analysis` exposing `add_cli_arguments(parser)` and `run_cli(args) -> int`, imported
only when its sub-command is parsed (`ANALYSES`, `AnalysisParser`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from pretrainlab.config.loading import ConfigError, load_config
from pretrainlab.config.search_space import SAMPLERS
from pretrainlab.engine.malloc import keep_freed_memory
from pretrainlab.run_dir import FileWriteError
from pretrainlab.run_lock import RunLockedError

log = logging.getLogger("pretrainlab")

ANALYSES = {  # `analyze <name> --run DIR`: (module with add_cli_arguments / run_cli, help)
    "embeddings": ("pretrainlab.analysis.embeddings",
                   "t-SNE / UMAP of pooled val features by class -> plots/embeddings_<method>.png, analysis/"),
    "attention": ("pretrainlab.analysis.attention",
                  "ViT: last block's CLS attention per head, DINO's 60 %% maps -> plots/attention.png, analysis/"),
    "gradcam": ("pretrainlab.analysis.gradcam",
                "Grad-CAM of the run's linear probe, CNN or ViT -> plots/gradcam.png, analysis/"),
    "landscape": ("pretrainlab.analysis.landscape",
                  "loss landscape (Li et al. 2018) of the backbone under its linear probe -> plots/landscape_*.png"),
}  # fmt: skip


class AnalysisParser(argparse.ArgumentParser):
    """Parser of an `analyze` sub-command. With `module`, its options and handler come from that module
    (`add_cli_arguments(parser)`, `run_cli(args) -> int`), imported when the sub-command is parsed: the
    other verbs neither import the analyses nor fail on one that cannot be imported."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module = module

    def parse_known_args(
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.module is not None:
            name, self.module = self.module, None
            try:
                module = importlib.import_module(name)
            except ImportError as error:
                self.error(f"{name} cannot be imported: {error}")
            module.add_cli_arguments(self)
            self.set_defaults(handler=module.run_cli)
        return super().parse_known_args(args, namespace)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    if args.quiet:  # Lightning's loggers carry their own handler and INFO level ("GPU available: ...", tips)
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # DINO's teacher, frozen backbones: on purpose
    keep_freed_memory()  # every verb allocates large arrays per step or image (see engine/malloc.py)
    try:
        return args.handler(args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError, KeyError) as error:
        message = str(error)
        if "\nOriginal Traceback" in message:  # from a DataLoader worker: torch put the worker's traceback first
            message = message.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # a diverged run: the engine's message names step, loss terms, checkpoint
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (RunLockedError, FileWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but dotted overrides may also follow options (`sweep F --preset small a.b=1`):
    argparse alone assigns the `overrides` positional before it reaches the options."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrainlab", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = verbs.add_parser("data", help="datasets: generate the synthetic one, render rain domains")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    synth = data_verbs.add_parser("synth", help="write the procedural dataset in real on-disk layouts")
    synth.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--num-classes", type=int, default=8)
    synth.add_argument("--image-size", type=int, default=32, help="classification image size (px)")
    synth.add_argument("--train", type=int, default=20000, help="classification train images")
    synth.add_argument("--val", type=int, default=2000, help="classification val images")
    synth.add_argument("--seg-train", type=int, default=1000, help="segmentation train scenes")
    synth.add_argument("--seg-val", type=int, default=200, help="segmentation val scenes")
    synth.add_argument("--cifar-layout", action="store_true",
                       help="also write the classification images as CIFAR-10 batches (cifar-10-batches-py/)")
    synth.add_argument("--detection-train", type=int, default=0, help="COCO detection set: train images")
    synth.add_argument("--detection-val", type=int, default=0, help="COCO detection set: val images")
    synth.set_defaults(handler=cmd_data_synth)
    rain = data_verbs.add_parser("rain", help="clear + rendered-rain domains of a segmentation set")
    rain.add_argument("--src", type=Path, required=True, help="ADE20k- or Cityscapes-layout segmentation folder")
    rain.add_argument("--out", type=Path, required=True, help="output folder")
    rain.add_argument("--intensities", default="25,50,75,100,200", help="rain rates in mm/h, comma-separated")
    rain.add_argument("--seed", type=int, default=0)
    rain.add_argument("--workers", type=int, default=2)
    rain.set_defaults(handler=cmd_data_rain)

    pre = verbs.add_parser("pretrain", help="pretrain a backbone from a config")
    add_config_arguments(pre)
    pre.add_argument("--resume", action="store_true", help="continue the run directory from pretrain/checkpoints/last.ckpt")
    pre.set_defaults(handler=cmd_pretrain)

    evaluate = verbs.add_parser("evaluate", help="evaluate a pretrained run")
    eval_verbs = evaluate.add_subparsers(dest="eval_verb", required=True, metavar="PROTOCOL")
    knn = eval_verbs.add_parser("knn", help="weighted kNN (k = 10, 20, 100, 200; T = 0.07) -> eval/knn.json")
    knn.add_argument("--run", type=Path, required=True, help="run directory (holds config.yaml and pretrain/checkpoints/)")
    knn.add_argument("--no-random-init", action="store_true", help="skip the random-init baseline")
    knn.set_defaults(handler=cmd_evaluate_knn)
    seg = eval_verbs.add_parser(
        "seg", help="finetune a segmentation head (eval.seg) -> eval/seg.json, plots/seg_examples.png, report.md"
    )
    add_config_arguments(seg)
    seg.add_argument(
        "--backbone-from", required=True, metavar="RUN_DIR|CKPT|random",
        help="run directory (its last.ckpt), checkpoint file (into config.backbone) or 'random' (random init)",
    )  # fmt: skip
    seg.set_defaults(handler=cmd_evaluate_seg)
    linear = eval_verbs.add_parser("linear", help="linear probe on frozen pooled features -> eval/linear.json")
    linear.add_argument("--run", type=Path, required=True, help="run directory (holds config.yaml and pretrain/checkpoints/)")
    linear.add_argument("--no-random-init", action="store_true", help="skip the random-init baseline")
    linear.set_defaults(handler=cmd_evaluate_linear)

    study = verbs.add_parser(
        "study", help="data if missing -> the config's phases (pretrain, knn, linear, seg, ...) -> summary, report"
    )
    add_config_arguments(study)
    study.set_defaults(handler=cmd_study)

    sweep = verbs.add_parser("sweep", help="run every unfinished variant of a sweep file -> runs/<study>/scores.md")
    sweep.add_argument("sweep_file", type=Path, help="YAML sweep file (study, base, variants, presets)")
    sweep.add_argument("overrides", nargs="*", help="dotted overrides applied to every variant, after the preset")
    sweep.add_argument("--preset", help="one of the file's presets (e.g. small)")
    sweep.add_argument("--study", help="study folder instead of the file's `study`")
    sweep.add_argument("--dry-run", action="store_true", help="validate and list the variants; run nothing")
    sweep.set_defaults(handler=cmd_sweep)

    search = verbs.add_parser(
        "search", help="Optuna search over a sweep file's `search:` section -> runs/<study>/trial_<NNN>, scores.md"
    )
    search.add_argument("sweep_file", type=Path, help="YAML sweep file with a `search:` section (params, objectives)")
    search.add_argument("overrides", nargs="*", help="dotted overrides applied to every trial, after its sampled values")
    search.add_argument(
        "--sampler", choices=SAMPLERS, default="tpe",
        help="tpe (default), nsga2 (genetic; multi-objective with two `objectives`), random, "
             "grid (every combination of choices and stepped ranges)",
    )  # fmt: skip
    search.add_argument(
        "--trials", type=int, metavar="N",
        help="complete trials to reach; a resumed search runs the rest (grid: default every combination)",
    )  # fmt: skip
    search.add_argument("--preset", help="one of the file's presets (e.g. small)")
    search.add_argument("--study", help="study folder instead of the file's `study` (holds search.db and the trials)")
    search.add_argument("--dry-run", action="store_true", help="validate and print the search space; run nothing")
    search.set_defaults(handler=cmd_search)

    export = verbs.add_parser("export", help="a run's evaluated backbone as a plain state dict (+ its backbone config)")
    export.add_argument("--run", type=Path, required=True, help="run directory (holds config.yaml and pretrain/checkpoints/)")
    export.add_argument("--out", type=Path, required=True, help="output file: .safetensors, .pt or .pth")
    export.set_defaults(handler=cmd_export)

    report = verbs.add_parser(
        "report", help="score table of every run below the folders -> scores.md, scores.csv (--html: report.html)"
    )
    report.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="folders searched for runs")
    report.add_argument("--metric", help="column to sort by (default: mIoU if any run has it, else knn_top1)")
    report.add_argument("--out", type=Path, help="folder for scores.md / scores.csv (default: the first DIR)")
    report.add_argument("--html", action="store_true",
                        help="also write report.html: the sortable table and every run's curves, figures and config")
    report.add_argument("--link-figures", action="store_true",
                        help="with --html: link the runs' PNGs relative to the page instead of embedding them")
    report.set_defaults(handler=cmd_report)

    analyze = verbs.add_parser("analyze", help="inspect a model or a run -> <run>/analysis/<what>.md (+ plots/)")
    analyze_verbs = analyze.add_subparsers(
        dest="analyze_verb", required=True, metavar="WHAT", parser_class=AnalysisParser
    )
    params = analyze_verbs.add_parser(
        "params", help="per-module parameters (trainable / frozen) and FLOPs -> <run>/analysis/params.md"
    )
    add_config_arguments(params)
    params.add_argument("--depth", type=int, default=2, help="module nesting depth shown (1 = top-level modules)")
    params.add_argument("--image-size", type=int, help="input size for FLOPs (default: data.image_size)")
    params.set_defaults(handler=cmd_analyze_params)
    for name, (module, help_text) in ANALYSES.items():
        analyze_verbs.add_parser(name, help=help_text, module=module)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.teacher_temp=0.07")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from pretrainlab.data.synthetic import write_synthetic_dataset

    summary = write_synthetic_dataset(
        args.out,
        seed=args.seed,
        num_classes=args.num_classes,
        image_size=args.image_size,
        num_train=args.train,
        num_val=args.val,
        num_seg_train=args.seg_train,
        num_seg_val=args.seg_val,
        cifar_layout=args.cifar_layout,
        num_detection_train=args.detection_train,
        num_detection_val=args.detection_val,
    )
    log.info("wrote %s in %.1f s", args.out, summary.seconds)
    return 0


def cmd_data_rain(args: argparse.Namespace) -> int:
    from pretrainlab.data.rain_tree import write_rain_tree

    try:
        intensities = [float(item) for item in args.intensities.split(",")]
    except ValueError:
        raise ValueError(f"--intensities {args.intensities!r}: expected comma-separated numbers (mm/h)") from None
    summary = write_rain_tree(args.src, args.out, intensities, seed=args.seed, workers=args.workers)
    log.info("rain tree %s: %d train + %d val scenes", args.out, summary.num_train, summary.num_val)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.study.run import pretrain

    run = pretrain(config, resume=args.resume)
    log.info("run directory: %s", run.path)
    return 0


def cmd_evaluate_knn(args: argparse.Namespace) -> int:
    from pretrainlab.study.evaluate import evaluate_knn_run

    results = evaluate_knn_run(args.run, random_init=not args.no_random_init)
    for name, scores in results.items():
        log.info("%s: kNN top-1 %.2f  top-5 %.2f  (k = %d)", name, scores["top1"], scores["top5"], scores["k"])
    return 0


def cmd_evaluate_linear(args: argparse.Namespace) -> int:
    from pretrainlab.study.evaluate import evaluate_linear_run

    results = evaluate_linear_run(args.run, random_init=not args.no_random_init)
    for name, scores in results.items():
        log.info("%s: linear top-1 %.2f  (train %.2f)", name, scores["top1"], scores["train_top1"])
    return 0


def cmd_evaluate_seg(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.data.loaders import ensure_dataset
    from pretrainlab.eval.segmentation_run import (
        evaluate_segmentation,
        load_seg_backbone,
    )

    ensure_dataset(config)
    from pretrainlab.eval.segmentation_report import seg_report_section, write_report_section
    from pretrainlab.run_dir import RunDir
    from pretrainlab.run_lock import hold_run_lock

    name, backbone = load_seg_backbone(args.backbone_from, config)
    run = RunDir(config.run_dir)
    with hold_run_lock(run.path):
        results = evaluate_segmentation(config, {name: backbone}, {name: args.backbone_from}, run.eval_dir)
        if results:
            plot = "eval/seg_examples.png" if config.eval.seg.num_examples else None
            write_report_section(run.path, seg_report_section(results, plot))
            log.info("%s: %s -> %s", name, results[name]["summary"], run.eval_dir / "seg.json")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.study.runner import run_study

    summary = run_study(config)
    if summary:  # rank 0 of a multi-process run
        shown = ("knn_top1", "linear_top1", "seg_miou", "wall_time_s")
        print(json.dumps({key: summary[key] for key in shown if key in summary}, indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pretrainlab.config.sweeps import expand_sweep

    sweep = expand_sweep(args.sweep_file, preset=args.preset, overrides=args.overrides, study=args.study)
    if not sweep.configs:
        raise ConfigError(f"{args.sweep_file} has no variants; run its `search:` section with `pretrainlab search`")
    if args.dry_run:
        for variant, config in sweep.configs.items():
            log.info("%s -> %s", variant, config.run_dir)
        return 0
    from pretrainlab.sweep import run_sweep

    table = run_sweep(sweep)
    Console().print(table.rich())
    log.info("wrote %s and scores.csv", sweep.study_dir / "scores.md")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pretrainlab.config.sweeps import expand_sweep

    sweep = expand_sweep(args.sweep_file, preset=args.preset, overrides=args.overrides, study=args.study)
    from pretrainlab.search import describe_search, run_search

    if args.dry_run:
        for line in describe_search(sweep, args.sampler):
            log.info("%s", line)
        return 0
    table = run_search(sweep, sampler=args.sampler, num_trials=args.trials)
    Console().print(table.rich())
    log.info("wrote %s and scores.csv", sweep.study_dir / "scores.md")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pretrainlab.study.export import export_backbone

    export_backbone(args.run, args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pretrainlab.report.scores import build_score_table, collect_runs

    rows = collect_runs(args.dirs)
    if not rows:
        raise FileNotFoundError(f"no runs (summary.json or eval/*.json) below {', '.join(map(str, args.dirs))}")
    if args.link_figures and not args.html:
        raise ValueError("--link-figures only applies to the page: add --html")
    table = build_score_table(rows, args.metric)
    out_dir = args.out or args.dirs[0]
    table.write(out_dir)
    Console().print(table.rich())
    log.info("wrote %s and scores.csv (%d runs)", out_dir / "scores.md", len(rows))
    if args.html:
        from pretrainlab.report.html_page import write_study_page

        title = "Study " + ", ".join(folder.resolve().name for folder in args.dirs)
        page = write_study_page(table, out_dir, title=title, embed_figures=not args.link_figures)
        log.info("wrote %s (%.1f MB); open it in a browser", page, page.stat().st_size / 1e6)
    return 0


def cmd_analyze_params(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.analysis.params import (
        analyze_config,
        params_rich_table,
        write_params_table,
    )

    rows = analyze_config(config, max_depth=args.depth, image_size=args.image_size)
    size = args.image_size or config.data.image_size
    title = f"{config.name}: parameters and FLOPs per {size}x{size} image"
    Console().print(params_rich_table(rows, title))
    md_path, _ = write_params_table(rows, config.run_dir / "analysis", title)
    log.info("wrote %s and params.csv", md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
