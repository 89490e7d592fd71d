r"""Training objectives computed from per-data-point log weights: the ELBO and the
importance-weighted bound, taken per data point, for any Pyro program and its guide.

One guide trace and one model trace replayed on it per step, with :math:`K` particles
vectorized by a plate left of the program's plates, give the log weights
:math:`\log w_{ik} = \log p(x_i, z_{ik}) - \log q(z_{ik} \mid x_i)`
(:func:`ppdgm.infer.weights.log_weights`, the same function :class:`ppdgm.estimate.LogLikelihood`
estimates with). From them, for data points :math:`x_1, \dots, x_N` (the model's plate named
``plate``):

.. math::

    \mathcal L_{\text{ELBO}} = -\sum_i \frac1K \sum_k \log w_{ik}, \qquad
    \mathcal L_{\text{IWAE}} = -\sum_i \log \frac1K \sum_k w_{ik},

the second with the log-mean-exp taken for each data point separately. (Pyro's
``RenyiELBO(alpha=0)`` sums the log weights over data points before it, which is a looser bound,
``log mean_k prod_i w_ik``, when every data point has its own latent variables.)

:class:`WeightedELBO` equals Pyro's ``Trace_ELBO`` (``TraceMeanField_ELBO`` with
``analytic_kl=True``) in value and gradient on the same draws, and is the fast road of
:class:`ppdgm.svi.SVIObjective`: the program is probed (and its data and sites validated) once,
then each step traces it with Pyro's validation off and skips ``Trace_ELBO``'s bookkeeping,
which cost a small VAE 20-40 % over a hand-written step (``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.elbo import ELBO
from pyro.poutine.trace_struct import Trace
from torch import Tensor

from ppdgm.infer.probe import own_stream, probe
from ppdgm.infer.weights import (
    Layout,
    data_frame,
    log_weight_total,
    log_weights,
    per_point,
    sample_sites,
    site_log_prob,
    trace_once,
    trace_particles,
)

__all__ = ["IWAE", "WeightedELBO"]


class IWAE(ELBO):
    r"""Minus the IWAE bound summed over data points, usable as ``SVI(model, guide, optim,
    loss=IWAE(num_particles=K))``.

    The ``K`` particles are vectorized by a plate left of the program's plates (as with
    ``vectorize_particles=True``). Gradients: reparameterized guide sites give the usual IWAE
    gradient, ``-sum_i sum_k w~_ik grad log w_ik`` with normalized weights ``w~``; a guide site that
    cannot be reparameterized (a discrete one) adds the score-function term
    ``bound_i * grad log q(z_ik)`` (no baseline, so high variance).

    With ``doubly_reparameterized=True`` the guide's parameters get the doubly-reparameterized
    gradient of Tucker et al. (2018), ``-sum_i sum_k w~_ik^2 d log w_ik / dz_ik dz_ik / dphi``
    with ``log q`` evaluated at detached parameters: unbiased for the same quantity, and its
    signal-to-noise ratio does not vanish as ``K`` grows. The model's parameters keep the usual
    gradient. It needs every guide site reparameterized and inside the data plate, and works by
    gradient hooks on the guide's draws that scale what reaches ``z_ik`` by ``w~_ik``.

    Arguments:
        num_particles: ``K``, samples per data point.
        doubly_reparameterized: use the doubly-reparameterized gradient for the guide.
        plate: the name of the model's plate over data points.

    Raises:
        ValueError: for ``num_particles`` below 1, and (when evaluated) for the model and guide
            problems :class:`~ppdgm.estimate.LogLikelihood` reports, or a guide site that the
            doubly-reparameterized gradient cannot handle.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x / 2, scale))
        >>> pyro.clear_param_store()
        >>> pyro.set_rng_seed(0)
        >>> x = torch.randn(100) * 2**0.5
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=IWAE(num_particles=8))
        >>> for step in range(200):
        ...     loss = svi.step(x)
        >>> round(pyro.param("scale").item(), 1)  # the posterior's is sqrt(1/2) = 0.71
        0.7
    """

    def __init__(
        self, num_particles: int = 8, *, doubly_reparameterized: bool = False, plate: str = "data"
    ) -> None:
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or num_particles < 1
        ):
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.doubly_reparameterized = doubly_reparameterized
        self.plate = plate
        self._layout: Layout | None = None
        #: whether one particle may be traced without the particle plate (when the loss needs
        #: the total of the log weights, not each data point's)
        self._unbatched = False

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        """Minus the IWAE bound summed over data points, as a float."""
        with torch.no_grad():
            return float(self._terms(model, guide, args, kwargs)[0])

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        """Minus the IWAE bound summed over data points: its value is the loss, its gradient the
        estimator described in the class docstring."""
        loss, surrogate = self._terms(model, guide, args, kwargs)
        if surrogate is loss:  # no score-function terms: the loss is its own surrogate
            return loss
        return loss.detach() + (surrogate - surrogate.detach())

    def loss_and_grads(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        """Computes the loss and accumulates its gradient into the parameters' ``.grad``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())

    def _get_trace(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Trace, Trace]:
        """The model's and the guide's traces with the ``K`` particles vectorized (the first call
        also probes the program: its plates, sites and data; later calls skip Pyro's
        validation, which the probe did)."""
        if self._layout is None:
            with own_stream():  # the first step draws what later ones would
                self._layout, _, _ = probe(model, guide, args, kwargs, self.plate)
                self._check(self._layout, model, guide, args, kwargs)
        k = self.num_particles
        with pyro.validation_enabled(False):
            if k == 1 and self._unbatched:  # one particle needs no particle plate
                model_trace, guide_trace = trace_once(model, guide, args, kwargs)
            else:
                layout = self._layout
                model_trace, guide_trace = trace_particles(model, guide, args, kwargs, k, layout)
        assert guide_trace is not None
        return model_trace, guide_trace

    def _check(
        self,
        layout: Layout,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """What this objective needs of the program beyond the probe (nothing here)."""

    def _terms(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Tensor, Tensor]:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        layout = self._layout
        assert layout is not None
        k = self.num_particles
        dreg = self.doubly_reparameterized
        lw = log_weights(model_trace, guide_trace, layout, detach_guide_params=dreg)
        bound = torch.logsumexp(lw, 0) - math.log(k)
        loss = -bound.sum()
        surrogate = loss
        if torch.is_grad_enabled():
            if dreg:
                _reweight_draws(guide_trace, layout, torch.softmax(lw.detach(), 0))
            else:
                score = _score(guide_trace, layout)
                if score is not None:
                    surrogate = surrogate - (bound.detach() * score.sum(0)).sum()
        return loss, surrogate


class WeightedELBO(IWAE):
    r"""Minus the ELBO summed over data points, from the per-data-point log weights:
    ``-sum_i mean_k log w_ik``, usable as ``SVI(model, guide, optim, loss=WeightedELBO())``.

    With ``analytic_kl=True`` each latent site's ``log p(z) - log q(z)`` is replaced by
    ``-KL(q || p)`` where PyTorch has the divergence and the guide samples in the model's order
    (what ``TraceMeanField_ELBO`` computes). Every guide site must be reparameterized (its
    distribution has ``rsample``): for discrete guide sites use Pyro's ``Trace_ELBO``, whose
    score-function terms this objective does not form.

    Arguments:
        num_particles: ``K``, samples per data point.
        analytic_kl: use closed-form KL divergences where they exist.
        plate: the name of the model's plate over data points.

    Raises:
        ValueError: for ``num_particles`` below 1, and (when evaluated) for the problems
            :class:`~ppdgm.estimate.LogLikelihood` reports or a guide site that is not
            reparameterized.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import Trace_ELBO
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x / 3, 0.8))
        >>> x = torch.tensor([0.5, -1.0, 2.0])
        >>> pyro.set_rng_seed(0)
        >>> fast = WeightedELBO().differentiable_loss(model, guide, x)
        >>> pyro.set_rng_seed(0)
        >>> reference = Trace_ELBO().differentiable_loss(model, guide, x)
        >>> bool(torch.isclose(fast, reference))
        True
    """

    def __init__(
        self, num_particles: int = 1, *, analytic_kl: bool = False, plate: str = "data"
    ) -> None:
        super().__init__(num_particles, plate=plate)
        self.analytic_kl = analytic_kl
        self._unbatched = True

    def _check(
        self,
        layout: Layout,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        from pyro import poutine

        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        for name, site in sample_sites(guide_trace):
            if not site["is_observed"] and not getattr(site["fn"], "has_rsample", False):
                self._layout = None
                raise ValueError(
                    f"guide site {name!r} ({type(site['fn']).__name__}) is not reparameterized"
                )

    def _terms(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Tensor, Tensor]:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        total = log_weight_total(model_trace, guide_trace, analytic_kl=self.analytic_kl)
        loss = -total if self.num_particles == 1 else -total / self.num_particles
        return loss, loss


def _score(guide_trace: Trace, layout: Layout) -> Tensor | None:
    """``sum of log q`` per particle and data point over the guide sites without ``rsample``."""
    total = None
    for _, site in sample_sites(guide_trace):
        if getattr(site["fn"], "has_rsample", False):
            continue
        term = per_point(site_log_prob(site), site, layout)
        total = term if total is None else total + term
    return total


def _reweight_draws(guide_trace: Trace, layout: Layout, weights: Tensor) -> None:
    """Multiplies the gradient reaching each reparameterized draw ``z_ik`` by ``w~_ik``, turning
    the IWAE gradient ``w~ dlog w/dz`` into the doubly-reparameterized ``w~^2 dlog w/dz``."""
    for name, site in sample_sites(guide_trace):
        if isinstance(site["fn"], dist.Delta):
            continue  # a deterministic function of other draws (an autoguide's constrained value)
        if not getattr(site["fn"], "has_rsample", False):
            raise ValueError(
                f"doubly_reparameterized=True needs reparameterized guide sites; {name!r} "
                f"({type(site['fn']).__name__}) is not"
            )
        frame = data_frame(site, layout.plate)
        if frame is None:
            raise ValueError(
                f"doubly_reparameterized=True needs every guide site inside plate "
                f"{layout.plate!r}; {name!r} is global"
            )
        value = site["value"]
        if not value.requires_grad:
            continue
        event_dim = len(site["fn"].event_shape)
        shape = [1] * value.dim()
        shape[value.dim() - event_dim + layout.particle_dim] = weights.shape[0]
        shape[value.dim() - event_dim + frame.dim] = weights.shape[1]
        factor = weights.reshape(shape).to(value.dtype)
        value.register_hook(lambda grad, factor=factor: grad * factor)
