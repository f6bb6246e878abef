"""Exact k-nearest-neighbour search by cosine similarity, screened with a bf16 matmul.

The similarity of a query q and a bank row b is the dot product of their fp32 L2-normalised
features, evaluated in float64 ("exact score", e); the k neighbours of a query are the first k
rows in the order (e descending, bank index ascending), so exact ties go to the lower index and
the result depends on the data alone.

Exact path (`exact_neighbours`): e for every (query, row) pair by a float64 matmul, top k.

Fast path (CPU), for each block of queries:

1. Screening scores from one bf16 matmul, which multiplies exactly, accumulates in fp32 and
   rounds its output to bf16 (torch has no fp32 output for it on CPU); 4-6x the fp32 matmul's
   speed with AVX512-BF16 or AMX. Each query gets a shift c_q (about its (5 c)-th largest score,
   estimated from N / (4 k) bank rows drawn at random once) as one more component (-c_q against a
   component 1 of every row), so the matmul returns s' ~ q . b - c_q: small near the k-th
   neighbour, where its bf16 rounding matters. Screening score s~ = s' + c_q.
2. Candidates: the c = k + margin rows of largest s~. The scores are compared as the int16 bit
   patterns of the bf16 values ("codes", 3x faster to reduce than bf16), which order as s' for
   s' >= 0 (the ~5 c largest scores) and are negative for every s' < 0. The codes are viewed as
   groups of 32 columns n / 32 apart (column j = r * G + g is in group g); the groups are ranked
   by their maximum and only the best c groups are searched, so no top-k runs over a whole row.
   The largest code left out anywhere (outside the best groups, below the c-th, or dropped when two
   bank chunks' candidates merge) gives x: its s', or 0 if it is negative (every negative code has
   s' <= 0, so 0 bounds what was left out).
3. Exact re-ranking of the candidates that can still be neighbours (a prefix of them, below):
   e in float64, first k in the order above; queries needing similar prefixes go together.

Why it is exact. Let u = 2^-8 (bf16 unit roundoff), q^ = bf16(q) = q + dq, b^ = b + db. Then
    q^ . b^ - q . b = dq . b + q . db + dq . db,
and Cauchy-Schwarz bounds each term by the product of norms (|dq . b| <= |dq| |b|, ...), with
|dq| <= u |q| always and about 0.4 u |q| in practice. The products of bf16 numbers (and -c_q x 1)
are exact in fp32 and their sum, in any order, errs by at most gamma_{D+1} (|q^| |b^| + |c_q|)
(gamma_n = n v / (1 - n v), v = 2^-24); e errs by at most gamma64_D |q| |b| (v = 2^-53); rounding
the output to bf16 moves s' by at most u |s'| (round to nearest: s'_exact = s' (1 + d), |d| <= u).
So for every row
    |s~ - e| <= eps_q + u |s'|,
    eps_q = |dq| B + |q| dB + |dq| dB + gamma_{D+1} ((|q| + |dq|)(B + dB) + |c_q|) + gamma64_D |q| B
with B, dB the largest |b|, |db| over the bank (`_screening_error_bound`; norms inflated to cover
their own rounding): eps_q is about 0.9 u ~ 0.0035 for D = 384. Hence e_j lies in
[lo(s~_j), hi(s~_j)], lo(s) = s - eps_q - u |s - c_q|, hi(s) = s + eps_q + u |s - c_q|, both
increasing in s. At least k rows have e >= lo(s~_(k)) (s~_(k): the k-th largest screening score),
so the k-th largest exact score is >= lo(s~_(k)), and every neighbour j has
hi(s~_j) >= lo(s~_(k)). The candidates' k-th largest screening score t is <= s~_(k) (its code must
be non-negative, so that the candidates' order is that of s~ up to it). If hi(x + c_q) < lo(t),
every row outside the candidates has hi(s~) < lo(s~_(k)) and is no neighbour: the
candidates contain all k neighbours, and so does their prefix with hi(s~) >= lo(t); re-ranking it
by e gives exactly the exact path's answer. A query whose proof fails (more than c rows within
about 2 eps_q of the k-th) is screened again with 4 c candidates, and if that fails too (e.g. many
duplicates), answered by the exact path.

Exact scores are float64 in both paths (a matmul there, gathered dot products here); they agree
to ~1e-16, so the two paths give the same neighbours unless two distinct rows' similarities to a
query differ by less than ~1e-13 at the k-th place. Identical rows get identical scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrainlab.precision import has_fast_bf16

logger = logging.getLogger(__name__)

BF16_UNIT_ROUNDOFF = 2.0**-8
FP32_UNIT_ROUNDOFF = 2.0**-24
FP64_UNIT_ROUNDOFF = 2.0**-53
GROUP_SIZE = 32  # screening columns per group (step 2); also the multiple the bank is padded to
DEFAULT_MARGIN = 44  # candidates beyond k (k = 20 -> 64 rows screened per query)
RETRY_FACTOR = 4  # a query whose proof fails is screened again with this many times the candidates
SHIFT_SAMPLE = 4  # the shift c_q is estimated from N / (4 k) random bank rows ...
SHIFT_SAMPLE_MIN = 64  # ... and at least 64, ...
SHIFT_POSITIVES = 5  # ... as the score ranked 5 c over the bank: about 5 c scores have s' >= 0
RERANK_BLOCK = 64  # queries re-ranked together (sorted by how many candidates they need)
_NORM_CHUNK = 4096  # bank rows per step of the norm computation
_NORM_SLACK = 1 + 2.0**-10  # covers the rounding of the norms the bound is made of and of its float64 arithmetic
_NOTHING_LEFT_OUT = -(2**15)  # the smallest int16 code


@dataclass(frozen=True)
class Neighbours:
    """The k nearest bank rows of each query, most similar first."""

    sims: Tensor  # (M, k) float32 cosine similarities
    indices: Tensor  # (M, k) int64 bank rows
    num_retried: int  # queries screened a second time with RETRY_FACTOR times the candidates
    num_exact: int  # queries answered by the exact path (all of them when the fast path does not apply)


def _gamma(n: int, unit_roundoff: float) -> float:
    """Higham's gamma_n: the relative error bound of a sum of n + 1 terms in any order."""
    return n * unit_roundoff / (1 - n * unit_roundoff)


