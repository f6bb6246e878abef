"""Distributed reductions checked in a real 2-process gloo group on CPU.

Each rank holds a slice of one global batch (same seed on both ranks); every result is
compared with the one-process computation on the whole batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrainlab import distributed
from pretrainlab.eval.metrics import SegmentationMetric
from pretrainlab.losses.dino import DINOLoss
from pretrainlab.losses.infonce import info_nce_loss

WORLD_SIZE = 2


def _check_helpers(rank: int) -> None:
    assert distributed.is_distributed() and distributed.world_size() == WORLD_SIZE and distributed.rank() == rank
    local = torch.full((rank + 1, 2), float(rank))  # uneven rows: 1 on rank 0, 2 on rank 1
    gathered = distributed.all_gather_no_grad(local)
    assert gathered.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert distributed.all_reduce_mean(torch.tensor([float(rank)])).item() == 0.5
    assert local.sum() == rank * (rank + 1) * 2  # inputs untouched

    x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
    weights = torch.arange(6.0).view(3, 2)
    (distributed.all_gather_with_grad(x) * weights).sum().backward()
    # every rank computes the same loss, so each local row gets the sum over ranks of its weights
    rows = slice(0, 1) if rank == 0 else slice(1, 3)
    torch.testing.assert_close(x.grad, WORLD_SIZE * weights[rows])


def _check_dino_center(rank: int) -> None:
    teacher = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))  # global teacher logits
    rows = slice(0, 4) if rank == 0 else slice(4, 10)  # uneven split across ranks
    module = DINOLoss(6, center_momentum=0.9)
    module.update_center(teacher[rows])
    torch.testing.assert_close(module.center, 0.1 * teacher.mean(dim=0, keepdim=True))


def _check_info_nce(rank: int) -> None:
    generator = torch.Generator().manual_seed(2)
    z_a, z_b = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 0])
    rows = slice(4 * rank, 4 * rank + 4)
    for batch_labels in (None, labels):
        full_a = z_a.clone().requires_grad_()
        full_loss = info_nce_loss(full_a, z_b, 0.2, labels=batch_labels, gather=False)
        full_loss.backward()
        local_a = z_a[rows].clone().requires_grad_()
        local_labels = None if batch_labels is None else batch_labels[rows]
        local_loss = info_nce_loss(local_a, z_b[rows], 0.2, labels=local_labels)
        local_loss.backward()
        torch.testing.assert_close(distributed.all_reduce_mean(local_loss.detach()), full_loss.detach())
        # gradient of the sum of both ranks' losses = WORLD_SIZE * gradient of the global mean
        torch.testing.assert_close(local_a.grad, WORLD_SIZE * full_a.grad[rows])
        ungathered = info_nce_loss(z_a[rows], z_b[rows], 0.2, labels=local_labels, gather=False)
        assert not torch.allclose(ungathered, local_loss)


def _check_segmentation_metric(rank: int) -> None:
    generator = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (4, 5, 6), generator=generator)
    label = torch.randint(0, 5, (4, 5, 6), generator=generator)
    label[label == 4] = 255
    whole = SegmentationMetric(4)
    whole.update(pred, label)
    local = SegmentationMetric(4)
    local.update(pred[2 * rank : 2 * rank + 2], label[2 * rank : 2 * rank + 2])
    before = local.areas(sync=False)
    result, expected = local.compute(), whole.compute(sync=False)
    for key in ("area_intersect", "area_union", "area_pred_label", "area_label"):
        assert result[key].tolist() == expected[key].tolist(), key
    assert result["mIoU"] == expected["mIoU"]
    assert torch.equal(local.areas(sync=False).label, before.label)  # compute leaves local state alone


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        _check_helpers(rank)
        _check_dino_center(rank)
        _check_info_nce(rank)
        _check_segmentation_metric(rank)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_group(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD_SIZE, join=True)


def test_helpers_without_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.all_reduce_sum(x) is x
    assert distributed.all_gather_with_grad(x) is x
    assert torch.equal(distributed.all_gather_no_grad(x), x) and not distributed.all_gather_no_grad(x).requires_grad
