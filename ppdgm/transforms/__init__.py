r"""Normalizing-flow factories: Pyro transform modules usable as priors, guides or density models.

Every factory returns a :class:`~pyro.distributions.transforms.ComposeTransformModule` in the
*sampling direction*: it maps base noise ``z`` to data ``x = f(z)``, which is the direction
:class:`~pyro.distributions.TransformedDistribution` expects, so that

.. math:: \log p(x) = \log p_Z(f^{-1}(x)) - \log |\det J_f(f^{-1}(x))|.

What each direction costs (``d`` the dimension):

- :func:`nice`, :func:`real_nvp`, :func:`spline` (:mod:`~ppdgm.transforms.coupling`): coupling
  layers, one pass both ways.
- :func:`maf` (:mod:`~ppdgm.transforms.autoregressive`): ``log_prob`` of any data in one
  pass, sampling in ``d`` sequential passes.
- :func:`iaf`: sampling (and scoring its own samples) in one pass, ``log_prob`` of other data in
  ``d`` sequential passes.
- :func:`planar`, :func:`radial` (:mod:`~ppdgm.transforms.residual`): no inverse; use them
  where only samples are scored (guides).

Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` computes
``x_i = mu_i(z_{<i}) + sigma_i(z_{<i}) z_i``: its forward (sampling) direction is one pass, so it is
an IAF layer as it stands; :func:`maf` wraps each layer in :class:`Inverse` so that its one-pass
direction is the density direction instead.

References:
    Dinh et al., NICE (2014); Dinh et al., Real NVP (2016); Papamakarios et al., MAF (2017);
    Kingma et al., IAF (2016); Durkan et al., Neural Spline Flows (2019); Rezende & Mohamed (2015).


A factory given ``context_dim`` builds the conditional version of its family (:func:`iaf`,
:func:`real_nvp`, :func:`planar`, :func:`radial`): a :class:`ConditionalFlow`, whose
``condition(context)`` is an ordinary transform, as an amortized guide ``q(z | x)`` needs.
:data:`FLOWS` names every factory (the VAEs' ``guide_flow`` and ``prior_flow`` take these
names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ppdgm.transforms.autoregressive import iaf, maf
from ppdgm.transforms.core import HIDDEN_DIMS, ConditionalFlow, Inverse
from ppdgm.transforms.coupling import (
    AdditiveCoupling,
    Scaling,
    additive_coupling,
    nice,
    real_nvp,
    spline,
)
from ppdgm.transforms.residual import planar, radial

__all__ = [
    "CONDITIONAL",
    "FLOWS",
    "HIDDEN_DIMS",
    "AdditiveCoupling",
    "ConditionalFlow",
    "Inverse",
    "Scaling",
    "additive_coupling",
    "iaf",
    "maf",
    "nice",
    "planar",
    "radial",
    "real_nvp",
    "spline",
]

#: Every flow factory by name.
FLOWS: dict[str, Callable[..., Any]] = {
    "nice": nice,
    "real_nvp": real_nvp,
    "maf": maf,
    "iaf": iaf,
    "spline": spline,
    "planar": planar,
    "radial": radial,
}

#: The names of the factories that take ``context_dim`` (a guide flow's choices).
CONDITIONAL = ("iaf", "real_nvp", "planar", "radial")
