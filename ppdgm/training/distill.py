r"""Probability density distillation (Parallel WaveNet): a flow that samples fast learns to
match a flow that scores fast.

A trained MAF (the teacher ``p``) scores any data in one pass but samples in ``d``; an IAF (the
student ``q``) samples, and scores its own samples, in one pass. Distillation trains the student
on the reverse KL divergence, estimated with the student's own reparameterized samples:

.. math::

    \mathrm{KL}(q \,\|\, p) = E_{x \sim q}[\log q(x) - \log p(x)]
    \approx \frac1K \sum_{k=1}^K \log q(x_k) - \log p(x_k), \qquad x_k = f_q(z_k),

so each step costs one pass of each flow: the student's samples keep their noise in Pyro's
transform caches, and the teacher scores them in its one-pass direction.

References:
    van den Oord et al., Parallel WaveNet: fast high-fidelity speech synthesis (2018).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppdgm._checks import check_int
from ppdgm.base import seeded
from ppdgm.models.flows import FlowModel

__all__ = ["DistillResult", "distill", "reverse_kl"]


@dataclass
class DistillResult:
    """What :func:`distill` did.

    Attributes:
        kl: the Monte Carlo estimate of ``KL(q || p)`` in nats at each step (before its update).
        kl_stderr: the standard error of each estimate.
        seconds: the wall-clock time of the loop.
    """

    kl: list[float] = field(default_factory=list)
    kl_stderr: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _check(teacher: FlowModel, student: FlowModel) -> None:
    for role, flow in (("teacher", teacher), ("student", student)):
        if not isinstance(flow, FlowModel):
            raise ValueError(f"the {role} must be a FlowModel, got {type(flow).__name__}")
        if flow.preprocessing is not None:
            raise ValueError(
                f"the {role} dequantizes its data: distillation matches densities of "
                "continuous data, so give it a flow without levels"
            )
    if teacher.dim != student.dim:
        raise ValueError(f"the teacher has dim {teacher.dim} but the student has {student.dim}")
    if teacher.dtype != student.dtype:
        raise ValueError(f"the teacher is {teacher.dtype} but the student is {student.dtype}")


def _positive(name: str, number: float) -> None:
    if (
        isinstance(number, bool)
        or not isinstance(number, (int, float))
        or not (math.isfinite(number) and number > 0)
    ):
        raise ValueError(f"{name} must be a positive number, got {number!r}")


def reverse_kl(teacher: FlowModel, student: FlowModel, num_samples: int) -> Tensor:
    r"""``log q(x_k) - log p(x_k)`` for ``num_samples`` reparameterized draws ``x_k ~ q``: their
    mean estimates ``KL(q || p)``, with gradients for the student's parameters (and the
    teacher's, unless they are frozen).

    Example:
        >>> from ppdgm.models import IAF, MAF
        >>> teacher, student = MAF(2, [8], 2), IAF(2, [8], 2)
        >>> reverse_kl(teacher, student, 16).shape
        torch.Size([16])
    """
    _check(teacher, student)
    q = student.distribution()
    x = q.rsample((num_samples,))
    # x is the flow's own output: each layer's cache hands back its input, no inversion
    return q.log_prob(x) - teacher.distribution().log_prob(x)


def distill(
    teacher: FlowModel,
    student: FlowModel,
    *,
    steps: int = 1000,
    num_samples: int = 256,
    lr: float = 1e-3,
    max_grad_norm: float | None = 1.0,
    seed: int | None = 0,
    progress: bool = True,
) -> DistillResult:
    r"""Trains ``student`` to match ``teacher`` by the reverse KL ``E_q[log q - log p]``
    (:func:`reverse_kl`) with Adam; the teacher is left unchanged.

    The student should sample in one pass (an :class:`~ppdgm.models.IAF`, or a coupling flow)
    and the teacher should score in one pass (a :class:`~ppdgm.models.MAF`); other flows work,
    only slower.

    Arguments:
        teacher: the trained density ``p``, a flow model of continuous data.
        student: the flow ``q`` to train, of the same dimension and dtype.
        steps: the number of Adam steps.
        num_samples: student samples per step.
        lr: Adam's learning rate.
        max_grad_norm: the largest norm of the student's gradient (it is scaled down above);
            None: no clipping. A trained teacher's density is tiny away from its data, so the
            student's first samples can give gradients large enough to wreck Adam's moment
            estimates for the rest of the run.
        seed: the random stream of the samples (torch's global stream is left alone); None:
            torch's global stream.
        progress: show a tqdm bar with the current KL estimate.

    Returns:
        the KL estimate at each step and the time taken.

    Raises:
        ValueError: for flows that are not :class:`~ppdgm.models.flows.FlowModel`\ s of
            continuous data of the same dimension and dtype, or bad settings.

    Example:
        >>> from ppdgm.models import IAF, MAF
        >>> _ = torch.manual_seed(0)
        >>> teacher, student = MAF(2, [8], 2), IAF(2, [8], 2)
        >>> result = distill(teacher, student, steps=100, num_samples=128, lr=1e-2, progress=False)
        >>> first, last = sum(result.kl[:10]) / 10, sum(result.kl[-10:]) / 10
        >>> round(first, 2), round(last, 2)
        (0.1, 0.01)
    """
    _check(teacher, student)
    for name, value in (("steps", steps), ("num_samples", num_samples)):
        check_int(name, value)
    _positive("lr", lr)
    if max_grad_norm is not None:
        _positive("max_grad_norm", max_grad_norm)
    frozen = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    result = DistillResult()
    start = time.perf_counter()
    try:
        for p in frozen:  # gradients reach the samples through the teacher, not its weights
            p.requires_grad_(False)
        with seeded(seed), tqdm(total=steps, disable=not progress, unit="step") as bar:
            for _ in range(steps):
                gap = reverse_kl(teacher, student, num_samples)
                loss = gap.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
                optimizer.step()
                result.kl.append(float(loss.detach()))
                result.kl_stderr.append(float(gap.detach().std() / math.sqrt(num_samples)))
                bar.set_postfix(kl=f"{result.kl[-1]:.4f}")
                bar.update()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    return result
