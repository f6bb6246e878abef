"""SupCon over a real 2-process gloo group on CPU: gathered contrast rows give the loss and gradient
of the one-process computation on the concatenated batch, for even and uneven per-rank batches."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pretrainlab import distributed
from pretrainlab.losses.infonce import supcon_loss

WORLD_SIZE = 2
GLOBAL_BATCH = 8
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 3, 0])


def _check_case(rank: int, rows: slice, num_views: int, labels: torch.Tensor | None, contrast_mode: str) -> None:
    generator = torch.Generator().manual_seed(5)
    features = F.normalize(torch.randn(GLOBAL_BATCH, num_views, 6, generator=generator, dtype=torch.float64), dim=-1)
    options = {"temperature": 0.2, "base_temperature": 0.1, "contrast_mode": contrast_mode}
    full = features.clone().requires_grad_()
    full_loss = supcon_loss(full, labels, gather=False, **options)
    full_loss.backward()

    local = features[rows].clone().requires_grad_()
    local_labels = None if labels is None else labels[rows]
    local_loss = supcon_loss(local, local_labels, **options)
    anchors_per_sample = num_views if contrast_mode == "all" else 1
    local_anchors = anchors_per_sample * local.shape[0]
    # the sum over ranks of (local mean * local anchors) is the global sum over all anchors
    (local_loss * local_anchors).backward()
    global_sum = distributed.all_reduce_sum((local_loss * local_anchors).detach())
    global_anchors = anchors_per_sample * GLOBAL_BATCH
    case = f"rank {rank}, rows {rows}, V={num_views}, labels={labels is not None}, mode={contrast_mode}"
    torch.testing.assert_close(global_sum / global_anchors, full_loss.detach(), msg=lambda m: f"{case}: {m}")
    if local.shape[0] == GLOBAL_BATCH // WORLD_SIZE:  # even split (on both ranks): DDP's mean of the rank losses
        torch.testing.assert_close(distributed.all_reduce_mean(local_loss.detach()), full_loss.detach())
    # every rank's backward sums its gathered gradient over ranks: global_anchors x the mean's gradient
    torch.testing.assert_close(local.grad, global_anchors * full.grad[rows], msg=lambda m: f"{case}: {m}")

    ungathered = supcon_loss(features[rows], local_labels, gather=False, **options)
    assert not torch.allclose(ungathered, local_loss), case


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        even = slice(4 * rank, 4 * rank + 4)
        uneven = slice(0, 3) if rank == 0 else slice(3, GLOBAL_BATCH)
        for rows in (even, uneven):
            for num_views, labels, contrast_mode in [(2, LABELS, "all"), (2, None, "all"), (3, LABELS, "one"),
                                                     (1, LABELS, "all")]:  # fmt: skip
                _check_case(rank, rows, num_views, labels, contrast_mode)
    finally:
        dist.destroy_process_group()


def test_gathered_loss_equals_the_loss_on_the_concatenated_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD_SIZE, join=True)
