"""Check that the model replicas of a multi-process run agree (DDP correctness).

Every process should hold the same weights *and* buffers after a step (a teacher updated
from all-reduced gradients, a DINO center from all-reduced teacher outputs); a buffer
updated from local data only (e.g. BatchNorm running statistics without SyncBN) drifts
apart silently. At the end of training every rank computes a fingerprint of each tensor
of the method's state (float64 sum and sum of squares), rank 0 gathers them and writes
`replicas.json`: the tensors whose fingerprints differ between ranks, and by how much.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch import nn

from pretrainlab.distributed import all_gather_no_grad, is_distributed, rank
from pretrainlab.run_dir import write_json

log = logging.getLogger(__name__)


def state_fingerprints(module: nn.Module) -> tuple[list[str], torch.Tensor]:
    """Names of the floating tensors of `module.state_dict()` and their fingerprints (N, 2) float64."""
    names, rows = [], []
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point():
            values = tensor.detach().double()
            names.append(name)
            rows.append(torch.stack([values.sum(), values.square().sum()]))
    return names, torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def compare_replicas(fingerprints: torch.Tensor, names: list[str]) -> dict[str, object]:
    """Given fingerprints (W, N, 2) of W ranks: the largest difference from rank 0 and the tensors that differ."""
    differences = (fingerprints - fingerprints[:1]).abs().amax(dim=(0, 2))  # (N,)
    differing = {name: float(d) for name, d in zip(names, differences) if d > 0}
    return {
        "world_size": int(fingerprints.shape[0]),
        "num_tensors": len(names),
        "max_abs_difference": float(differences.max()) if len(names) else 0.0,
        "differing_tensors": differing,
    }


class ReplicaCheck(L.Callback):
    """At the end of training, compare the method's state across ranks; rank 0 writes `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not is_distributed():
            return
        names, local = state_fingerprints(pl_module.method)
        gathered = all_gather_no_grad(local[None])  # (W, N, 2)
        if rank() == 0:
            report = compare_replicas(gathered, names)
            write_json(self.path, report)
            if report["differing_tensors"]:
                log.warning("replicas differ in %d tensors (max |diff| %.3g); see %s",
                            len(report["differing_tensors"]), report["max_abs_difference"], self.path)  # fmt: skip