def _screening_error_bound(
    query_norm: Tensor, query_residual: Tensor, shift: Tensor, bank_norm: float, bank_residual: float, dim: int
) -> Tensor:
    """eps_q of the module docstring: (m,) float64 bounds on |s~ - e| - u |s'| over every bank row.

    Args:
        query_norm: (m,) |q| of the fp32 queries.
        query_residual: (m,) |bf16(q) - q|.
        shift: (m,) c_q.
        bank_norm: largest |b| over the bank.
        bank_residual: largest |bf16(b) - b| over the bank.
        dim: D, the number of feature products summed (the shift adds one more).
    """
    q, dq = query_norm.double() * _NORM_SLACK, query_residual.double() * _NORM_SLACK
    b, db = bank_norm * _NORM_SLACK, bank_residual * _NORM_SLACK
    rounding = dq * b + q * db + dq * db
    accumulation = _gamma(dim + 1, FP32_UNIT_ROUNDOFF) * ((q + dq) * (b + db) + shift.double().abs())
    flushed = 2 * (dim + 1) * 2.0**-126  # bf16 kernels flush fp32 subnormal products and sums to zero
    exact = _gamma(dim, FP64_UNIT_ROUNDOFF) * q * b
    return (rounding + accumulation + flushed + exact) * _NORM_SLACK


def _row_norms(rows: Tensor, rounded: Tensor) -> tuple[Tensor, Tensor]:
    """(n,) |rows| and |bf16(rows) - rows| (the difference is exact in fp32: both within a factor 2)."""
    return rows.norm(dim=1), (rounded.float() - rows).norm(dim=1)


def _exact_scores(queries: Tensor, rows: Tensor) -> Tensor:
    """(m, c) float64 dot products of (m, D) fp32 queries with their (m, c, D) fp32 candidate rows."""
    return torch.bmm(rows.double(), queries.double()[:, :, None])[:, :, 0]


