"""Multi-scale deformable attention in plain PyTorch against a direct gather at pixel centres."""

from __future__ import annotations

import torch

from pretrainlab.models.layers.ms_deform_attn import MSDeformAttn, ms_deform_attn_sample

SHAPES = [(4, 6), (2, 3)]


def test_sampling_at_pixel_centres_is_a_weighted_gather() -> None:
    torch.manual_seed(0)
    B, M, Dh, Nq, P = 2, 2, 3, 5, 2
    S = sum(h * w for h, w in SHAPES)
    values = torch.randn(B, S, M, Dh)
    rows = [torch.randint(0, h, (B, Nq, M, P)) for h, _ in SHAPES]
    cols = [torch.randint(0, w, (B, Nq, M, P)) for _, w in SHAPES]
    locations = torch.stack([
        torch.stack([(c + 0.5) / w, (r + 0.5) / h], -1) for r, c, (h, w) in zip(rows, cols, SHAPES)
    ], dim=3)  # (B, Nq, M, L, P, 2)  # fmt: skip
    weights = torch.rand(B, Nq, M, len(SHAPES), P).flatten(-2).softmax(-1).view(B, Nq, M, len(SHAPES), P)
    output = ms_deform_attn_sample(values, SHAPES, locations, weights)

    expected = torch.zeros(B, Nq, M, Dh)
    starts = [0, SHAPES[0][0] * SHAPES[0][1]]
    for b in range(B):
        for q in range(Nq):
            for m in range(M):
                for level, (start, (_, w)) in enumerate(zip(starts, SHAPES)):
                    for p in range(P):
                        index = start + rows[level][b, q, m, p] * w + cols[level][b, q, m, p]
                        expected[b, q, m] += weights[b, q, m, level, p] * values[b, index, m]
    torch.testing.assert_close(output, expected.view(B, Nq, M * Dh))


def test_points_outside_the_map_read_zero() -> None:
    values = torch.ones(1, 4 * 6 + 2 * 3, 1, 2)
    locations = torch.full((1, 1, 1, 2, 1, 2), 5.0)  # far outside every level
    weights = torch.full((1, 1, 1, 2, 1), 0.5)
    assert torch.equal(ms_deform_attn_sample(values, SHAPES, locations, weights), torch.zeros(1, 1, 2))


def test_module_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    attn = MSDeformAttn(16, num_heads=4, num_levels=2, num_points=3)
    S = sum(h * w for h, w in SHAPES)
    tokens = torch.randn(2, S, 16, requires_grad=True)
    reference = torch.rand(2, S, 2, 2)
    output = attn(tokens, reference, tokens, SHAPES)
    assert output.shape == (2, S, 16)
    output.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in attn.parameters())
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0  # offsets learn through grid_sample
