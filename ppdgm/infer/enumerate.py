"""Exact per-data-point ``log p(x_i)`` of a Pyro program with discrete latent variables, by
enumerating them in parallel and contracting with the data plate kept (Pyro's TraceEnum machinery).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.infer.enum import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ppdgm.infer.weights import Layout, latent_sites, site_log_prob

__all__ = ["enumerated_log_prob"]


def enumerated_log_prob(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    layout: Layout,
    probe_trace: Trace,
) -> Tensor:
    """``log p(x_i)`` for each element ``i`` of the data plate, every latent site summed out.

    Every latent site is enumerated in parallel (whatever its ``infer`` setting), each site's
    ``log_prob`` is packed with one symbol per plate and per enumerated dimension, and
    ``pyro.ops.contract.contract_to_tensor`` contracts the tree down to the data plate. Sites
    outside the data plate (global latent variables) are moved inside it first: each data point
    then sums the globals out on its own, ``log sum_g p(g) p(x_i | g)``, the same per-point
    marginal the Monte Carlo estimators target.

    Raises:
        ValueError: naming the continuous latent sites, which cannot be enumerated.
    """
    continuous = [
        f"{name} ({type(probe_trace.nodes[name]['fn']).__name__})"
        for name in latent_sites(probe_trace)
        if not getattr(probe_trace.nodes[name]["fn"], "has_enumerate_support", False)
    ]
    if continuous:
        raise ValueError(
            "method='exact' sums discrete latent variables out by enumeration, but the model's "
            f"latent site(s) {', '.join(continuous)} are continuous; use method='importance' "
            "or method='elbo'"
        )
    depth = layout.max_plate_nesting
    enumerated = poutine.enum(config_enumerate(model, "parallel"), first_available_dim=-depth - 1)
    trace = poutine.trace(enumerated).get_trace(*args, **kwargs)
    trace.symbolize_dims()
    data_symbol = trace.plate_to_symbol[layout.plate]
    tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
    sum_dims: set[str] = set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        symbols = site["infer"]["_dim_to_symbol"]
        enum_symbol = site["infer"].get("_enumerate_symbol")
        log_p = _sum_unplated_dims(name, site_log_prob(site), symbols, depth, enum_symbol)
        ordinal = frozenset(
            trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized
        )
        tree.setdefault(ordinal | {data_symbol}, []).append(packed.pack(log_p, symbols))
        if enum_symbol is not None:
            sum_dims.add(enum_symbol)
    sizes = {data_symbol: layout.size}
    for terms in tree.values():
        for term in terms:
            sizes.update(zip(term._pyro_dims, term.shape, strict=True))
    ring = LogRing(dim_to_size=sizes)
    result = contract_to_tensor(tree, sum_dims, target_ordinal=frozenset({data_symbol}), ring=ring)
    result = packed.unpack(result, trace.symbol_to_dim)
    data_dim = trace.symbol_to_dim[data_symbol]
    if result.dim() >= -data_dim:
        result = result.movedim(data_dim, -1)
    return result.reshape(-1).expand(layout.size).to(torch.float64)


def _sum_unplated_dims(
    name: str, log_p: Tensor, symbols: dict[int, str], depth: int, enum_symbol: str | None
) -> Tensor:
    """Sums the batch dimensions no plate declares (they belong to one data point's event)."""
    for dim in range(-min(log_p.dim(), depth), 0):
        if dim not in symbols and log_p.shape[dim] > 1:
            if enum_symbol is not None:
                raise ValueError(
                    f"latent site {name!r} has a batch dimension of size {log_p.shape[dim]} at "
                    f"dim {dim} that no plate declares; enumeration needs every batch "
                    "dimension of a discrete latent site inside a plate"
                )
            log_p = log_p.sum(dim, keepdim=True)
    return log_p