def select_top_k(scores: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """First k of each row of (m, c) `scores` with bank `indices` in the order (score desc, index asc)."""
    by_index = indices.argsort(dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), indices.gather(1, order)


def _top_k_block(scores: Tensor, k: int, offset: int) -> tuple[Tensor, Tensor]:
    """First k columns of each row of (m, n) exact scores in the order (score desc, index asc); rows whose
    k-th score is tied with a column `topk` left out are sorted in full."""
    values, columns = scores.topk(k, dim=1)  # (m, k), any of the tied columns
    boundary = values[:, -1:]
    unresolved = (scores == boundary).sum(dim=1) > (values == boundary).sum(dim=1)
    if bool(unresolved.any()):
        order = scores[unresolved].sort(dim=1, descending=True, stable=True)  # stable: lower columns first
        values[unresolved], columns[unresolved] = order.values[:, :k], order.indices[:, :k]
    return values, columns + offset


@torch.no_grad()
def exact_neighbours(
    train: Tensor, test: Tensor, k: int, chunk_size: int, train_chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Exact path: (M, k) float64 exact scores and int64 indices of normalised (N, D) `train`, (M, D) `test`."""
    all_scores, all_indices = [], []
    for query in test.double().split(chunk_size):
        best_scores = query.new_empty((query.shape[0], 0))
        best_indices = torch.empty((query.shape[0], 0), dtype=torch.int64, device=query.device)
        for start in range(0, train.shape[0], train_chunk_size):
            block = query @ train[start : start + train_chunk_size].double().T  # (m, n)
            scores, indices = _top_k_block(block, min(k, block.shape[1]), start)
            merged = (torch.cat([best_scores, scores], dim=1), torch.cat([best_indices, indices], dim=1))
            best_scores, best_indices = select_top_k(*merged, min(k, merged[0].shape[1]))
        all_scores.append(best_scores)
        all_indices.append(best_indices)
    return torch.cat(all_scores), torch.cat(all_indices)


def _keep_best(codes: Tensor, columns: Tensor, left_out: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The `count` largest of (m, n) int16 codes (descending) with their columns, and the largest code left
    out so far."""
    kept = min(count, codes.shape[1])
    top = codes.topk(min(kept + 1, codes.shape[1]), dim=1)
    if kept < codes.shape[1]:
        left_out = torch.maximum(left_out, top.values[:, kept])
    return top.values[:, :kept], columns.gather(1, top.indices[:, :kept]), left_out


def _screen(codes: Tensor, num_candidates: int) -> tuple[Tensor, Tensor, Tensor]:
    """Step 2 on one (m, n) block of screening codes (`_Bank.screening_codes`), n a multiple of `GROUP_SIZE`:
    the c largest codes (m, c) descending, their columns (m, c) and the largest code left out (m,)."""
    m, n = codes.shape
    num_groups = n // GROUP_SIZE
    grouped = codes.view(m, GROUP_SIZE, num_groups)  # column r * G + g -> [r, g]
    num_selected = min(num_candidates, num_groups)
    groups = grouped.amax(dim=1).topk(min(num_selected + 1, num_groups), dim=1)  # (m, <= P + 1)
    left_out = torch.full((m,), _NOTHING_LEFT_OUT, dtype=codes.dtype, device=codes.device)
    if num_selected < num_groups:
        left_out = groups.values[:, num_selected]
    selected = groups.indices[:, :num_selected]  # (m, P)
    members = grouped.gather(2, selected[:, None, :].expand(m, GROUP_SIZE, num_selected))  # (m, R, P)
    rows = torch.arange(GROUP_SIZE, device=codes.device)[None, :, None] * num_groups
    columns = (rows + selected[:, None, :]).reshape(m, -1)  # (m, R * P)
    return _keep_best(members.reshape(m, -1), columns, left_out, num_candidates)


class _Bank:
    """The normalised bank in bf16 with a last component 1 (for the shift), zero-padded to a multiple of
    `GROUP_SIZE` in both dimensions and read in chunks of such multiples; the largest |b| and
    |bf16(b) - b| of its rows; the rows the shifts are taken from."""

    def __init__(self, train: Tensor, train_chunk_size: int, k: int) -> None:
        self.num_rows, self.dim = train.shape
        self.chunk_size = max(GROUP_SIZE, train_chunk_size // GROUP_SIZE * GROUP_SIZE)
        padded_rows = -(-self.num_rows // GROUP_SIZE) * GROUP_SIZE
        self.width = -(-(self.dim + 1) // GROUP_SIZE) * GROUP_SIZE  # K a multiple of 32 suits AMX tiles
        self.bf16 = torch.empty((padded_rows, self.width), dtype=torch.bfloat16, device=train.device)
        self.bf16[self.num_rows :] = 0
        self.bf16[: self.num_rows, self.dim] = 1
        self.bf16[: self.num_rows, self.dim + 1 :] = 0
        norm_max, residual_max = 0.0, 0.0
        for start in range(0, self.num_rows, _NORM_CHUNK):  # small chunks: the residuals stay in cache
            rows = train[start : start + _NORM_CHUNK]
            rounded = self.bf16[start : start + rows.shape[0], : self.dim]
            rounded.copy_(rows)
            norms, residuals = _row_norms(rows, rounded)
            norm_max, residual_max = max(norm_max, float(norms.max())), max(residual_max, float(residuals.max()))
        self.norm_max, self.residual_max = norm_max, residual_max
        # a fixed pseudo-random sample: evenly strided rows can alias with a periodic order of the classes
        generator = torch.Generator().manual_seed(0)
        size = min(self.num_rows, max(SHIFT_SAMPLE_MIN, self.num_rows // (SHIFT_SAMPLE * k)))
        self.sample = self.bf16[torch.randperm(self.num_rows, generator=generator)[:size].to(train.device)]  # (S, K)

    def shifted_queries(self, query: Tensor, num_candidates: int) -> tuple[Tensor, Tensor, Tensor]:
        """(m, K) bf16 queries with their last component -c_q, (m,) c_q, and (m,) |bf16(q) - q| of the
        (m, D) fp32 `query`. c_q: the score of rank SHIFT_POSITIVES x num_candidates expected over the bank,
        estimated from the sample."""
        shifted = torch.zeros((query.shape[0], self.width), dtype=torch.bfloat16, device=query.device)
        rounded = shifted[:, : self.dim]
        rounded.copy_(query)
        size = self.sample.shape[0]
        rank = min(size, -(-SHIFT_POSITIVES * num_candidates * size // self.num_rows))
        shift = (shifted @ self.sample.T).topk(rank, dim=1).values[:, -1]  # (m,) bf16, so -c_q is exact
        shifted[:, self.dim] = -shift
        return shifted, shift.double(), (rounded.float() - query).norm(dim=1)

    def screening_codes(self, shifted: Tensor, start: int) -> Tensor:
        """(m, n) int16 codes of the bf16 shifted scores s' of the chunk at `start` (the same bits): for
        s' >= 0 the code orders as s' does; every negative s' (and padding) has a negative code."""
        chunk = self.bf16[start : start + self.chunk_size]
        codes = (shifted @ chunk.T).view(torch.int16)
        if start + chunk.shape[0] > self.num_rows:
            codes[:, self.num_rows - start :] = _NOTHING_LEFT_OUT
        return codes


def _decode(codes: Tensor) -> Tensor:
    """float64 s' of int16 codes, with every negative code read as 0: an upper bound of its s' (<= 0)."""
    return codes.clamp(min=0).view(torch.bfloat16).double()


def _fast_block(
    train: Tensor, bank: _Bank, query: Tensor, k: int, num_candidates: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast path on (m, D) normalised queries: (m, k) exact scores, indices and the (m,) mask of the queries
    whose answer is proven exact (the others' rows are meaningless)."""
    shifted, shift, query_residual = bank.shifted_queries(query, num_candidates)
    eps = _screening_error_bound(query.norm(dim=1), query_residual, shift, bank.norm_max, bank.residual_max,
                                 bank.dim)[:, None]  # fmt: skip
    best: tuple[Tensor, Tensor, Tensor] | None = None
    for start in range(0, bank.bf16.shape[0], bank.chunk_size):
        codes, columns, left_out = _screen(bank.screening_codes(shifted, start), num_candidates)
        if best is None:
            best = (codes, columns + start, left_out)
        else:  # merge with the previous chunks' candidates
            merged = (torch.cat([best[0], codes], dim=1), torch.cat([best[1], columns + start], dim=1))
            best = _keep_best(*merged, torch.maximum(best[2], left_out), num_candidates)
    assert best is not None
    codes, candidates, left_out = best  # (m, c) descending codes, (m, c), (m,)
    values, u, shift = _decode(codes), BF16_UNIT_ROUNDOFF, shift[:, None]  # s' of the non-negative codes
    lowest = values[:, k - 1 : k] + shift - eps - u * values[:, k - 1 : k]  # lo(t): (m, 1)
    reach = values + shift + eps + u * values  # hi(s~) of every candidate with s' >= 0: (m, c)
    left_value = _decode(left_out)[:, None]  # >= the s' of everything left out
    proven = (left_value + shift + eps + u * left_value < lowest)[:, 0] & (codes[:, k - 1] >= 0)  # (m,)
    needed = torch.where(proven, (reach >= lowest).sum(dim=1), k)  # a proven query's later candidates: no neighbours
    candidates = candidates.clamp(max=bank.num_rows - 1)  # padding columns only reach unproven queries
    scores = torch.empty((len(query), k), dtype=torch.float64, device=query.device)
    indices = torch.empty((len(query), k), dtype=torch.int64, device=query.device)
    for part in needed.argsort().split(RERANK_BLOCK):  # queries needing similar prefixes re-ranked together
        prefix = int(needed[part].max())
        rows = train.index_select(0, candidates[part, :prefix].reshape(-1)).view(len(part), prefix, -1)
        scores[part], indices[part] = select_top_k(_exact_scores(query[part], rows), candidates[part, :prefix], k)
    return scores, indices, proven


@torch.no_grad()
def nearest_neighbours(
    train_features: Tensor,
    test_features: Tensor,
    k: int,
    chunk_size: int,
    train_chunk_size: int,
    *,
    margin: int = DEFAULT_MARGIN,
) -> Neighbours:
    """The k most cosine-similar bank rows of every query, exactly (see the module docstring).

    Memory: the score block held at once takes at most chunk_size x train_chunk_size x 4 bytes (as one fp32
    block would): the fast path holds bf16 scores of chunk_size / 2 queries x 4 train_chunk_size bank rows
    (fewer, longer rows: fewer top-k calls), the exact path float64 scores of chunk_size / 2 queries x
    train_chunk_size rows.

    Args:
        train_features: (N, D) bank features, normalised inside.
        test_features: (M, D) query features, normalised inside.
        k: neighbours per query, 1 <= k <= N.
        chunk_size: queries per block, see Memory.
        train_chunk_size: bank rows per block, see Memory (the fast path rounds to a multiple of 32).
        margin: candidates screened beyond k on the fast path (RETRY_FACTOR times as many on the second
            try).
    """
    if chunk_size < 1 or train_chunk_size < 1:
        raise ValueError(f"chunk sizes must be >= 1, got chunk_size={chunk_size}, train_chunk_size={train_chunk_size}")
    if not 1 <= k <= train_features.shape[0] or margin < 0:
        raise ValueError(f"expected 1 <= k <= {train_features.shape[0]} and margin >= 0, got k={k}, margin={margin}")
    train = F.normalize(train_features.float(), dim=1)  # (N, D)
    test = F.normalize(test_features.float(), dim=1)  # (M, D)
    queries_per_block = max(1, chunk_size // 2)
    scores = torch.empty((test.shape[0], k), dtype=torch.float64, device=test.device)
    indices = torch.empty((test.shape[0], k), dtype=torch.int64, device=test.device)
    pending = torch.arange(test.shape[0], device=test.device)  # queries without a proven answer
    attempts = [count for count in (k + margin, RETRY_FACTOR * (k + margin)) if count < train.shape[0]]
    num_retried = 0
    # bf16 matmuls elsewhere may reduce in bf16, outside the bound; a CPU without bf16 kernels screens slower
    # than the exact path computes (pretrainlab.precision)
    if attempts and test.device.type == "cpu" and has_fast_bf16("cpu"):
        bank = _Bank(train, 4 * train_chunk_size, k)
        for attempt, num_candidates in enumerate(attempts):
            if len(pending) == 0:
                break
            num_retried = len(pending) if attempt > 0 else 0
            found = [_fast_block(train, bank, test[ids], k, num_candidates) for ids in pending.split(queries_per_block)]
            block_scores, block_indices, proven = (torch.cat(parts) for parts in zip(*found))
            scores[pending[proven]], indices[pending[proven]] = block_scores[proven], block_indices[proven]
            pending = pending[~proven]
    if len(pending) > 0:
        scores[pending], indices[pending] = exact_neighbours(train, test[pending], k, queries_per_block,
                                                             train_chunk_size)  # fmt: skip
    logger.debug("kNN: %d queries, %d screened again, %d exact", len(test), num_retried, len(pending))
    return Neighbours(scores.float(), indices, num_retried, len(pending))
