"""Exact kNN search: the bf16 screening error bound, fast path == exact path on adversarial data, fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.eval import knn_search
from pretrainlab.eval.knn import knn_classify, knn_predict
from pretrainlab.eval.knn_search import BF16_UNIT_ROUNDOFF, exact_neighbours, nearest_neighbours, select_top_k


# The bf16 screening runs only where the CPU has bf16 kernels (oneDNN: fp32 accumulation, the bound's premise).
# Torch's generic bf16 GEMM on an AVX2-only CPU broke the bound: the fast path missed a nearest neighbour on
# this file's adversarial bank with chunk sizes (7, 37), so nearest_neighbours takes the exact path there.
needs_bf16_kernels = pytest.mark.skipif(not knn_search.has_fast_bf16("cpu"), reason="this CPU has no bf16 kernels")


def _naive(train: torch.Tensor, test: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 similarities of the fp32-normalised features, full stable sort: ties to the lower index."""
    scores = F.normalize(test.float(), dim=1).double() @ F.normalize(train.float(), dim=1).double().T
    order = scores.sort(dim=1, descending=True, stable=True)
    return order.values[:, :k], order.indices[:, :k]


def _error_and_bound(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m, n) |screening score - float64 score|, its bound eps_q + u |s'| and (m,) eps_q."""
    screening = knn_search._Bank(bank, 1 << 20, 1)
    shifted, shift, residual = screening.shifted_queries(queries, 64)
    scores = screening.screening_codes(shifted, 0)[:, : bank.shape[0]].view(torch.bfloat16).double()  # s'
    exact = queries.double() @ bank.double().T
    eps = knn_search._screening_error_bound(queries.norm(dim=1), residual, shift, screening.norm_max,
                                            screening.residual_max, bank.shape[1])  # fmt: skip
    return (scores + shift[:, None] - exact).abs(), eps[:, None] + BF16_UNIT_ROUNDOFF * scores.abs(), eps


