"""One DINO training step, pretrainlab vs lightly 1.6, fp32 and bf16 autocast (Caron et al. 2021, arXiv:2104.14294).

The step: ViT-S/16 (timm, `dynamic_img_size`) student and EMA teacher, batch 8, 2 global
crops of 224 px + 6 local crops of 96 px, head 384-2048-2048-256 -> weight-normalised
65536, DINO loss (teacher 0.04, student 0.1, centering) + 0.1 x KoLeo (Sablayrolles et
al. 2019) on the student's CLS features of each global crop, backward, AdamW
(decay / no-decay groups), EMA teacher update (momentum 0.996). No gradient clipping on
either side. Both sides start from the same weights and see the same images; the
first (FLOP-counted, fp32) step checks that both losses agree.

* ours: `TimmBackbone` + `DINOHead` + `DINO.training_step` (same-size crops batched into
  one forward) + `after_optimizer_step`; the optimizer from `build_optimizer`. KoLeo is a
  loss on the `backbone` tap (`methods/tap_losses.py`), computed by the method's own step on
  the student's global crops.
* lightly: written as lightly's DINO example does it: timm backbone, student head
  `DINOProjectionHead(..., freeze_last_layer=1)`, teacher head a second instance loaded
  with the student's weights, `DINOLoss(output_dim, warmup_teacher_temp_epochs=5)`,
  `update_momentum` before the forwards, one forward per crop,
  `cancel_last_layer_gradients(epoch)`; `KoLeoLoss` per global crop; AdamW groups from
  `get_weight_decay_parameters`.

Both run at epoch 1, past lightly's one frozen epoch, so the 16.8 M-weight last layer
trains on both sides. AdamW is torch's on both sides: ours as `build_optimizer` makes it
(fused kernel), lightly's with torch's defaults as its examples use it, or fused too with
`--lightly-fused-adamw`. Steps alternate between the two sides; reported per side: the
median seconds per step by wall clock and by process CPU time, the fastest step, and
GFLOP/s (FLOPs from `torch.utils.flop_counter.FlopCounterMode`, one fp32 step each, over
the median). On a machine shared with other jobs the medians swing with the load; the
fastest steps are the better estimate of an idle machine.

    python benchmarks/dino_step.py [--steps 5] [--warmup 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import logging
import math
import os
import platform
import warnings
from pathlib import Path

import timm
import torch
from _timing import count_flops, time_interleaved, write_results
from torch import Tensor

from pretrainlab.engine.optim import (
    OptimConfig,
    build_optimizer,
    set_lr_and_weight_decay,
)
from pretrainlab.engine.schedules import StepValues
from pretrainlab.methods.dino import DINO
from pretrainlab.methods.tap_losses import KoLeoLossConfig, build_tap_loss
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads.dino import DINOHead

log = logging.getLogger("dino_step_bench")

ARCH = "vit_small_patch16_224"
BATCH = 8
GLOBAL_SIZE, NUM_GLOBAL = 224, 2
LOCAL_SIZE, NUM_LOCAL = 96, 6
HIDDEN_DIM, BOTTLENECK_DIM, OUT_DIM = 2048, 256, 65536
KOLEO_WEIGHT = 0.1
LR, WEIGHT_DECAY = 5e-4 * BATCH / 256, 0.04
TEACHER_MOMENTUM, TEACHER_TEMP = 0.996, 0.04
STEPS_PER_EPOCH = 100
EPOCH = 1  # lightly freezes the last layer for one epoch; both sides are past it
PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"unknown precision '{precision}', expected one of {PRECISIONS}")


def make_views(seed: int) -> list[Tensor]:
    """2 global (B, 3, 224, 224) then 6 local (B, 3, 96, 96) crops."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [GLOBAL_SIZE] * NUM_GLOBAL + [LOCAL_SIZE] * NUM_LOCAL
    return [torch.randn(BATCH, 3, size, size, generator=generator) for size in sizes]


def build_ours() -> DINO:
    """Our DINO (student + EMA teacher, KoLeo on the student's `backbone` tap), weights from torch's global RNG."""
    backbone = TimmBackbone(ARCH, img_size=GLOBAL_SIZE)
    head = DINOHead(backbone.embed_dim, OUT_DIM, hidden_dim=HIDDEN_DIM, bottleneck_dim=BOTTLENECK_DIM)
    koleo = build_tap_loss(KoLeoLossConfig(tap="backbone", weight=KOLEO_WEIGHT))
    # one frozen epoch, as lightly's `freeze_last_layer=1`; at EPOCH the last layer trains on both sides
    return DINO(backbone, head, losses=[koleo], num_global=NUM_GLOBAL, freeze_last_layer_epochs=1).train()


