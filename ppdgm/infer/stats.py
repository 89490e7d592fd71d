"""Streaming per-data-point statistics of log weights: log-mean-exp, stderr, ESS and Pareto k.

Log weights arrive in chunks ``[c, N]`` (``c`` samples of ``N`` data points); each accumulator keeps
``O(N)`` numbers (plus the ``O(sqrt(K))`` largest weights per point for the Pareto fit), so the
memory does not grow with the number of samples ``K``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MeanAccumulator", "WeightAccumulator", "pareto_k", "pareto_threshold", "tail_size"]

#: Fewer tail samples than this and the Pareto shape is not estimated (NaN).
MIN_TAIL = 5


def tail_size(num_samples: int) -> int:
    """How many of the largest weights the Pareto fit uses: ``ceil(min(K / 5, 3 sqrt(K)))``
    (Vehtari et al. 2024), or 0 when that is below :data:`MIN_TAIL`."""
    m = math.ceil(min(0.2 * num_samples, 3 * math.sqrt(num_samples)))
    return m if m >= MIN_TAIL else 0


def pareto_threshold(num_samples: int) -> float:
    """The largest trustworthy Pareto shape for ``K`` samples: ``min(1 - 1 / log10(K), 0.7)``."""
    if num_samples <= 10:
        return 0.0
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def pareto_k(top: Tensor) -> Tensor:
    """The shape ``k`` of a generalized Pareto distribution fitted to the largest weights.

    Arguments:
        top: ``[M + 1, N]`` log weights, the ``M + 1`` largest of each data point in decreasing
            order; the smallest of them is the threshold the other ``M`` exceed.

    Returns:
        ``[N]``: the shape estimated as Zhang and Stephens (2009) do with the weakly informative
        prior of Vehtari et al. (PSIS); NaN where fewer than half of the ``M + 1`` weights are
        distinct (to nine digits): equal weights (an exact proposal) or a discrete proposal's
        few repeated values, which have no tail to fit.
    """
    top = top.to(torch.float64)
    gaps = top[:-1] - top[1:]
    distinct = 1 + (gaps > 1e-9 * top[:-1].abs().clamp_min(1)).sum(0)
    flat = (distinct < top.shape[0] / 2) | ~torch.isfinite(top[0])
    scaled = torch.exp(top - top[:1])  # weights relative to the largest, in (0, 1]
    x = (scaled[:-1] - scaled[-1:]).flip(0).T.clamp_min(0)  # [N, M] exceedances, ascending
    n = x.shape[-1]
    x = torch.where(flat[:, None], torch.linspace(1, 2, n, dtype=x.dtype), x)
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=x.dtype)
    quartile = x[:, int(n / 4 + 0.5) - 1].clamp_min(1e-8 * x[:, -1])
    b = 1 / x[:, -1:] + (1 - torch.sqrt(m / (j - 0.5))) / (3 * quartile[:, None])  # [N, m]
    k = torch.log1p(-b[:, :, None] * x[:, None, :]).mean(-1)
    profile = n * (torch.log(-b / k) - k - 1)
    b_post = (b * torch.softmax(profile, -1)).sum(-1)
    k_post = torch.log1p(-b_post[:, None] * x).mean(-1)
    k_post = (n * k_post + 10 * 0.5) / (n + 10)
    return torch.where(flat, torch.nan, k_post)


class WeightAccumulator:
    """Importance-sampling statistics per data point from log weights ``log w`` in chunks.

    With ``K`` weights per point, ``log_mean = log (1/K) sum_k w_k``; the effective sample size is
    ``ESS = (sum w)^2 / sum w^2``; the standard error of ``log_mean`` by the delta method is the
    relative standard error of the mean weight, ``sqrt((K / ESS - 1) / (K - 1))``.

    Arguments:
        num_samples: the ``K`` that will have been added when :meth:`result` is called.
    """

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self.count = 0
        self._tail = tail_size(num_samples) + 1 if tail_size(num_samples) else 0
        self._lse: Tensor | None = None
        self._lse2: Tensor | None = None
        self._top: Tensor | None = None

    def add(self, log_weights: Tensor) -> None:
        """Adds a chunk ``[c, N]`` of log weights."""
        lw = log_weights.detach().to(torch.float64)
        lse = torch.logsumexp(lw, 0)
        lse2 = torch.logsumexp(2 * lw, 0)
        if self._lse is None or self._lse2 is None:
            self._lse, self._lse2 = lse, lse2
        else:
            self._lse = torch.logaddexp(self._lse, lse)
            self._lse2 = torch.logaddexp(self._lse2, lse2)
        if self._tail:
            pool = lw if self._top is None else torch.cat([self._top, lw])
            self._top = pool.topk(min(self._tail, pool.shape[0]), dim=0).values
        self.count += lw.shape[0]

    def result(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(log_mean, stderr, ess, pareto_k)``, each ``[N]``; ``pareto_k`` is None when ``K``
        is too small to fit a tail, and ``stderr`` is NaN for ``K = 1``."""
        assert self._lse is not None and self._lse2 is not None
        k = self.count
        log_mean = self._lse - math.log(k)
        ess = torch.exp(2 * self._lse - self._lse2)
        ess = torch.where(torch.isfinite(self._lse), ess, torch.zeros_like(ess))
        if k > 1:
            stderr = ((k / ess - 1).clamp_min(0) / (k - 1)).sqrt()
        else:
            stderr = torch.full_like(log_mean, torch.nan)
        shape = None
        if self._top is not None and self._top.shape[0] == self._tail:
            shape = pareto_k(self._top)
        return log_mean, stderr, ess, shape


class MeanAccumulator:
    """Running mean and standard error of the mean per data point, from chunks ``[c, N]``
    (Chan et al.'s pairwise update, stable for long runs)."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def add(self, values: Tensor) -> None:
        """Adds a chunk ``[c, N]`` of samples."""
        v = values.detach().to(torch.float64)
        c = v.shape[0]
        mean = v.mean(0)
        m2 = ((v - mean) ** 2).sum(0)
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = mean, m2
        else:
            n = self.count
            delta = mean - self._mean
            self._mean = self._mean + delta * (c / (n + c))
            self._m2 = self._m2 + m2 + delta**2 * (n * c / (n + c))
        self.count += c

    def result(self) -> tuple[Tensor, Tensor]:
        """``(mean, stderr)``, each ``[N]``; ``stderr`` is NaN for a single sample."""
        assert self._mean is not None and self._m2 is not None
        n = self.count
        if n < 2:
            return self._mean, torch.full_like(self._mean, torch.nan)
        return self._mean, (self._m2 / (n - 1) / n).sqrt()
