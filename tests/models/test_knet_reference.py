"""K-Net kernel update stage against MMSegmentation: `KernelUpdateStage`, given the weights of MMSeg's
`KernelUpdateHead`, must reproduce its new mask logits and new kernels on the same inputs.

The numbers are in `reference/knet_stage_mmseg.npz`, made by running MMSeg's own code with
`reference/make_knet_reference.py` in MMSeg's venv; that script's docstring gives the settings, the
versions are in the file's `versions`, and its `MMSEG_TO_OURS` maps MMSeg's parameter names to ours.
Case 0 has an updator as wide as the kernels, case 1 a narrower one (kernels updated in groups, as in
MMSeg's K-Net configs). A swapped pair of gate LayerNorms must break the match, so the comparison can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from pretrainlab.models.layers.kernel_update import KernelUpdateStage

REFERENCE = Path(__file__).resolve().parent / "reference" / "knet_stage_mmseg.npz"
N_CASES = 2


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {key: z[key] for key in z.files}


def case_stage(z: dict[str, np.ndarray], i: int) -> tuple[KernelUpdateStage, dict[str, Tensor]]:
    """Our stage with case i's widths, and MMSeg's weights under our state_dict keys."""
    width = {name: int(z[f"case{i}/{name}"]) for name in ("num_heads", "ffn_dim", "updator_dim", "num_mask_fcs")}
    stage = KernelUpdateStage(int(z[f"case{i}/dim"]), **width).eval()
    prefix = f"case{i}/weights/"
    state = {key[len(prefix) :]: torch.from_numpy(value) for key, value in z.items() if key.startswith(prefix)}
    return stage, state


def run_stage(stage: KernelUpdateStage, z: dict[str, np.ndarray], i: int) -> tuple[Tensor, Tensor]:
    inputs = (torch.from_numpy(z[f"case{i}/{name}"]) for name in ("features", "kernels", "mask_logits"))
    with torch.no_grad():
        return stage(*inputs)  # (B, K, H, W), (B, K, C)


def max_difference(outputs: tuple[Tensor, Tensor], z: dict[str, np.ndarray], i: int) -> float:
    expected = (z[f"case{i}/new_mask_logits"], z[f"case{i}/new_kernels"])
    return max(float(np.abs(ours.numpy() - theirs).max()) for ours, theirs in zip(outputs, expected))


def test_reference_file_has_every_case(reference: dict[str, np.ndarray]) -> None:
    assert int(reference["n_cases"]) == N_CASES
    assert any(v.startswith("mmsegmentation ") for v in reference["versions"]), reference["versions"]


@pytest.mark.reference
@pytest.mark.parametrize("i", range(N_CASES))
def test_stage_matches_mmseg_kernel_update_head(reference: dict[str, np.ndarray], i: int) -> None:
    stage, state = case_stage(reference, i)
    stage.load_state_dict(state, strict=True)
    for ours, name in zip(run_stage(stage, reference, i), ("new_mask_logits", "new_kernels")):
        torch.testing.assert_close(ours, torch.from_numpy(reference[f"case{i}/{name}"]), atol=1e-5, rtol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("i", range(N_CASES))
def test_swapped_gate_layernorms_break_the_match(reference: dict[str, np.ndarray], i: int) -> None:
    """MMSeg's `norm_in` / `input_norm_in` mapped the other way round (a plausible naming slip) must show."""
    stage, state = case_stage(reference, i)
    for param in ("weight", "bias"):
        update, gate = f"updator.norm_update_gate.{param}", f"updator.norm_input_gate.{param}"
        state[update], state[gate] = state[gate], state[update]
    stage.load_state_dict(state, strict=True)
    assert max_difference(run_stage(stage, reference, i), reference, i) > 1e-2
