r"""Approximate inference on a network: importance sampling through its Pyro program, for
networks whose exact plans do not fit in memory.

The proposal is the network itself (likelihood weighting): the missing cells of each row are
drawn from their tables given the parents drawn before them, and each draw weighs
:math:`w_k = \prod_{v \text{ observed}} p(x_v \mid \text{pa}_v^{(k)})`. Then

- ``log p(observed cells)`` is :math:`\log \frac1K \sum_k w_k` (:class:`LogLikelihood`, with its
  standard error, effective sample size and Pareto :math:`k`);
- a posterior marginal is the self-normalized average
  :math:`\hat p(v = s) = \sum_k \tilde w_k \, 1[v^{(k)} = s]` with
  :math:`\tilde w_k = w_k / \sum_j w_j`, and its standard error by the delta method,
  :math:`\sqrt{\sum_k \tilde w_k^2 (1[v^{(k)} = s] - \hat p)^2}`.

The weights are checked as for any program (:func:`ppdgm.infer.estimate.warn_unreliable`): a
Pareto :math:`k` above the threshold, or a tiny effective sample size, warns that the numbers
and their error bars cannot be trusted. Rows that observe many variables make the network a poor
proposal; the warnings say so rather than return a confident wrong number.

Rows are estimated in passes of :data:`ROWS_PER_PASS` (:func:`ppdgm.distributed.deal_out`):
with a ``seed``, each pass draws from a stream of its own, so a row's numbers do not depend on
rows of other passes, and in a ``torch.distributed`` group the passes are dealt out to the
processes and gathered, giving every process one process's numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyro
import torch
from torch import Tensor

from ppdgm._checks import check_int
from ppdgm.bn.evidence import as_frame, check_columns, query_variables
from ppdgm.distributed import deal_out
from ppdgm.infer.estimate import (
    Estimate,
    LogLikelihood,
    UnreliableWeightsWarning,
    warn_unreliable,
)
from ppdgm.infer.probe import probe
from ppdgm.infer.stats import WeightAccumulator, tail_size
from ppdgm.infer.weights import log_weights, trace_particles

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["PosteriorEstimate", "importance_log_prob", "importance_posterior"]

#: Samples drawn per vectorized pass (bounds memory: samples x rows x variables bytes).
PARTICLES_PER_PASS = 256

#: Rows estimated together: a pass of rows, seeded on its own and computed by one process.
ROWS_PER_PASS = 1024


@dataclass(frozen=True)
class PosteriorEstimate:
    """Importance-sampled posterior marginals of each row.

    Attributes:
        probs: for each query variable, ``[N, card]`` estimates of ``p(v = s | row n)``.
        stderr: their standard errors, same shapes.
        ess: ``[N]`` effective sample sizes of the rows' weights.
        pareto_k: ``[N]`` Pareto shapes of the weights' tails (None for too few samples).
        num_samples: ``K``, samples per row.
    """

    probs: dict[str, Tensor]
    stderr: dict[str, Tensor]
    ess: Tensor
    pareto_k: Tensor | None
    num_samples: int

    def as_frame(self, bn: DiscreteBN, index: Any = None) -> pd.DataFrame:
        """The estimates as one DataFrame with columns ``(variable, state)``."""
        columns = pd.MultiIndex.from_tuples(
            [(v, s) for v in self.probs for s in bn.states[v]], names=["variable", "state"]
        )
        values = torch.cat(list(self.probs.values()), 1).numpy()
        return pd.DataFrame(values, index=index, columns=columns)


def importance_log_prob(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any],
    *,
    num_samples: int = 1000,
    seed: int | None = None,
) -> Estimate:
    """``log p(observed cells)`` of each row by importance sampling (see the module).

    Arguments:
        bn: the network.
        data: rows of state names, as for :meth:`DiscreteBN.log_prob`.
        num_samples: ``K`` samples per row.
        seed: a private seed for the draws (None: Pyro's and torch's streams as they are).
    """
    check_int("num_samples", num_samples)
    frame = as_frame(data)
    check_columns(bn, frame)
    if len(frame) == 0:
        return _empty_estimate(num_samples)
    if not _observes_anything(frame):
        # every weight is one: log p = 0 exactly (the program would observe nothing)
        zeros = torch.zeros(len(frame), dtype=torch.float64)
        ess = torch.full_like(zeros, float(num_samples))
        shape = torch.full_like(zeros, torch.nan) if tail_size(num_samples) else None
        return Estimate(zeros, zeros.clone(), ess, "importance", num_samples, shape)
    estimate = LogLikelihood(bn.model, method="importance", num_samples=num_samples, plate=bn.plate)

    def one_pass(start: int, stop: int) -> Estimate:
        with warnings.catch_warnings():  # warned below, with the rows counted over all passes
            warnings.simplefilter("ignore", UnreliableWeightsWarning)
            return estimate(frame.iloc[start:stop])

    found = Estimate.concat(deal_out(len(frame), ROWS_PER_PASS, one_pass, seed=seed))
    warn_unreliable(found.ess, found.pareto_k, num_samples, stacklevel=4)
    return found


def importance_posterior(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any],
    variables: Sequence[str] | str,
    *,
    num_samples: int = 1000,
    seed: int | None = None,
) -> PosteriorEstimate:
    """Posterior marginals of each row by self-normalized importance sampling (see the module).

    Raises:
        ValueError: for an unknown variable or state, or a row that no sample reaches (every
            weight zero: evidence too rare for ``K`` samples, or impossible).
    """
    check_int("num_samples", num_samples)
    query = query_variables(bn, variables)
    frame = as_frame(data)
    check_columns(bn, frame)
    if len(frame) == 0:
        empty = _empty_estimate(num_samples)
        cards = bn.cardinalities
        probs = {v: torch.zeros(0, cards[v], dtype=torch.float64) for v in query}
        stderr = {v: torch.zeros(0, cards[v], dtype=torch.float64) for v in query}
        return PosteriorEstimate(probs, stderr, empty.ess, empty.pareto_k, num_samples)
    if not _observes_anything(frame):
        return _prior_draws(bn, len(frame), query, num_samples, seed)
    parts = deal_out(
        len(frame),
        ROWS_PER_PASS,
        lambda a, b: _weighted_draws(bn, frame.iloc[a:b], query, num_samples),
        seed=seed,
    )
    log_p = torch.cat([part[0] for part in parts])
    ess = torch.cat([part[1] for part in parts])
    shapes = [part[2] for part in parts]
    shape = None if any(k is None for k in shapes) else torch.cat(shapes)
    warn_unreliable(ess, shape, num_samples, stacklevel=4)
    unreached = ~torch.isfinite(log_p)
    if bool(unreached.any()):
        rows = unreached.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ValueError(
            f"none of the {num_samples:,} samples is compatible with the evidence of row(s) "
            f"{shown} (counting from 0): the evidence is impossible, or too rare for this many "
            "samples; use more samples, or exact inference"
        )
    probs = {v: torch.cat([part[3][v] for part in parts]) for v in query}
    stderr = {v: torch.cat([part[4][v] for part in parts]) for v in query}
    return PosteriorEstimate(probs, stderr, ess, shape, num_samples)


def _observes_anything(frame: pd.DataFrame) -> bool:
    """Whether some cell of ``frame`` is observed (the program then has data to weigh)."""
    return bool(frame.notna().to_numpy().any())


def _prior_draws(
    bn: DiscreteBN, rows: int, query: Sequence[str], num_samples: int, seed: int | None
) -> PosteriorEstimate:
    """The estimate for rows that observe nothing: ``num_samples`` ancestral draws per row,
    every weight one (the program would observe nothing, so it is not run)."""
    from ppdgm.bn.sampling import sample_codes

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    codes = sample_codes(bn, num_samples * rows, generator)
    cards = bn.cardinalities
    probs, stderr = {}, {}
    for v in query:
        onehot = torch.nn.functional.one_hot(codes[v].reshape(num_samples, rows), cards[v])
        p = onehot.to(torch.float64).mean(0)
        probs[v], stderr[v] = p, (p * (1 - p) / num_samples).sqrt()
    ess = torch.full((rows,), float(num_samples), dtype=torch.float64)
    shape = torch.full_like(ess, torch.nan) if tail_size(num_samples) else None
    return PosteriorEstimate(probs, stderr, ess, shape, num_samples)


def _empty_estimate(num_samples: int) -> Estimate:
    """The estimate of no rows: empty tensors (a Pareto shape only where
    :class:`~ppdgm.infer.stats.WeightAccumulator` would give one)."""
    empty = torch.zeros(0, dtype=torch.float64)
    shape = empty.clone() if tail_size(num_samples) else None
    return Estimate(empty, empty.clone(), empty.clone(), "importance", num_samples, shape)


def _weighted_draws(
    bn: DiscreteBN, frame: pd.DataFrame, query: Sequence[str], num_samples: int
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor], dict[str, Tensor]]:
    """One pass of rows: ``log p`` estimates, effective sample sizes, Pareto shapes, and the
    self-normalized posterior marginals with their standard errors (NaN for a row that no
    sample reaches; the caller names those rows)."""
    args: tuple[Any, ...] = (frame,)
    cards = bn.cardinalities
    with torch.no_grad():
        layout, _, _ = probe(bn.model, None, args, {}, bn.plate)
        stats = WeightAccumulator(num_samples)
        chunks_lw, chunks_values = [], {v: [] for v in query}
        with pyro.validation_enabled(False):
            done = 0
            while done < num_samples:
                k = min(PARTICLES_PER_PASS, num_samples - done)
                model_trace, guide_trace = trace_particles(bn.model, None, args, {}, k, layout)
                lw = log_weights(model_trace, guide_trace, layout)
                stats.add(lw)
                chunks_lw.append(lw)
                for v in query:
                    value = model_trace.nodes[v]["value"]
                    chunks_values[v].append(value.expand(k, layout.size).reshape(k, -1))
                done += k
    log_p, _, ess, shape = stats.result()
    weights = torch.softmax(torch.cat(chunks_lw).to(torch.float64), 0)  # [K, N], columns sum to 1
    probs, stderr = {}, {}
    for v in query:
        values = torch.cat(chunks_values[v]).long()  # [K, N]
        onehot = torch.nn.functional.one_hot(values, cards[v]).to(torch.float64)  # [K, N, c]
        p = (weights[..., None] * onehot).sum(0)
        var = (weights[..., None] ** 2 * (onehot - p) ** 2).sum(0)
        probs[v], stderr[v] = p, var.sqrt()
    return log_p, ess, shape, probs, stderr
