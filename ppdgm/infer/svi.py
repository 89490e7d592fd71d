r"""Stochastic variational inference objectives for :func:`ppdgm.train.fit`: the ELBO
(``Trace_ELBO``), the ELBO with analytic KL (``TraceMeanField_ELBO``) and the IWAE bound, with
KL annealing, for any model with Pyro programs ``model`` and ``guide``.

An objective is called as ``objective(model, batch, step)`` and returns the loss per data point.
For ``K`` draws ``z_k ~ q(z | x)`` per data point and
``log w_k = log p(x | z_k) + beta (log p(z_k) - log q(z_k | x))``,

- ``"elbo"``: ``-mean_k log w_k`` (what ``Trace_ELBO(num_particles=K)`` minimizes);
- ``"meanfield"``: ``-mean_k log p(x | z_k) + beta KL(q || p)`` with the KL in closed form where
  PyTorch has it (``TraceMeanField_ELBO``), as ``"elbo"`` otherwise;
- ``"iwae"``: ``-log mean_k w_k`` (:class:`ppdgm.infer.iwae.IWAE`).

**One road for every program.** The loss is computed from the programs' log weights by
:class:`~ppdgm.infer.iwae.WeightedELBO` or :class:`~ppdgm.infer.iwae.IWAE`: the same function
of the same draws as Pyro's ELBOs (the tests check value and gradient), with the program probed and
validated once and each step traced without Pyro's per-step validation and bookkeeping, and,
after ``record_after`` steps of one batch shape, recorded as a graph of tensor operations and
replayed (:mod:`ppdgm.infer.traced`: within 1.06 of a hand-written step on the CS236 VAE).
A program this road cannot take falls back, with a :class:`SlowRoadWarning` saying why, to
Pyro's ``Trace_ELBO`` or ``TraceMeanField_ELBO``: a model without a plate named ``"data"``, a
guide site without ``rsample`` (discrete; the ELBO then needs score-function terms, which IWAE
forms itself), or a latent site the guide does not sample. ``program=True`` takes Pyro's
classes on purpose (a reference to compare with).

**Enumerated sites.** A guide site marked ``infer={"enumerate": "parallel"}`` (a discrete
latent such as the unknown label of a semi-supervised VAE) is summed out exactly: ``"elbo"``
then trains with Pyro's ``TraceEnum_ELBO``, whose loss is the ELBO with that site's expectation
taken over all its values, weighted by the guide's probabilities (``"iwae"`` draws the site
like any other; ``"meanfield"`` is refused, as ``TraceEnum_ELBO`` has no analytic KL).

KL annealing (Bowman et al. 2016; Sønderby et al. 2016): ``beta`` rises linearly from
``1 / anneal_steps`` to 1 over the first ``anneal_steps`` steps; it scales every latent site of
both programs.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn

from ppdgm._checks import check_int
from ppdgm.base import values_are_checked
from ppdgm.batch import Batch, as_arguments, num_rows
from ppdgm.infer.iwae import IWAE, WeightedELBO
from ppdgm.infer.probe import own_stream
from ppdgm.infer.traced import TracedLoss
from ppdgm.infer.weights import data_frame, latent_sites, sample_sites, trace_once

__all__ = ["LOSSES", "SVIObjective", "SlowRoadWarning"]

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
        program: use Pyro's own ELBO classes (``Trace_ELBO``, ``TraceMeanField_ELBO``) instead of
            the fast road, as a reference.
        doubly_reparameterized: the IWAE gradient of Tucker et al. (2018) (``"iwae"`` only).
        record_after: on the fast road, the steps with one batch shape after which the loss is
            recorded as a graph and replayed (:mod:`ppdgm.infer.traced`); None: never. The
            recorded graph gives the same numbers; it saves the programs' Python. Only inside
            :func:`ppdgm.base.values_checked` (as :func:`ppdgm.train.fit` runs its steps, on
            data it checked in full), since the graph holds no check of the data's values.
        compile: also compile each recorded graph with ``torch.compile`` (fused kernels; about
            ten seconds once per batch shape, then steps faster than a hand-written PyTorch
            step on a small VAE): for long runs. Needs a C++ compiler on a CPU; without one the
            recorded graph runs, with a note.

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
    record_after: int | None = 10
    compile: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        for name, least in (("num_particles", 1), ("anneal_steps", 0)):
            check_int(name, getattr(self, name), least)
        if self.record_after is not None:
            check_int("record_after", self.record_after, 1)
        elif self.compile:
            raise ValueError("compile=True compiles the recorded graph: it needs record_after")
        if self.doubly_reparameterized and self.loss != "iwae":
            raise ValueError("doubly_reparameterized needs loss='iwae'")

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
        args, kwargs = as_arguments(batch)
        elbo = self._elbo_for(model, args, kwargs)
        if (
            beta == 1.0
            and self.record_after is not None
            and values_are_checked()  # fit checked every row: the graph holds no data check
            and isinstance(elbo, (WeightedELBO, IWAE))
        ):
            return self._traced(model, args, kwargs)  # the fast road, recorded once a shape
        return self._loss(model, args, kwargs, beta)

    def _loss(
        self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], beta: float = 1.0
    ) -> Tensor:
        elbo = self._elbos[model]
        program_model, program_guide = model.model, model.guide
        if beta != 1.0:
            program_model = _ScaleLatent(beta)(program_model)
            program_guide = _ScaleLatent(beta)(program_guide)
        loss = elbo.differentiable_loss(program_model, program_guide, *args, **kwargs)
        return loss / num_rows(args if args else kwargs)

    def _elbo_for(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The loss object of ``model`` (one per model: it keeps what probing found)."""
        chosen = self._elbos.get(model)
        if chosen is None:
            enumerated = self.loss != "iwae" and _enumerated(model, args, kwargs)
            if enumerated:
                chosen = self._enumerating(*enumerated)
            else:
                chosen = self._road(model, args, kwargs)
            self._elbos[model] = chosen
        return chosen

    def _road(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        reason = "program=True" if self.program else _off_road(model, args, kwargs, self.loss)
        if reason is None:
            return self._fast()
        chosen = self._pyro()
        if not self.program:
            warnings.warn(
                SlowRoadWarning(
                    f"{type(model).__name__}: {reason}; training with Pyro's "
                    f"{type(chosen).__name__} instead of the fast road"
                ),
                stacklevel=4,
            )
        return chosen

    @cached_property
    def _traced(self) -> TracedLoss:
        def note(reason: str) -> None:
            what = (
                reason
                if reason.startswith("the graph")
                else f"the loss is not recorded as a graph: {reason}"
            )
            warnings.warn(SlowRoadWarning(what), stacklevel=4)

        return TracedLoss(
            self._loss, after=self.record_after or 1, on_fallback=note, compile=self.compile
        )

    @cached_property
    def _elbos(self) -> weakref.WeakKeyDictionary[nn.Module, Any]:
        return weakref.WeakKeyDictionary()

    def _fast(self) -> Any:
        k = self.num_particles
        if self.loss == "iwae":
            return IWAE(k, doubly_reparameterized=self.doubly_reparameterized)
        return WeightedELBO(k, analytic_kl=self.loss == "meanfield")

    def _enumerating(self, sites: list[str], plates: int) -> Any:
        if self.loss == "meanfield":
            raise ValueError(
                f"the guide enumerates {', '.join(map(repr, sites))}: Pyro's TraceEnum_ELBO sums "
                "them out exactly but has no analytic KL; train with loss 'elbo'"
            )
        k = self.num_particles
        return TraceEnum_ELBO(  # a batch may leave the site out (a program's own choice)
            max_plate_nesting=plates,
            num_particles=k,
            vectorize_particles=k > 1,
            strict_enumeration_warning=False,
        )

    def _pyro(self) -> Any:
        k = self.num_particles
        if self.loss == "iwae":
            return IWAE(k, doubly_reparameterized=self.doubly_reparameterized)
        cls = TraceMeanField_ELBO if self.loss == "meanfield" else Trace_ELBO
        return cls(num_particles=k, vectorize_particles=k > 1)


class SlowRoadWarning(UserWarning):
    """A program trained by Pyro's own ELBO classes, not by the fast road (see the module
    description); the message says why."""


def _enumerated(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[str], int] | None:
    """The guide's sites marked ``infer={"enumerate": "parallel"}`` and the programs' plate
    depth, or None when the guide enumerates nothing."""
    with own_stream(), torch.no_grad():
        model_trace, guide_trace = trace_once(model.model, model.guide, args, kwargs)
    assert guide_trace is not None
    sites = [
        name
        for name, site in sample_sites(guide_trace)
        if site["infer"].get("enumerate") == "parallel"
    ]
    if not sites:
        return None
    depth = max(
        len(site["cond_indep_stack"])
        for trace in (model_trace, guide_trace)
        for _, site in sample_sites(trace)
    )
    return sites, depth


def _off_road(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], loss: str
) -> str | None:
    """Why the fast road cannot train ``model``'s programs, or None when it can."""
    with own_stream(), torch.no_grad():
        model_trace, guide_trace = trace_once(model.model, model.guide, args, kwargs)
    assert guide_trace is not None
    if not any(data_frame(site, "data") for _, site in sample_sites(model_trace)):
        return 'the model has no pyro.plate("data") over the rows'
    guided = {name for name, _ in sample_sites(guide_trace)}
    for name in latent_sites(model_trace):
        if name not in guided:
            return f"the guide does not sample the model's latent site {name!r}"
    if loss != "iwae":
        for name, site in sample_sites(guide_trace):
            if not getattr(site["fn"], "has_rsample", False):
                return f"guide site {name!r} ({type(site['fn']).__name__}) is not reparameterized"
    return None
