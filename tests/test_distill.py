"""Tests of ppdgm.training.distill: probability density distillation of a MAF teacher into an
IAF."""

from __future__ import annotations

import pytest
import torch

from ppdgm.models import IAF, MAF, RealNVP
from ppdgm.training.distill import distill, reverse_kl
from ppdgm.transforms import autoregressive

GRID = torch.linspace(-7.0, 7.0, 281, dtype=torch.float64)


def teacher_and_student(seed: int = 0) -> tuple[MAF, IAF]:
    """A MAF teacher moved well away from a Gaussian, and a fresh IAF student, in float64."""
    torch.manual_seed(seed)
    teacher, student = MAF(2, [16], num_layers=2).double(), IAF(2, [16], num_layers=2).double()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.25 * torch.randn_like(p))
    return teacher, student


def kl_by_quadrature(q: torch.nn.Module, p: torch.nn.Module) -> float:
    """``KL(q || p) = int q (log q - log p)`` by the trapezoid rule on a 2-D grid: the student's
    density there comes from its sequential inverse, not from its samples."""
    points = torch.cartesian_prod(GRID, GRID)
    with torch.no_grad():
        log_q, log_p = q.log_prob(points), p.log_prob(points)
    integrand = (log_q.exp() * (log_q - log_p)).reshape(len(GRID), len(GRID))
    return float(torch.trapezoid(torch.trapezoid(integrand, GRID, dim=1), GRID))


def test_distillation_lowers_the_kl_measured_by_quadrature() -> None:
    teacher, student = teacher_and_student()
    before = kl_by_quadrature(student, teacher)
    weights = [p.detach().clone() for p in teacher.parameters()]
    result = distill(teacher, student, steps=400, num_samples=256, lr=3e-3, progress=False)
    after = kl_by_quadrature(student, teacher)
    assert before > 0.5
    assert after < 0.03 and after < before / 20
    # the training estimate is the same divergence: its last values agree with quadrature
    assert len(result.kl) == 400 and result.seconds > 0
    assert abs(sum(result.kl[-50:]) / 50 - after) < 0.02
    with torch.no_grad():
        gap = reverse_kl(teacher, student, 20_000)
    assert abs(float(gap.mean()) - after) < 4 * float(gap.std()) / 20_000**0.5 + 1e-3
    # the teacher is untouched and trainable again
    assert all(torch.equal(a, b) for a, b in zip(weights, teacher.parameters(), strict=True))
    assert all(p.requires_grad and p.grad is None for p in teacher.parameters())


def test_each_step_is_one_pass_of_each_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = teacher_and_student()
    passes = {"teacher": 0, "student": 0}
    for layer in teacher.flow.parts:  # Inverse(AffineAutoregressive): MADE scores in one pass
        layer.base.arn.register_forward_hook(
            lambda *_: passes.update(teacher=passes["teacher"] + 1)
        )
    for layer in student.flow.parts:
        layer.arn.register_forward_hook(lambda *_: passes.update(student=passes["student"] + 1))

    def sequential(*args: object) -> None:
        raise AssertionError("a d-pass inversion ran")

    monkeypatch.setattr(autoregressive._AffineAutoregressive, "_inverse", sequential)
    distill(teacher, student, steps=3, num_samples=32, progress=False)
    assert passes == {"teacher": 3 * 2, "student": 3 * 2}  # one MADE pass per layer and step


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        teacher, student = teacher_and_student(seed=1)
        runs.append(distill(teacher, student, steps=5, num_samples=16, progress=False).kl)
    assert runs[0] == runs[1]


def test_rejects_bad_input() -> None:
    teacher, student = teacher_and_student()
    with pytest.raises(ValueError, match="the teacher has dim 2 but the student has 3"):
        distill(teacher, IAF(3).double(), steps=1)
    with pytest.raises(ValueError, match=r"the teacher is torch\.float64 but the student is"):
        distill(teacher, IAF(2), steps=1)
    with pytest.raises(ValueError, match="the student dequantizes its data"):
        distill(teacher, RealNVP(2, levels=17).double(), steps=1)
    with pytest.raises(ValueError, match="the teacher must be a FlowModel, got Linear"):
        distill(torch.nn.Linear(2, 2), student, steps=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        distill(teacher, student, steps=0)
    with pytest.raises(ValueError, match="lr must be a positive number, got -1"):
        distill(teacher, student, steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="max_grad_norm must be a positive number, got 0"):
        distill(teacher, student, steps=1, max_grad_norm=0.0)
