r"""Estimators of ``log p(x)`` for any Pyro program, one value per data point: exact, importance
sampling and ELBO, each with its error.

For data points :math:`x_1, \dots, x_N` (the elements of the model's plate named ``plate``) and a
proposal :math:`q(z \mid x)` (the guide, or the prior when there is none):

- ``"exact"``: :math:`\log p(x_i) = \log \sum_z p(x_i, z)` with every discrete latent variable
  enumerated, or the model's own exact ``log_prob``;
- ``"importance"``: :math:`\log \frac1K \sum_k w_{ik}`, with
  :math:`w_{ik} = p(x_i, z_{ik}) / q(z_{ik} \mid x_i)` and :math:`z_{ik} \sim q`: the IWAE bound,
  below :math:`\log p(x_i)` in expectation and tightening as :math:`K` grows;
- ``"elbo"``: :math:`\frac1K \sum_k \log w_{ik}`, an unbiased estimate of the evidence lower bound
  :math:`E_q[\log p(x_i, z) - \log q(z \mid x_i)] \le \log p(x_i)`.

The log-mean-exp is taken separately for each data point (Pyro's ``RenyiELBO`` and
``vectorized_importance_weights`` sum the log weights over data points first, which estimates
something else when each point has its own latent variables).

Global latent variables (sites outside the data plate) are drawn once per sample and shared by
all data points; each point's weight includes their ``p / q`` ratio, so each estimate is that
point's own marginal :math:`\log \int p(g)\, p(x_i \mid g)\, dg`, as if it were the only data
point. These do not add up to :math:`\log p(x_1, \dots, x_N)`. For :math:`\log p(x_i \mid g)`
at a fixed :math:`g`, condition the model on it (``pyro.condition``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ppdgm._checks import check_int
from ppdgm.infer.enumerate import enumerated_log_prob
from ppdgm.infer.probe import probe
from ppdgm.infer.stats import MeanAccumulator, WeightAccumulator, pareto_threshold
from ppdgm.infer.weights import Layout, log_weights, trace_particles

__all__ = [
    "METHODS",
    "Estimate",
    "LogLikelihood",
    "LowESSWarning",
    "ParetoKWarning",
    "UnreliableWeightsWarning",
    "bounds",
    "bounds_table",
    "comparison_table",
    "warn_unreliable",
]

#: The estimation methods, in the order of their guarantees: a bound, a tighter bound, the value.
METHODS = ("elbo", "importance", "exact")

#: Bytes of sample-site values one vectorized pass may hold when ``chunk_size`` is None.
MEMORY_BUDGET = 2**28


class UnreliableWeightsWarning(UserWarning):
    """Importance weights whose estimate and standard error cannot be trusted (the base of
    :class:`ParetoKWarning` and :class:`LowESSWarning`: catch this one for both)."""


class ParetoKWarning(UnreliableWeightsWarning):
    """Importance weights so heavy-tailed (Pareto ``k`` above the threshold) that the estimate
    and its standard error cannot be trusted."""


class LowESSWarning(UnreliableWeightsWarning):
    """Importance weights where one or two samples carry almost all the weight (a tiny
    effective sample size) for data points whose Pareto ``k`` cannot be estimated (too few
    samples for a tail, or a discrete proposal's few repeated values)."""


@dataclass(frozen=True, eq=False)
class Estimate:
    """Per-data-point estimates of ``log p(x_i)``.

    Attributes:
        log_prob: ``[N]`` estimates, float64.
        stderr: ``[N]`` Monte Carlo standard errors (zeros for exact; NaN with one sample).
        ess: ``[N]`` effective sample sizes of the importance weights, or None.
        method: ``"exact"``, ``"importance"`` or ``"elbo"``.
        num_samples: samples per data point (None for exact).
        pareto_k: ``[N]`` Pareto shape of each point's weights (importance sampling with at least
            25 samples; NaN where the weights have no tail), or None.
    """

    log_prob: Tensor
    stderr: Tensor
    ess: Tensor | None
    method: str
    num_samples: int | None
    pareto_k: Tensor | None = None

    def __len__(self) -> int:
        return self.log_prob.shape[0]

    @classmethod
    def concat(cls, parts: Sequence[Estimate]) -> Estimate:
        """One estimate of the data points of ``parts`` (estimates of disjoint batches of rows,
        made with the same method and number of samples), in order.

        Raises:
            ValueError: for no parts, or parts of different methods or numbers of samples.

        Example:
            >>> a = Estimate(torch.tensor([-1.0]), torch.zeros(1), None, "exact", None)
            >>> Estimate.concat([a, a]).log_prob
            tensor([-1., -1.])
        """
        if not parts:
            raise ValueError("no estimates to concatenate")
        first = parts[0]
        if any((p.method, p.num_samples) != (first.method, first.num_samples) for p in parts):
            raise ValueError("estimates of different methods or sample sizes do not concatenate")

        def cat(name: str) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        return cls(
            torch.cat([p.log_prob for p in parts]),
            torch.cat([p.stderr for p in parts]),
            cat("ess"),
            first.method,
            first.num_samples,
            cat("pareto_k"),
        )

    @property
    def total(self) -> float:
        """``sum_i log p(x_i)``."""
        return float(self.log_prob.sum())

    @property
    def total_stderr(self) -> float:
        """Standard error of :attr:`total`, the points' samples being independent (with global
        latent variables they are not, and this understates it)."""
        return float(self.stderr.pow(2).sum().sqrt())

    @property
    def label(self) -> str:
        """The method and the number of samples, e.g. ``importance K=1000``."""
        return self.method if self.num_samples is None else f"{self.method} K={self.num_samples}"

    def summary(self) -> str:
        """A few lines: the total with its standard error, the mean per point, and the
        diagnostics of importance sampling.

        Example:
            >>> est = Estimate(torch.tensor([-1.0, -3.0]), torch.zeros(2), None, "exact", None)
            >>> print(est.summary())
            exact, 2 data points
              sum of log p(x_i)  -4.0000 (exact)
              mean per point     -2.0000
        """
        n = len(self)
        error = "(exact)" if self.method == "exact" else f"± {self.total_stderr:.4f} (stderr)"
        lines = [
            f"{self.label}, {n:,} data points",
            f"  sum of log p(x_i)  {self.total:.4f} {error}",
            f"  mean per point     {self.total / max(n, 1):.4f}",
        ]
        if self.ess is not None and n:
            lines.append(
                f"  ESS                min {float(self.ess.min()):.1f}, "
                f"median {float(self.ess.median()):.1f} of {self.num_samples:,} samples"
            )
        if self.pareto_k is not None and n:
            k = self.pareto_k[~torch.isnan(self.pareto_k)]
            limit = pareto_threshold(self.num_samples or 0)
            worst = f"max {float(k.max()):.2f}" if k.numel() else "n/a (flat weights)"
            lines.append(f"  Pareto k           {worst} (trustworthy up to {limit:.2f})")
        return "\n".join(lines)


class LogLikelihood:
    r"""Estimates ``log p(x_i)`` for each data point of a Pyro program, shaped like ``Predictive``.

    Called with the model's arguments, it returns an :class:`Estimate` with one value per element
    of the model's plate named ``plate``. Samples are vectorized by a plate of ``chunk_size``
    particles left of the program's plates, so the model and guide must broadcast over a leading
    dimension (as for Pyro's ``vectorize_particles=True``); memory grows with ``chunk_size``, not
    with ``num_samples``. Estimation runs under ``torch.no_grad()``.

    ``method="importance"`` warns (:class:`ParetoKWarning`) when the Pareto shape of some data
    point's weights exceeds ``min(1 - 1 / log10(K), 0.7)``: the proposal's tails are too light for
    that point and the estimate (and its stderr) is unreliable.

    Arguments:
        model: a Pyro program with a vectorized plate named ``plate`` around its observations.
        guide: the proposal ``q(z | x)``, a program sampling every latent site of the model (a
            hand-written guide, an autoguide, an amortized encoder); None: the prior. Not used by
            ``method="exact"``.
        method: ``"importance"``, ``"exact"`` or ``"elbo"``.
        num_samples: samples ``K`` per data point (importance sampling, ELBO).
        plate: the name of the plate over data points.
        chunk_size: samples drawn per vectorized pass; None picks as many as keep the sample
            sites' values under about 256 MiB.
        analytic_kl: for the ELBO, use ``-KL(q || p)`` in place of ``log p(z) - log q(z)`` at
            latent sites where PyTorch has the divergence and the guide samples in the model's
            order.

    ``method="exact"`` uses a model's own exact ``log_prob`` when the model is a bound method
    ``obj.model`` and ``obj.log_prob`` exists (a :class:`~ppdgm.bn.DiscreteBN`'s ``bn.model``
    uses ``bn.log_prob``); otherwise it enumerates the discrete latent sites with Pyro's
    TraceEnum machinery, keeping the data plate.

    Raises:
        ValueError: for an unknown method, ``num_samples`` or ``chunk_size`` below 1, and (when
            called) for a model without a plate named ``plate``, observations that do not match
            it or hold NaN, a guide whose sites do not match the model's latent sites, or
            continuous latent sites with ``method="exact"``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> x = torch.tensor([0.0, 2.0])
        >>> exact = dist.Normal(0.0, 2**0.5).log_prob(x)  # x ~ N(0, 2)
        >>> pyro.set_rng_seed(0)
        >>> est = LogLikelihood(model, num_samples=20_000)(x)
        >>> bool(((est.log_prob - exact).abs() < 4 * est.stderr).all())
        True
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None = None,
        *,
        method: str = "importance",
        num_samples: int = 1000,
        plate: str = "data",
        chunk_size: int | None = None,
        analytic_kl: bool = True,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        check_int("num_samples", num_samples)
        if chunk_size is not None:
            check_int("chunk_size", chunk_size)
        self.model = model
        self.guide = guide
        self.method = method
        self.num_samples = int(num_samples)
        self.plate = plate
        self.chunk_size = chunk_size
        self.analytic_kl = analytic_kl

    def __call__(self, *args: Any, **kwargs: Any) -> Estimate:
        """Estimates ``log p(x_i)`` for the data the model sees when called with these
        arguments."""
        with torch.no_grad():
            if self.method == "exact":
                return self._exact(args, kwargs)
            layout, _, _ = probe(self.model, self.guide, args, kwargs, self.plate)
            # the probe has validated the sites and the data; the sampling passes need not
            with pyro.validation_enabled(False):
                if self.method == "importance":
                    return self._importance(args, kwargs, layout)
                return self._elbo(args, kwargs, layout)

    def __repr__(self) -> str:
        samples = "" if self.method == "exact" else f", num_samples={self.num_samples}"
        return f"LogLikelihood(method={self.method!r}{samples}, plate={self.plate!r})"

    def _exact(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Estimate:
        layout, model_trace, _ = probe(self.model, None, args, kwargs, self.plate)
        own = _own_log_prob(self.model)
        continuous_latent = any(
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and not getattr(site["fn"], "has_enumerate_support", False)
            for site in model_trace.nodes.values()
        )
        # a model's own log_prob is exact only where nothing continuous is summed out (a
        # dequantized flow's log_prob, for one, is a bound): then enumeration decides, and
        # refuses continuous latent sites with a clear error
        if own is not None and not continuous_latent:
            log_p = torch.as_tensor(own(*args, **kwargs)).to(torch.float64)
            if tuple(log_p.shape) != (layout.size,):
                raise ValueError(
                    f"{own.__qualname__} returned shape {tuple(log_p.shape)}, expected "
                    f"({layout.size},): one value per element of plate {self.plate!r}"
                )
        else:
            log_p = enumerated_log_prob(self.model, args, kwargs, layout, model_trace)
        return Estimate(log_p, torch.zeros_like(log_p), None, "exact", None)

    def _chunks(self, layout: Layout) -> list[int]:
        chunk = self.chunk_size or max(1, MEMORY_BUDGET // layout.bytes_per_particle)
        chunk = min(chunk, self.num_samples)
        sizes = [chunk] * (self.num_samples // chunk)
        if self.num_samples % chunk:
            sizes.append(self.num_samples % chunk)
        return sizes

    def _importance(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], layout: Layout
    ) -> Estimate:
        stats = WeightAccumulator(self.num_samples)
        for k in self._chunks(layout):
            traces = trace_particles(self.model, self.guide, args, kwargs, k, layout)
            stats.add(log_weights(*traces, layout))
        log_p, stderr, ess, shape = stats.result()
        warn_unreliable(ess, shape, self.num_samples)
        return Estimate(log_p, stderr, ess, "importance", self.num_samples, shape)

    def _elbo(self, args: tuple[Any, ...], kwargs: dict[str, Any], layout: Layout) -> Estimate:
        stats = MeanAccumulator()
        for k in self._chunks(layout):
            traces = trace_particles(self.model, self.guide, args, kwargs, k, layout)
            stats.add(log_weights(*traces, layout, analytic_kl=self.analytic_kl))
        elbo, stderr = stats.result()
        return Estimate(elbo, stderr, None, "elbo", self.num_samples)


def bounds(
    model: Any,
    x: Any,
    samples: Sequence[int],
    rows_per_pass: int = 100,
    *,
    seed: int | None = None,
) -> tuple[dict[str, Estimate], list[str]]:
    """The ELBO (with the largest ``K`` of ``samples``) and the importance-weighted bounds with
    each ``K`` of ``samples``, per row of ``x`` (a tensor, or a tuple or dict of tensors, see
    :mod:`ppdgm.batch`), of a module with Pyro programs ``model`` and ``guide``, by label
    (``"ELBO (K samples)"``, ``"IWAE K=k"``); and the labels whose importance weights were
    flagged as unreliable (:class:`UnreliableWeightsWarning`, caught here).

    With ``seed``, each pass of ``rows_per_pass`` rows draws from a stream seeded by ``(seed,
    estimate, pass)``, so a row's numbers do not depend on what else is scored. In a
    ``torch.distributed`` group (every process calling with the same arguments), the passes are
    dealt out to the processes and the estimates gathered: with ``seed``, the per-row numbers
    of one process exactly.

    Example:
        >>> from ppdgm.models import VAE
        >>> vae = VAE(6, 2, [8])
        >>> found, notes = bounds(vae, torch.bernoulli(torch.full((5, 6), 0.5)), [1, 10])
        >>> list(found)
        ['ELBO (10 samples)', 'IWAE K=1', 'IWAE K=10']
    """
    from ppdgm.batch import as_arguments, check_rows, num_rows, select_rows
    from ppdgm.distributed import deal_out

    check = getattr(model, "check", None)
    x = check(x) if check is not None and isinstance(x, Tensor) else check_rows(x, "x")
    if num_rows(x) == 0:
        raise ValueError("there are no rows to score: x has 0 rows")
    found: dict[str, Estimate] = {}
    methods = [("elbo", max(samples))] + [("importance", k) for k in samples]
    notes = []
    for m, (method, k) in enumerate(methods):
        estimator = LogLikelihood(model.model, model.guide, method=method, num_samples=k)

        def score(start: int, stop: int, estimator: LogLikelihood = estimator) -> Estimate:
            args, kwargs = as_arguments(select_rows(x, slice(start, stop)))
            return estimator(*args, **kwargs)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnreliableWeightsWarning)
            parts = deal_out(num_rows(x), rows_per_pass, score, seed=seed, stream=m)
        unreliable = any(issubclass(w.category, UnreliableWeightsWarning) for w in caught)
        label = f"ELBO ({k} samples)" if method == "elbo" else f"IWAE K={k}"
        found[label] = Estimate.concat(parts)
        if unreliable:
            notes.append(label)
    return found, notes


def bounds_table(found: Mapping[str, Estimate], notes: Sequence[str] = ()) -> str:
    """The estimates of :func:`bounds` as :func:`comparison_table` prints them, with a note
    on the unreliable ones."""
    table = comparison_table(found)
    if notes:
        table += (
            f"\nnote: unreliable importance weights (heavy-tailed, Pareto k above the threshold, "
            f"or one sample carrying almost all the weight) for some rows in {', '.join(notes)}: "
            "those estimates are unreliable; the guide's tails are too light for the posterior"
        )
    return table


def comparison_table(estimates: Sequence[Estimate] | Mapping[str, Estimate]) -> str:
    r"""A table comparing estimates of the same data: total, standard error, mean per point,
    the gap to the exact value when one is given, and the diagnostics.

    In expectation ``ELBO <= IWAE_K <= IWAE_{K'} <= exact`` for ``K <= K'``.

    Arguments:
        estimates: the estimates, labelled by :attr:`Estimate.label` or by the mapping's keys.

    Example:
        >>> exact = Estimate(torch.tensor([-2.0, -4.0]), torch.zeros(2), None, "exact", None)
        >>> elbo = Estimate(torch.tensor([-2.5, -4.5]), torch.full((2,), 0.1), None, "elbo", 100)
        >>> print(comparison_table([elbo, exact]))
        method         sum log p  ± stderr  per point  vs exact  min ESS  max k
        elbo K=100       -7.0000    0.1414    -3.5000   -1.0000        -      -
        exact            -6.0000         0    -3.0000         0        -      -
    """
    rows = (
        estimates.items() if isinstance(estimates, Mapping) else [(e.label, e) for e in estimates]
    )
    rows = list(rows)
    reference = next((e.total for _, e in rows if e.method == "exact"), None)
    width = max([len("method"), *(len(label) for label, _ in rows)])
    header = f"{'method':<{width}}  {'sum log p':>10}  {'± stderr':>8}  {'per point':>9}"
    header += f"  {'vs exact':>8}  {'min ESS':>7}  {'max k':>5}"
    lines = [header]
    for label, est in rows:
        n = max(len(est), 1)
        error = "0" if est.method == "exact" else f"{est.total_stderr:.4f}"
        error = error if error != "nan" else "-"  # one sample: no spread to measure
        gap = "-"
        if reference is not None:
            gap = "0" if est.method == "exact" else f"{est.total - reference:.4f}"
        ess = "-" if est.ess is None else f"{float(est.ess.min()):.1f}"
        k = "-"
        if est.pareto_k is not None and not torch.isnan(est.pareto_k).all():
            k = f"{float(est.pareto_k[~torch.isnan(est.pareto_k)].max()):.2f}"
        lines.append(
            f"{label:<{width}}  {est.total:>10.4f}  {error:>8}  {est.total / n:>9.4f}"
            f"  {gap:>8}  {ess:>7}  {k:>5}"
        )
    return "\n".join(lines)


def _own_log_prob(model: Callable[..., Any]) -> Callable[..., Any] | None:
    owner = getattr(model, "__self__", None)
    if owner is None or getattr(model, "__name__", None) != "model":
        return None
    log_prob = getattr(owner, "log_prob", None)
    return log_prob if callable(log_prob) else None


def warn_unreliable(
    ess: Tensor, shape: Tensor | None, num_samples: int, *, stacklevel: int = 4
) -> None:
    """Warns where importance weights cannot be trusted: a :class:`ParetoKWarning` for points
    whose Pareto ``k`` (``shape``) exceeds :func:`~ppdgm.infer.stats.pareto_threshold`, and a
    :class:`LowESSWarning` for points without a ``k`` whose effective sample size is below
    :func:`low_ess_threshold`."""
    if shape is not None:
        _warn_pareto(shape, num_samples, stacklevel + 1)
    _warn_low_ess(ess, shape, num_samples, stacklevel + 1)


def _warn_pareto(shape: Tensor, num_samples: int, stacklevel: int) -> None:
    limit = pareto_threshold(num_samples)
    bad = shape > limit
    if bool(bad.any()):
        worst = int(torch.nan_to_num(shape, nan=-math.inf).argmax())
        warnings.warn(
            ParetoKWarning(
                f"importance sampling is unreliable for {int(bad.sum())} of {shape.numel()} "
                f"data points: Pareto k above {limit:.2f} (worst {float(shape[worst]):.2f}, at "
                f"point {worst}); the proposal's tails are too light: use a better guide or more "
                "samples"
            ),
            stacklevel=stacklevel,
        )


def low_ess_threshold(num_samples: int) -> float:
    """The effective sample size below which ``K`` importance samples are flagged where no
    Pareto ``k`` can be estimated: ``max(2, K / 100)``, i.e. one sample (or a hundredth of them)
    carrying almost all the weight; never for ``K = 1``.

    Example:
        >>> low_ess_threshold(1), low_ess_threshold(50), low_ess_threshold(1000)
        (0.0, 2.0, 10.0)
    """
    return 0.0 if num_samples <= 1 else max(2.0, num_samples / 100)


def _warn_low_ess(ess: Tensor, shape: Tensor | None, num_samples: int, stacklevel: int) -> None:
    # shape None: K too small to fit any tail, where IWAE_K is used as the bound it is
    if shape is None:
        return
    # ess 0: every weight is 0, an estimate of -inf, which says so itself
    bad = torch.isnan(shape) & (ess > 0.5) & (ess < low_ess_threshold(num_samples))
    if bool(bad.any()):
        worst = int(torch.where(bad, ess, torch.inf).argmin())
        warnings.warn(
            LowESSWarning(
                f"importance sampling is unreliable for {int(bad.sum())} of {ess.numel()} data "
                f"points: an effective sample size below {low_ess_threshold(num_samples):g} of "
                f"{num_samples} samples (worst {float(ess[worst]):.2f}, at point {worst}), and "
                "too few distinct weights to estimate a Pareto k: the proposal rarely reaches "
                "where the posterior is; use a guide, or more samples"
            ),
            stacklevel=stacklevel,
        )
