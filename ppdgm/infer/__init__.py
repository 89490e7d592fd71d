"""Inference for any Pyro program: traces and per-data-point log weights, the probe that checks
a program once, exact enumeration, the log-likelihood estimators, and the SVI objectives of the
fast road.

Modules: :mod:`~ppdgm.infer.weights` (traces, log weights), :mod:`~ppdgm.infer.probe`,
:mod:`~ppdgm.infer.enumerate`, :mod:`~ppdgm.infer.stats` (streaming weight statistics),
:mod:`~ppdgm.infer.estimate` (``LogLikelihood``, public as :mod:`ppdgm.estimate`),
:mod:`~ppdgm.infer.iwae` (``WeightedELBO``, ``IWAE``), :mod:`~ppdgm.infer.svi`
(``SVIObjective``, public as :mod:`ppdgm.svi`) and :mod:`~ppdgm.infer.params` (a program's
``pyro.param`` parameters).
"""
