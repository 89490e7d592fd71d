"""Per-data-point log weights of a Pyro program, with the samples vectorized as particles.

The estimators in :mod:`ppdgm.estimate` and the losses in :mod:`ppdgm.infer.iwae` share this
machinery. A *probe* (:mod:`ppdgm.infer.probe`) runs the guide and the model once, without
particles, to find the plate named ``plate`` and the depth of plate nesting, and to check the
sites and the data. Then :func:`trace_particles` runs both again inside one extra plate of ``k``
particles, left of every plate of the program, and :func:`per_point` reduces any per-site tensor
(a log-density, a KL divergence) to ``[k, N]``: its sum over every dimension except the particle
and the data-plate dimensions. A site outside the data plate (a global latent variable) gets a
``[k, 1]`` term, shared by every data point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.util import detach, scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = [
    "PARTICLES",
    "Layout",
    "NaNLogDensity",
    "clamped",
    "data_frame",
    "is_auxiliary",
    "latent_sites",
    "log_weight_total",
    "log_weights",
    "nan_checks_deferred",
    "observed_sites",
    "per_point",
    "plate_size",
    "prior_proposal_log_prob",
    "sample_sites",
    "site_log_prob",
    "trace_once",
    "trace_particles",
]

#: The name of the plate over particles that the estimators add around a program.
PARTICLES = "_ppdgm_particles"

Program = Callable[..., Any]


class NaNLogDensity(ValueError):
    """A site's log-density is NaN: parameters that diverged, or data outside its support."""


@dataclass(frozen=True)
class Layout:
    """Where the data plate is and how deep the program's plates go.

    Attributes:
        plate: the name of the data plate.
        size: its size ``N`` in the probe.
        max_plate_nesting: how many batch dimensions the program uses (plates and any other
            batch dimensions of its sites); the particle plate goes left of them.
        bytes_per_particle: memory of the probe's sample-site values, a guide for chunk sizes.
    """

    plate: str
    size: int
    max_plate_nesting: int
    bytes_per_particle: int

    @property
    def particle_dim(self) -> int:
        """The dimension of the particle plate, counted from the right."""
        return -self.max_plate_nesting - 1


