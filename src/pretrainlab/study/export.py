"""`pretrainlab export --run DIR --out FILE`: the run's evaluated backbone as a plain state dict.

What is written is exactly what the run's evaluations score (`Method.eval_backbone`): DINO's
teacher backbone, MAE's encoder — for four-channel MAE with the constant mask channel folded
into the patch embedding (a 3-channel ViT), for the pre-encoder variant without the
pre-encoder. `FILE` is `.safetensors` or a torch file (`.pt`, `.pth`); beside it,
`<FILE stem>.yaml` holds the `backbone` config section that builds the matching model, so
`pretrainlab evaluate seg CONFIG backbone.name=... --backbone-from FILE` (or a config's
`backbone.checkpoint: FILE`) loads it with an empty missing / unexpected report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from pretrainlab.run_dir import RunDir, save_checkpoint
from pretrainlab.study.run import load_pretrained_method

log = logging.getLogger(__name__)


def export_backbone(run_dir: Path, out: Path) -> Path:
    """Write the eval backbone of the run at `run_dir` to `out` (+ `<stem>.yaml`); returns `out`."""
    config, method, checkpoint = load_pretrained_method(run_dir)
    backbone = method.eval_backbone()
    state = {key: value.detach().cpu().contiguous() for key, value in backbone.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out))
    else:
        save_checkpoint(state, out)
    section = {**config.backbone.model_dump(mode="json", exclude={"checkpoint"}), "in_chans": backbone.in_chans}
    description = {
        "backbone": section,
        "source": str(RunDir(run_dir).checkpoint),
        "epoch": int(checkpoint["epoch"]) + 1,
        "method": config.method.name,
        "tensors": len(state),
    }
    out.with_suffix(".yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    log.info("exported %s (%d tensors, %d input channels) from %s", out, len(state), backbone.in_chans, run_dir)
    return out

