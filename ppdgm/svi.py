r"""Stochastic variational inference objectives for :func:`ppdgm.train.fit`: the ELBO
(``Trace_ELBO``), the ELBO with analytic KL (``TraceMeanField_ELBO``) and the IWAE bound, with
KL annealing.

An objective is called as ``objective(model, batch, step)`` and returns the loss per data point.
For a model with ``log_weights(x, K, beta)`` (the VAEs of :mod:`ppdgm.models`) it is computed from
those: for ``K`` reparameterized draws ``z_k ~ q(z | x)`` and
``log w_k = log p(x | z_k) + beta (log p(z_k) - log q(z_k | x))``,

- ``"elbo"``: ``-mean_k log w_k`` (what ``Trace_ELBO(num_particles=K)`` minimizes);
- ``"meanfield"``: ``-mean_k log p(x | z_k) + beta KL(q || p)`` with the KL in closed form where the
  guide and prior are Gaussian (``TraceMeanField_ELBO``), as ``"elbo"`` otherwise;
- ``"iwae"``: ``-log mean_k w_k`` (:class:`ppdgm.iwae.IWAE`).

That is the same function of the same draws as Pyro's ELBOs on ``model.model`` and
``model.guide`` (the tests check equality), without tracing the programs at every step, which
costs Pyro's SVI 30-60 % over a hand-written step of a small VAE. ``program=True`` takes the
other road: Pyro's own ``Trace_ELBO``, ``TraceMeanField_ELBO`` or :class:`~ppdgm.iwae.IWAE` on the
model's programs, for any model with ``model`` and ``guide`` (annealing scales every latent site
of both programs by ``beta``).

KL annealing (Bowman et al. 2016; Sønderby et al. 2016): ``beta`` rises linearly from
``1 / anneal_steps`` to 1 over the first ``anneal_steps`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn

from ppdgm.batch import Batch, as_arguments, num_rows
from ppdgm.iwae import IWAE

__all__ = ["LOSSES", "SVIObjective"]

#: The objectives by name.
LOSSES = ("elbo", "meanfield", "iwae")


class _ScaleLatent(Messenger):
    """Multiplies the log-density of every latent (unobserved) sample site by ``beta``."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


@dataclass(frozen=True)
class SVIObjective:
    """A variational training objective, the ``objective`` of :func:`ppdgm.train.fit`.

    Attributes:
        loss: ``"elbo"``, ``"meanfield"`` or ``"iwae"`` (see the module description).
        num_particles: ``K``, draws of the guide per data point and step.
        anneal_steps: steps over which the KL weight ``beta`` rises to 1 (0: no annealing).
        program: use Pyro's ELBOs on ``model.model`` and ``model.guide`` instead of the model's
            ``log_weights``.
        doubly_reparameterized: the IWAE gradient of Tucker et al. (2018) (``"iwae"`` with
            ``program=True`` only).

    Example:
        >>> from ppdgm.models import VAE
        >>> vae = VAE(6, 2, [8])
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> SVIObjective("iwae", num_particles=5)(vae, x, step=0).shape
        torch.Size([])
    """

    loss: str = "elbo"
    num_particles: int = 1
    anneal_steps: int = 0
    program: bool = False
    doubly_reparameterized: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        for name, least in (("num_particles", 1), ("anneal_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.doubly_reparameterized and not (self.program and self.loss == "iwae"):
            raise ValueError("doubly_reparameterized needs loss='iwae' and program=True")

    @property
    def settings(self) -> dict[str, Any]:
        """The objective as plain data (kept in checkpoints; a resumed run must match it)."""
        return {
            "loss": self.loss,
            "num_particles": self.num_particles,
            "anneal_steps": self.anneal_steps,
            "program": self.program,
            "doubly_reparameterized": self.doubly_reparameterized,
        }

    def beta(self, step: int) -> float:
        """The KL weight at training step ``step`` (counting from 0)."""
        if not self.anneal_steps:
            return 1.0
        return min(1.0, (step + 1) / self.anneal_steps)

    #: an SVI objective trains a model's Pyro programs: :func:`ppdgm.train.fit` checks that the
    #: model has ``model`` and ``guide``
    needs_program = True

    def __call__(self, model: nn.Module, batch: Batch, step: int) -> Tensor:
        """The loss per data point of ``batch`` (a tensor, or a tuple or dict of tensors
        passed as the programs' arguments) at training step ``step``."""
        beta = self.beta(step)
        if self.program or not hasattr(model, "log_weights") or not isinstance(batch, Tensor):
            return self._program_loss(model, batch, beta) / num_rows(batch)
        k = self.num_particles
        if self.loss == "iwae":
            lw = model.log_weights(batch, k, beta)
            return (math.log(k) - torch.logsumexp(lw, 0)).mean()
        return -model.log_weights(batch, k, beta, analytic_kl=self.loss == "meanfield").mean()

    @cached_property
    def elbo(self) -> Any:
        """The Pyro ELBO that ``program=True`` uses (made once: the first call probes the
        programs, e.g. for their plate nesting)."""
        k = self.num_particles
        if self.loss == "iwae":
            return IWAE(k, doubly_reparameterized=self.doubly_reparameterized)
        cls = TraceMeanField_ELBO if self.loss == "meanfield" else Trace_ELBO
        return cls(num_particles=k, vectorize_particles=k > 1)

    def _program_loss(self, model: nn.Module, batch: Batch, beta: float) -> Tensor:
        elbo = self.elbo
        program_model, program_guide = model.model, model.guide
        if beta != 1.0:
            program_model = _ScaleLatent(beta)(program_model)
            program_guide = _ScaleLatent(beta)(program_guide)
        args, kwargs = as_arguments(batch)
        return elbo.differentiable_loss(program_model, program_guide, *args, **kwargs)