def sample_sites(trace: Trace) -> Iterator[tuple[str, dict[str, Any]]]:
    """The sample sites of a trace with their names, less the plates' subsample sites."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield name, site


def observed_sites(trace: Trace) -> list[str]:
    """Names of the observed sample sites (``obs=`` and ``pyro.factor``), in program order."""
    return [name for name, site in sample_sites(trace) if site["is_observed"]]


def latent_sites(trace: Trace) -> list[str]:
    """Names of the latent sample sites, in program order."""
    return [name for name, site in sample_sites(trace) if not site["is_observed"]]


def data_frame(site: dict[str, Any], plate: str) -> Any | None:
    """The ``CondIndepStackFrame`` of the plate named ``plate`` around ``site``, or None."""
    for frame in site["cond_indep_stack"]:
        if frame.name == plate:
            return frame
    return None


def site_log_prob(site: dict[str, Any], *, detach_params: bool = False) -> Tensor:
    """``log p(value)`` of a site, scaled and masked as Pyro does, shaped like its batch.

    Arguments:
        site: a sample site of a trace.
        detach_params: evaluate the density with its parameters detached (the gradient still
            flows through the value), as the doubly-reparameterized gradient needs.
    """
    fn = site["fn"]
    if detach_params and not isinstance(fn, dist.Delta):
        # a Delta's log_density (an autoguide's Jacobian) depends on the draw, not on parameters
        fn = detach(fn)
    log_p = _bernoulli_log_prob(fn, site["value"])
    if log_p is None:
        log_p = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"])


def _bernoulli_log_prob(fn: Any, value: Tensor) -> Tensor | None:
    """``Bernoulli(logits).to_event(n).log_prob(value)``, the usual likelihood of binary images,
    with the sign flipped after the sum over the event rather than before: the same numbers, one
    pass fewer over the largest tensor of a VAE's evaluation. None for other distributions (and
    when the arguments are being validated)."""
    if type(fn) is not dist.Independent or fn._validate_args:
        return None
    base = fn.base_dist
    if type(base) is not dist.Bernoulli or "logits" not in base.__dict__ or base._validate_args:
        return None
    logits = base.logits
    if value.shape != logits.shape:
        value = value.expand(torch.broadcast_shapes(value.shape, logits.shape))
        logits = logits.expand(value.shape)
    nll = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
    return -nll.sum(tuple(range(-fn.reinterpreted_batch_ndims, 0)))


def prior_proposal_log_prob(site: dict[str, Any]) -> Tensor | None:
    """The part of a latent site's log-density that does not cancel when the prior proposes it.

    A latent site sampled from its own distribution contributes ``log p - log q = 0``; a
    distribution clamped to known values in some cells (:func:`clamped`: a Bayesian network's
    column with missing cells) proposes them with probability one, so its known cells keep their
    ``log p``. None where nothing is left.
    """
    known = clamped(site["fn"])
    if known is None:
        return None
    log_p = site_log_prob(site)
    return torch.where(known, log_p, torch.zeros_like(log_p))


def clamped(fn: Any) -> Tensor | None:
    """The cells a distribution clamps to known values (a boolean mask), for a distribution that
    says so with a ``clamped`` attribute (``ppdgm.bn``'s partially observed categorical: a
    latent site observed where its column has a value); None for every other distribution."""
    known = getattr(fn, "clamped", None)
    return known if isinstance(known, Tensor) else None


def per_point(value: Tensor, site: dict[str, Any], layout: Layout) -> Tensor:
    """A per-site tensor shaped like the site's batch, reduced to ``[k or 1, N or 1]``.

    Every dimension but the particle dimension and the data plate's is summed: nested plates and
    batch dimensions declared by no plate are part of a data point. A site outside the data plate
    gives ``[k or 1, 1]``, which broadcasts to every data point.
    """
    rank = layout.max_plate_nesting + 1
    if value.dim() < rank:
        value = value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
    elif value.dim() > rank:
        raise ValueError(
            f"site {site['name']!r} has {value.dim() - 1} batch dimensions besides the particles, "
            f"more than the {layout.max_plate_nesting} found when probing the program; its shape "
            "must not depend on the number of particles"
        )
    frame = data_frame(site, layout.plate)
    if frame is None:
        return value.reshape(value.shape[0], -1).sum(-1, keepdim=True)
    value = value.movedim(frame.dim, -1)
    return value.reshape(value.shape[0], -1, value.shape[-1]).sum(1)


def trace_particles(
    model: Program,
    guide: Program | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    num_particles: int,
    layout: Layout,
) -> tuple[Trace, Trace | None]:
    """Traces of the guide and of the model replayed on it, with ``num_particles`` particles
    vectorized by a plate left of the program's plates (no guide: the model alone)."""
    with pyro.plate(PARTICLES, num_particles, dim=layout.particle_dim):
        return trace_once(model, guide, args, kwargs)


def trace_once(
    model: Program, guide: Program | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Trace, Trace | None]:
    """Traces of the guide and of the model replayed on it (no guide: the model alone)."""
    if guide is None:
        return poutine.trace(model).get_trace(*args, **kwargs), None
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def plate_size(trace: Trace, plate: str) -> int:
    """The size of the plate named ``plate`` in a trace."""
    for _, site in sample_sites(trace):
        frame = data_frame(site, plate)
        if frame is not None:
            return int(frame.size)
    raise ValueError(f"the model has no plate named {plate!r}")


