"""`pretrainlab` command line: data synth | pretrain | evaluate knn | study.

Config errors print one line per problem (file, dotted key, what was expected) and
exit with status 2, before any data is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from rich.logging import RichHandler

from pretrainlab.config.loading import ConfigError, load_config

log = logging.getLogger("pretrainlab")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    try:
        return args.handler(args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrainlab", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = verbs.add_parser("data", help="datasets: generate the synthetic one")
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
    synth.set_defaults(handler=cmd_data_synth)

    pre = verbs.add_parser("pretrain", help="pretrain a backbone from a config")
    add_config_arguments(pre)
    pre.add_argument("--resume", action="store_true", help="continue the run directory from checkpoints/last.ckpt")
    pre.set_defaults(handler=cmd_pretrain)

    evaluate = verbs.add_parser("evaluate", help="evaluate a pretrained run")
    eval_verbs = evaluate.add_subparsers(dest="eval_verb", required=True, metavar="PROTOCOL")
    knn = eval_verbs.add_parser("knn", help="weighted kNN (k = 10, 20, 100, 200; T = 0.07) -> eval/knn.json")
    knn.add_argument("--run", type=Path, required=True, help="run directory (holds config.yaml and checkpoints/)")
    knn.add_argument("--no-random-init", action="store_true", help="skip the random-init baseline")
    knn.set_defaults(handler=cmd_evaluate_knn)

    study = verbs.add_parser("study", help="data if missing -> pretrain -> evaluate (pretrained vs random) -> report")
    add_config_arguments(study)
    study.set_defaults(handler=cmd_study)
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
    )
    log.info("wrote %s in %.1f s", args.out, summary.seconds)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.engine.run import pretrain

    run_dir = pretrain(config, resume=args.resume)
    log.info("run directory: %s", run_dir)
    return 0


def cmd_evaluate_knn(args: argparse.Namespace) -> int:
    from pretrainlab.study import evaluate_knn_run

    results = evaluate_knn_run(args.run, random_init=not args.no_random_init)
    for name, scores in results.items():
        log.info("%s: kNN top-1 %.2f  top-5 %.2f  (k = %d)", name, scores["top1"], scores["top5"], scores["k"])
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pretrainlab.study import run_study

    summary = run_study(config)
    print(json.dumps({k: summary[k] for k in ("knn_top1", "wall_time_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