def step_values() -> StepValues:
    """The schedule values of the timed step: iteration EPOCH * STEPS_PER_EPOCH, constant lr / decay / EMA / temp."""
    return StepValues(
        iteration=EPOCH * STEPS_PER_EPOCH,
        epoch=EPOCH,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        values={"teacher_momentum": TEACHER_MOMENTUM, "teacher_temp": TEACHER_TEMP},
    )


class OursStep:
    """pretrainlab: `DINO.training_step` (with KoLeo on the backbone tap), backward, AdamW, EMA."""

    def __init__(self, views: list[Tensor], precision: str = "fp32") -> None:
        self.method = build_ours()
        self.optimizer = build_optimizer(self.method, OptimConfig(name="adamw", lr=LR))
        set_lr_and_weight_decay(self.optimizer, LR, WEIGHT_DECAY)
        self.step = step_values()
        self.batch = (views, torch.zeros(BATCH, dtype=torch.long))  # (views, labels) as `collate_views` gives; unused
        self.precision = precision
        self.last_loss = float("nan")

    def __call__(self) -> None:
        with precision_context(self.precision):
            outputs = self.method.training_step(self.batch, self.step)
        loss = sum(value for key, value in outputs.items() if key.startswith("loss"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for param in self.method.frozen_parameters(self.step):
            param.grad = None
        self.optimizer.step()
        self.method.after_optimizer_step(self.step)
        self.last_loss = loss.item()


class LightlyStep:
    """lightly 1.6 components, used as lightly's DINO example uses them."""

    def __init__(self, views: list[Tensor], ours: DINO, *, use_fused_adamw: bool) -> None:
        from lightly.loss import DINOLoss, KoLeoLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import (
            deactivate_requires_grad,
            get_weight_decay_parameters,
        )

        embed_dim = ours.student.backbone.embed_dim
        self.student_backbone = timm.create_model(
            ARCH, pretrained=False, num_classes=0, img_size=GLOBAL_SIZE, dynamic_img_size=True
        )
        self.student_head = DINOProjectionHead(embed_dim, HIDDEN_DIM, BOTTLENECK_DIM, OUT_DIM, freeze_last_layer=1)
        self.student_backbone.load_state_dict(ours.student.backbone.model.state_dict())
        self.student_head.load_state_dict(lightly_head_state(ours.student.heads["dino"]))
        self.teacher_backbone = copy.deepcopy(self.student_backbone)
        self.teacher_head = DINOProjectionHead(embed_dim, HIDDEN_DIM, BOTTLENECK_DIM, OUT_DIM)  # deepcopy fails
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        for module in (self.student_backbone, self.student_head, self.teacher_backbone, self.teacher_head):
            module.train()
        self.criterion = DINOLoss(output_dim=OUT_DIM, warmup_teacher_temp_epochs=5)
        self.koleo = KoLeoLoss()
        decay, no_decay = get_weight_decay_parameters([self.student_backbone, self.student_head])
        groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=LR, fused=use_fused_adamw or None)
        self.views = views
        self.precision = "fp32"
        self.last_loss = float("nan")

    def forward_student(self, view: Tensor) -> tuple[Tensor, Tensor]:
        features = self.student_backbone(view).flatten(start_dim=1)  # (B, D)
        return features, self.student_head(features)

    @torch.no_grad()
    def forward_teacher(self, view: Tensor) -> Tensor:
        return self.teacher_head(self.teacher_backbone(view).flatten(start_dim=1))

    def __call__(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.student_backbone, self.teacher_backbone, m=TEACHER_MOMENTUM)
        update_momentum(self.student_head, self.teacher_head, m=TEACHER_MOMENTUM)
        with precision_context(self.precision):
            teacher_out = [self.forward_teacher(view) for view in self.views[:NUM_GLOBAL]]
            student = [self.forward_student(view) for view in self.views]
            loss = self.criterion(teacher_out, [logits for _, logits in student], epoch=EPOCH)
            koleo = sum(self.koleo(features) for features, _ in student[:NUM_GLOBAL]) / NUM_GLOBAL
            loss = loss + KOLEO_WEIGHT * koleo
        loss.backward()
        self.student_head.cancel_last_layer_gradients(current_epoch=EPOCH)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.last_loss = loss.item()


def lightly_head_state(head: DINOHead) -> dict[str, Tensor]:
    """Our head's weights under lightly's `DINOProjectionHead` names (same layer indices)."""
    renames = {
        "mlp.": "layers.",
        "last_layer.direction": "last_layer.weight_v",
        "last_layer.magnitude": "last_layer.weight_g",
    }
    state = {}
    for key, value in head.state_dict().items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and precision (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side and precision")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the images")
    parser.add_argument(
        "--lightly-fused-adamw",
        action="store_true",
        help="give lightly's side the fused AdamW kernel our build_optimizer uses (default: torch's AdamW defaults)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]

    views = make_views(args.seed)
    ours = OursStep(views)
    lightly = LightlyStep(views, ours.method, use_fused_adamw=args.lightly_fused_adamw)
    flops = {"ours": count_flops(ours), "lightly": count_flops(lightly)}
    first_loss = {"ours": ours.last_loss, "lightly": lightly.last_loss}
    log.info("first fp32 step, same weights and images: loss ours %.6f, lightly %.6f", *first_loss.values())
    if not math.isclose(first_loss["ours"], first_loss["lightly"], rel_tol=1e-4):
        raise RuntimeError(f"the two steps compute different losses {first_loss}; the comparison would not be fair")

    results = {precision: measure(ours, lightly, precision, flops, args) for precision in PRECISIONS}
    load = {"before": load_before, "after": os.getloadavg()[0]}
    report(results, flops, load)
    if args.json is not None:
        payload = {
            "benchmark": "dino_step",
            "setup": {
                "arch": ARCH, "batch": BATCH, "crops": f"{NUM_GLOBAL}x{GLOBAL_SIZE} + {NUM_LOCAL}x{LOCAL_SIZE}",
                "head": f"{HIDDEN_DIM}-{BOTTLENECK_DIM}-{OUT_DIM}", "koleo_weight": KOLEO_WEIGHT,
                "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                "lightly_fused_adamw": args.lightly_fused_adamw,
            },
            "versions": {"torch": torch.__version__, "timm": timm.__version__,
                         "lightly": importlib.metadata.version("lightly"), "python": platform.python_version()},
            "load_average_1min": load,
            "gflop_per_step": {name: count / 1e9 for name, count in flops.items()},
            "first_step_loss": first_loss,
            "results": results,
        }  # fmt: skip
        write_results(args.json, payload)


def measure(
    ours: OursStep, lightly: LightlyStep, precision: str, flops: dict[str, int], args: argparse.Namespace
) -> dict[str, object]:
    """Median seconds per step of both sides at one precision, their ratio and the achieved GFLOP/s."""
    log.info("timing %s: %d warm-up + %d timed steps per side, alternating", precision, args.warmup, args.steps)
    ours.precision = lightly.precision = precision
    timings = time_interleaved({"ours": ours, "lightly": lightly}, warmup=args.warmup, repeats=args.steps)
    result: dict[str, object] = {
        name: {
            "s_per_step": t.median_wall,
            "cpu_s_per_step": t.median_cpu,
            "best_s_per_step": t.best_wall,
            "gflop_per_s": flops[name] / 1e9 / t.median_wall,
            "wall_steps": t.wall,
            "cpu_steps": t.cpu,
        }
        for name, t in timings.items()
    }
    result["ratio_lightly_over_ours"] = timings["lightly"].median_wall / timings["ours"].median_wall
    result["cpu_ratio_lightly_over_ours"] = timings["lightly"].median_cpu / timings["ours"].median_cpu
    result["best_ratio_lightly_over_ours"] = timings["lightly"].best_wall / timings["ours"].best_wall
    return result


def report(results: dict[str, dict], flops: dict[str, int], load: dict[str, float]) -> None:
    log.info("")
    header = ("s/step", "CPU s", "best s", "GFLOP", "GFLOP/s")
    log.info("%-6s %-13s %8s %8s %8s %8s %8s", "", "", *header)
    for precision in PRECISIONS:
        for name in ("ours", "lightly"):
            row = results[precision][name]
            log.info(
                "%-6s %-13s %8.2f %8.2f %8.2f %8.1f %8.1f",
                precision, name, row["s_per_step"], row["cpu_s_per_step"], row["best_s_per_step"],
                flops[name] / 1e9, row["gflop_per_s"],
            )  # fmt: skip
        ratios = [results[precision][f"{kind}ratio_lightly_over_ours"] for kind in ("", "cpu_", "best_")]
        log.info("%-6s %-13s %7.2fx %7.2fx %7.2fx", precision, "lightly/ours", *ratios)
    log.info("s/step and CPU s: medians; best s: fastest step; GFLOP/s: GFLOP / median s/step")
    log.info("1-min load average: %.1f before, %.1f after (other jobs on the machine slow both sides)",
             load["before"], load["after"])  # fmt: skip


if __name__ == "__main__":
    main()
