"""DINO loss: reference numbers from facebookresearch/dino `DINOLoss`, hand cases, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_reference

from pretrainlab.losses.dino import DINOLoss, dino_loss, teacher_probabilities


def _case(z: np.lib.npyio.NpzFile, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: z[key] for key in z.files if key.startswith(prefix)}


def _run_reference_case(case: dict[str, np.ndarray], dtype: torch.dtype) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, grad wrt student and center after the update, computed with `DINOLoss`."""
    module = DINOLoss(
        int(case["out_dim"]), student_temp=float(case["student_temp"]), center_momentum=float(case["center_momentum"])
    ).to(dtype)
    module.center.copy_(torch.from_numpy(case["center_in"]))
    student = torch.tensor(case["student_output"], dtype=dtype, requires_grad=True)
    teacher = torch.tensor(case["teacher_output"], dtype=dtype)
    loss = module(student, teacher, float(case["teacher_temp"]))
    loss.backward()
    module.update_center(teacher)
    return loss.item(), student.grad.double().numpy(), module.center.double().numpy()


@pytest.mark.reference
@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.float64, 1e-9, 1e-12), (torch.float32, 1e-5, 1e-6)])
def test_matches_reference_cases(dtype: torch.dtype, rtol: float, atol: float) -> None:
    z = load_reference("dino_loss")
    for i in range(int(z["n_cases"])):
        case = _case(z, f"case{i}/")
        loss, grad, center = _run_reference_case(case, dtype)
        np.testing.assert_allclose(loss, float(case["loss"]), rtol=rtol, atol=atol, err_msg=f"case{i} loss")
        np.testing.assert_allclose(grad, case["grad_student"], rtol=rtol, atol=atol, err_msg=f"case{i} grad")
        np.testing.assert_allclose(center, case["center_out"], rtol=rtol, atol=atol, err_msg=f"case{i} center")


@pytest.mark.reference
def test_pure_function_matches_reference() -> None:
    z = load_reference("dino_loss")
    for i in range(int(z["n_cases"])):
        case = _case(z, f"case{i}/")
        loss = dino_loss(
            torch.from_numpy(case["student_output"]),
            torch.from_numpy(case["teacher_output"]),
            torch.from_numpy(case["center_in"]),
            student_temp=float(case["student_temp"]),
            teacher_temp=float(case["teacher_temp"]),
        )
        np.testing.assert_allclose(float(loss), float(case["loss"]), rtol=1e-9, atol=1e-12, err_msg=f"case{i}")


@pytest.mark.reference
def test_sequence_carries_center_over() -> None:
    z = load_reference("dino_loss")
    seq = _case(z, "seq/")
    module = DINOLoss(
        int(seq["out_dim"]), student_temp=float(seq["student_temp"]), center_momentum=float(seq["center_momentum"])
    ).double()
    module.center.copy_(torch.from_numpy(seq["center_in"]))
    for step in (0, 1):
        teacher = torch.from_numpy(seq[f"step{step}/teacher_output"])
        loss = module(torch.from_numpy(seq[f"step{step}/student_output"]), teacher, float(seq["teacher_temp"]))
        module.update_center(teacher)
        np.testing.assert_allclose(float(loss), float(seq[f"step{step}/loss"]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(module.center.numpy(), seq[f"step{step}/center_out"], rtol=1e-9, atol=1e-12)


def test_uniform_teacher_and_student_give_log_k() -> None:
    num_classes, batch, num_crops = 16, 3, 4
    loss = dino_loss(
        torch.zeros(num_crops * batch, num_classes),
        torch.full((2 * batch, num_classes), 5.0),
        torch.full((1, num_classes), 5.0),
        student_temp=0.1,
        teacher_temp=0.04,
    )
    assert float(loss) == pytest.approx(math.log(num_classes), rel=1e-6)


def test_general_global_crop_count_matches_naive_loop() -> None:
    num_global, num_crops, batch, out_dim = 3, 5, 2, 6
    student = torch.randn(num_crops * batch, out_dim, dtype=torch.float64)
    teacher = torch.randn(num_global * batch, out_dim, dtype=torch.float64)
    center = torch.randn(1, out_dim, dtype=torch.float64)
    q = teacher_probabilities(teacher, center, 0.05).chunk(num_global)
    log_p = F.log_softmax(student / 0.2, dim=-1).chunk(num_crops)
    terms = [(-q[g] * log_p[v]).sum(-1).mean() for g in range(num_global) for v in range(num_crops) if v != g]
    expected = torch.stack(terms).mean()
    loss = dino_loss(student, teacher, center, student_temp=0.2, teacher_temp=0.05, num_global=num_global)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_forward_does_not_change_center_and_update_is_ema() -> None:
    module = DINOLoss(4, center_momentum=0.9)
    teacher = torch.arange(8.0).view(2, 4)
    module(torch.randn(6, 4), teacher, 0.04)
    assert torch.equal(module.center, torch.zeros(1, 4))
    module.update_center(teacher)
    torch.testing.assert_close(module.center, 0.1 * torch.tensor([[2.0, 3.0, 4.0, 5.0]]))


def test_teacher_has_no_gradient() -> None:
    teacher = torch.randn(4, 8, requires_grad=True)
    student = torch.randn(8, 8, requires_grad=True)
    loss = dino_loss(student, teacher, torch.zeros(1, 8), student_temp=0.1, teacher_temp=0.04)
    loss.backward()
    assert teacher.grad is None


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "center_shape", "message"),
    [
        ((8, 5), (4, 6), (1, 5), r"K must agree.*\(8, 5\).*\(4, 6\)"),
        ((8, 5), (4, 5), (5,), r"center \(5,\)"),
        ((8, 5), (5, 5), (1, 5), r"5 rows, expected a positive multiple of num_global=2"),
        ((7, 5), (4, 5), (1, 5), r"7 rows, expected a multiple of the batch size B=2"),
        ((2, 5), (4, 5), (1, 5), r"1 crops of B=2"),
        ((8,), (4, 5), (1, 5), r"student_logits \(8,\)"),
    ],
)
def test_bad_shapes_raise(student_shape, teacher_shape, center_shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        dino_loss(
            torch.zeros(student_shape),
            torch.zeros(teacher_shape),
            torch.zeros(center_shape),
            student_temp=0.1,
            teacher_temp=0.04,
        )


def test_bad_temperatures_and_update_shape_raise() -> None:
    with pytest.raises(ValueError, match="teacher_temp must be > 0, got 0"):
        dino_loss(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(1, 3), student_temp=0.1, teacher_temp=0)
    with pytest.raises(ValueError, match="student_temp must be > 0, got -1"):
        dino_loss(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(1, 3), student_temp=-1, teacher_temp=0.04)
    with pytest.raises(ValueError, match=r"expected teacher_logits \(N, 3\), got \(2, 4\)"):
        DINOLoss(3).update_center(torch.zeros(2, 4))