def log_weights(
    model_trace: Trace,
    guide_trace: Trace | None,
    layout: Layout,
    *,
    analytic_kl: bool = False,
    detach_guide_params: bool = False,
) -> Tensor:
    """``log p(x_i, z_k) - log q(z_k | x_i)`` per particle and data point: ``[k, N]``.

    Without a guide the latent sites were drawn from the prior and cancel (see
    :func:`prior_proposal_log_prob`): the weight is the likelihood of the observations.

    Arguments:
        model_trace: the model's trace (replayed on the guide's).
        guide_trace: the guide's trace, or None when the prior proposed.
        layout: the probe's layout.
        analytic_kl: replace ``log p(z) - log q(z)`` by ``-KL(q || p)`` at each latent site where
            PyTorch knows the divergence, when the guide samples the latent sites in the model's
            order (so each site's prior depends only on values drawn before it): the ELBO's
            terms, with the same expectation (often, not always, a smaller variance).
        detach_guide_params: evaluate ``log q`` with the guide's parameters detached.

    Raises:
        ValueError: naming a site whose log-density is NaN.
    """
    size = plate_size(model_trace, layout.plate)
    terms: list[tuple[str, str, Tensor]] = []  # (site, whose density, [k or 1, N or 1])
    guide_sites = {} if guide_trace is None else dict(sample_sites(guide_trace))
    auxiliary = [n for n, site in guide_sites.items() if is_auxiliary(site)]
    order = [n for n in guide_sites if n not in auxiliary]
    use_kl = analytic_kl and order == latent_sites(model_trace)
    for name, site in sample_sites(model_trace):
        if site["is_observed"]:
            terms.append((name, "model", per_point(site_log_prob(site), site, layout)))
            continue
        if guide_trace is None:
            left = prior_proposal_log_prob(site)
            if left is not None:
                terms.append((name, "model", per_point(left, site, layout)))
            continue
        guide_site = guide_sites[name]
        kl = _kl(guide_site, site) if use_kl else None
        if kl is not None:
            terms.append((name, "KL divergence", -per_point(kl, site, layout)))
            continue
        log_q = site_log_prob(guide_site, detach_params=detach_guide_params)
        terms.append((name, "model", per_point(site_log_prob(site), site, layout)))
        terms.append((name, "guide", -per_point(log_q, guide_site, layout)))
    for name in auxiliary:  # an autoguide's unconstrained draws: part of q's density
        site = guide_sites[name]
        log_q = site_log_prob(site, detach_params=detach_guide_params)
        terms.append((name, "guide", -per_point(log_q, site, layout)))
    total = terms[0][2]
    for _, _, term in terms[1:]:
        total = total + term
    if not _DEFERRED.get() and torch.isnan(total).any():  # one check per pass; name the culprit
        name, whose = next((n, w) for n, w, t in terms if torch.isnan(t).any())
        raise NaNLogDensity(f"the {whose} log-density of site {name!r} is NaN for some data points")
    particles = max(t.shape[0] for _, _, t in terms)
    return total.expand(particles, size)


_DEFERRED: ContextVar[bool] = ContextVar("ppdgm_nan_checks_deferred", default=False)


@contextmanager
def nan_checks_deferred() -> Iterator[None]:
    """Inside the block the log weights are not checked for NaN: that check is a branch on the
    values, which a recorded graph of tensor operations cannot hold (:mod:`ppdgm.infer.traced`
    checks the loss it returns instead)."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def log_weight_total(
    model_trace: Trace, guide_trace: Trace, *, analytic_kl: bool = False
) -> Tensor:
    """``sum_{k, i} log w_ik``: :func:`log_weights` summed over particles and data points, in
    one pass of sums (what the ELBO needs: no per-data-point layout, no reshaping).

    Arguments:
        model_trace, guide_trace: the traces (the model replayed on the guide).
        analytic_kl: as for :func:`log_weights`.

    Raises:
        NaNLogDensity: naming a site whose log-density is NaN.
    """
    guide_sites = dict(sample_sites(guide_trace))
    auxiliary = [n for n, site in guide_sites.items() if is_auxiliary(site)]
    order = [n for n in guide_sites if n not in auxiliary]
    use_kl = analytic_kl and order == latent_sites(model_trace)
    terms: list[tuple[str, str, Tensor]] = []
    for name, site in sample_sites(model_trace):
        if site["is_observed"]:
            terms.append((name, "model", site_log_prob(site).sum()))
            continue
        guide_site = guide_sites[name]
        kl = _kl(guide_site, site) if use_kl else None
        if kl is not None:
            terms.append((name, "KL divergence", -kl.sum()))
            continue
        terms.append((name, "model", site_log_prob(site).sum()))
        terms.append((name, "guide", -site_log_prob(guide_site).sum()))
    for name in auxiliary:
        terms.append((name, "guide", -site_log_prob(guide_sites[name]).sum()))
    total = torch.stack([t for _, _, t in terms]).sum()
    if not _DEFERRED.get() and torch.isnan(total):
        name, whose = next((n, w) for n, w, t in terms if torch.isnan(t))
        raise NaNLogDensity(f"the {whose} log-density of site {name!r} is NaN for some data points")
    return total


def _kl(guide_site: dict[str, Any], model_site: dict[str, Any]) -> Tensor | None:
    try:
        kl = torch.distributions.kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    return scale_and_mask(kl, model_site["scale"], model_site["mask"])


def is_auxiliary(site: dict[str, Any]) -> bool:
    """Whether a guide site is auxiliary (an autoguide's unconstrained draw), not a model site."""
    return bool(site["infer"].get("is_auxiliary", False))