@needs_bf16_kernels
@pytest.mark.parametrize("kind", ["gaussian", "heavy_tailed", "sparse", "clustered"])
def test_screening_error_stays_within_the_bound(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (3000, 384)
    if kind == "gaussian":
        features = torch.randn(shape, generator=generator)
    elif kind == "heavy_tailed":
        features = torch.randn(shape, generator=generator) ** 3
    elif kind == "sparse":
        features = torch.randn(shape, generator=generator) * (torch.rand(shape, generator=generator) < 0.05)
    else:
        centres = torch.randn(10, 384, generator=generator)
        features = centres[torch.arange(3000) % 10] + 0.3 * torch.randn(shape, generator=generator)
    features = F.normalize(features, dim=1)
    error, bound, eps = _error_and_bound(features[:500], features[500:])
    assert bool((error <= bound).all()), float((error / bound).max())
    # per-vector residual norms: ~0.9 u for dense vectors, more when a few components dominate; at most ~2 u
    assert float(eps.max()) < (1.1 if kind in ("gaussian", "clustered") else 2.05) * BF16_UNIT_ROUNDOFF


@needs_bf16_kernels
def test_screening_bound_is_nearly_attained_when_every_component_rounds_up() -> None:
    # 1 + 2^-8 + 2^-20 rounds to 1 + 2^-7 in bf16: every product is too large by almost 2 u, as eps_q allows
    # (the shift c_q is the bf16 score itself, so the output rounding takes almost nothing back)
    vector = torch.full((1, 384), 2.0**-5 * (1 + 2.0**-8 + 2.0**-20))
    error, bound, _ = _error_and_bound(vector, vector)
    assert 0.95 < float(error / bound) <= 1.0


def _adversarial_bank(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A clustered bank with near-ties far below bf16's resolution, exact duplicates with different labels
    and constant offsets, and queries sitting on them."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 32, generator=generator)
    labels = torch.arange(600) % 6
    bank = centres[labels] + 0.5 * torch.randn(600, 32, generator=generator)
    direction = torch.randn(32, generator=generator)
    for i, j in enumerate(range(0, 120, 6)):  # rows nudged by 1e-6 .. 2e-5 along one direction: near-ties
        bank[j + 300] = bank[j] + (i + 1) * 1e-6 * direction
    bank[400:410] = bank[410]  # eleven identical rows, classes 4, 5, 0, 1, ...
    bank[500:540:2] = 3.0 * bank[501:541:2]  # same direction, other norm: ties within fp32 after normalisation
    queries = torch.cat([bank[:120:6] + 1e-3 * direction, bank[405:406].repeat(3, 1), bank[501:541:8],
                         centres[labels[:40]] + 0.5 * torch.randn(40, 32, generator=generator)])  # fmt: skip
    return bank, labels, queries


@needs_bf16_kernels
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("chunk_size", "train_chunk_size"), [(1024, 16384), (7, 37), (64, 128)])
def test_fast_path_equals_exact_path_on_adversarial_data(seed: int, chunk_size: int, train_chunk_size: int) -> None:
    bank, labels, queries = _adversarial_bank(seed)
    for k in (1, 5, 20):
        found = nearest_neighbours(bank, queries, k, chunk_size, train_chunk_size)
        assert found.num_exact < len(queries) // 2, "the fast path should answer most queries"
        exact = exact_neighbours(F.normalize(bank, dim=1), F.normalize(queries, dim=1), k, chunk_size, train_chunk_size)
        naive = _naive(bank, queries, k)
        assert torch.equal(found.indices, exact[1]) and torch.equal(found.indices, naive[1]), k
        torch.testing.assert_close(found.sims, naive[0].float(), rtol=0, atol=1e-7)
        votes = knn_predict(bank, labels, queries, k=k, num_classes=6, chunk_size=chunk_size,
                            train_chunk_size=train_chunk_size)  # fmt: skip
        exact_votes = torch.zeros(len(queries), 6, dtype=torch.float64)
        exact_votes.scatter_add_(1, labels[exact[1]], (exact[0] / 0.07).exp())
        assert torch.equal(votes.argmax(dim=1), exact_votes.argmax(dim=1)), k


def test_duplicates_go_to_the_lower_index() -> None:
    bank = torch.randn(1, 8).repeat(40, 1)  # 40 identical rows
    found = nearest_neighbours(bank, torch.randn(3, 8), 5, 1024, 16384)
    assert found.indices.tolist() == [list(range(5))] * 3
    scores = torch.tensor([[0.5, 0.75, 0.5, 0.75]])
    values, indices = select_top_k(scores, torch.tensor([[7, 3, 2, 1]]), 3)
    assert indices.tolist() == [[1, 3, 2]] and values.tolist() == [[0.75, 0.75, 0.5]]


@needs_bf16_kernels
def test_fallback_triggers_when_forced_or_needed_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, _, queries = _adversarial_bank(0)
    expected = _naive(bank, queries, 10)[1]
    no_margin = nearest_neighbours(bank, queries, 10, 1024, 16384, margin=0)
    assert no_margin.num_retried > len(queries) // 2  # only queries with a 2 eps gap after the k-th pass at once
    assert torch.equal(no_margin.indices, expected)

    def unbounded(query_norm: torch.Tensor, *args: object) -> torch.Tensor:
        return torch.full(query_norm.shape, float("inf"), dtype=torch.float64)

    with monkeypatch.context() as patch:
        patch.setattr(knn_search, "_screening_error_bound", unbounded)
        forced = nearest_neighbours(bank, queries, 10, 1024, 16384)
    assert forced.num_retried == forced.num_exact == len(queries)
    assert torch.equal(forced.indices, expected)
    crowded = torch.cat([bank, bank[405:406].repeat(300, 1)])  # 311 identical rows: more than 4 x (20 + 44)
    found = nearest_neighbours(crowded, queries, 20, 1024, 16384)
    assert found.num_exact >= 3  # the three queries on the duplicated row
    assert torch.equal(found.indices, _naive(crowded, queries, 20)[1])


def test_a_cpu_without_bf16_kernels_takes_the_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, _, queries = _adversarial_bank(0)
    monkeypatch.setattr(knn_search, "has_fast_bf16", lambda device_type: False)
    found = nearest_neighbours(bank, queries, 10, 1024, 16384)
    assert found.num_retried == 0 and found.num_exact == len(queries)
    assert torch.equal(found.indices, _naive(bank, queries, 10)[1])


def test_small_banks_and_k_clipping_as_before() -> None:
    bank, labels, queries = _adversarial_bank(1)
    small, small_labels = bank[:50], labels[:50]  # N <= k + margin: exact path only
    found = nearest_neighbours(small, queries, 50, 1024, 16384)
    assert found.num_exact == len(queries)
    assert torch.equal(found.indices, _naive(small, queries, 50)[1])
    votes = knn_predict(small, small_labels, queries, k=200, num_classes=6)  # k clipped to N = 50
    torch.testing.assert_close(votes, knn_predict(small, small_labels, queries, k=50, num_classes=6))
    result = knn_classify(small, small_labels, queries, torch.zeros(len(queries), dtype=torch.long), k=100, ks=(10,))
    assert sorted(result.per_k) == [10, 50]
    with pytest.raises(ValueError, match=r"1 <= k <= 50 and margin >= 0, got k=51"):
        nearest_neighbours(small, queries, 51, 1024, 16384)


def test_predictions_equal_the_fp32_matmul_topk_method_on_clustered_data() -> None:
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(10, 48, generator=generator)
    labels = torch.arange(2000) % 10
    bank = centres[labels] + 0.8 * torch.randn(2000, 48, generator=generator)
    queries = centres[torch.arange(300) % 10] + 0.8 * torch.randn(300, 48, generator=generator)
    sims = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T  # fp32, as DINO's knn_classifier
    top, indices = sims.topk(20, dim=1)
    votes = torch.zeros(300, 10).scatter_add_(1, labels[indices], (top / 0.07).exp())
    ours = knn_predict(bank, labels, queries, k=20, num_classes=10)
    assert torch.equal(ours.argmax(dim=1), votes.argmax(dim=1))
    torch.testing.assert_close(ours, votes, rtol=1e-5, atol=0)
