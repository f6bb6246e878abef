"""MAE patchify, random masking and loss: reference numbers from facebookresearch/mae `models_mae.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_reference

from pretrainlab.losses.mae import mae_loss, patchify, random_masking, unpatchify
from pretrainlab.models.layers.pos_embed import sincos_2d


def masking_cases(z: np.lib.npyio.NpzFile) -> list[int]:
    return sorted(int(key.split("/")[0][len("masking") :]) for key in z.files if key.endswith("/noise"))


@pytest.mark.reference
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_patchify_and_loss_match_reference(dtype: torch.dtype) -> None:
    z = load_reference("mae")
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    for i in range(int(z["n_cases"])):
        images = torch.tensor(z[f"case{i}/imgs"], dtype=dtype)
        patch = int(z[f"case{i}/patch_size"])
        target = patchify(images, patch)
        label = f"case{i} {tuple(images.shape)} p={patch}"
        np.testing.assert_array_equal(target.numpy(), z[f"case{i}/target_patchified"].astype(target.numpy().dtype),
                                      err_msg=label)  # fmt: skip
        grid = (images.shape[2] // patch, images.shape[3] // patch)
        assert torch.equal(unpatchify(target, patch, grid), images), label
        pred, mask = torch.tensor(z[f"case{i}/pred"], dtype=dtype), torch.tensor(z[f"case{i}/mask"], dtype=dtype)
        for norm_pix, key in ((False, "loss_raw"), (True, "loss_norm_pix")):
            loss = mae_loss(pred, target, mask, norm_pix_loss=norm_pix)
            np.testing.assert_allclose(loss.item(), float(z[f"case{i}/{key}"]), rtol=rtol, err_msg=f"{label} {key}")


@pytest.mark.reference
def test_random_masking_matches_reference() -> None:
    z = load_reference("mae")
    cases = masking_cases(z)
    assert cases, "mae.npz holds no masking cases"
    for i in cases:
        noise = torch.tensor(z[f"masking{i}/noise"])
        result = random_masking(noise, float(z[f"masking{i}/mask_ratio"]))
        assert result.ids_keep.shape[1] == int(z[f"masking{i}/len_keep"])
        np.testing.assert_array_equal(result.ids_keep.numpy(), z[f"masking{i}/ids_keep"], err_msg=f"masking{i}")
        np.testing.assert_array_equal(result.ids_restore.numpy(), z[f"masking{i}/ids_restore"], err_msg=f"masking{i}")
        np.testing.assert_array_equal(result.mask.numpy(), z[f"masking{i}/mask"], err_msg=f"masking{i}")


def test_loss_counts_only_removed_patches_with_unbiased_norm() -> None:
    target = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])  # (B=1, L=2, D=2)
    pred = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[1.0, 0.0]])  # only patch 0 is scored
    assert mae_loss(pred, target, mask, norm_pix_loss=False).item() == pytest.approx((1 + 9) / 2)
    # patch 0 standardised: mean 2, unbiased var 2 -> (-1, 1) / sqrt(2 + 1e-6)
    expected = ((1 / np.sqrt(2 + 1e-6)) ** 2 * 2) / 2
    assert mae_loss(pred, target, mask, norm_pix_loss=True).item() == pytest.approx(expected, rel=1e-6)


def test_sincos_matches_the_release_formula() -> None:
    """Written out from MAE's util/pos_embed.py: first half encodes the column, second the row."""
    dim, rows, cols = 16, 3, 4
    embedding = sincos_2d(dim, (rows, cols), cls_token=True)[0].double()
    assert embedding.shape == (1 + rows * cols, dim) and torch.equal(embedding[0], torch.zeros(dim))
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    for row in range(rows):
        for col in range(cols):
            expected = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
            np.testing.assert_allclose(embedding[1 + row * cols + col].numpy(), expected, atol=1e-7)
