"""Graphs of models: DAG compilation (:mod:`~ppdgm.graph.dag`), d-separation and Markov
blankets (:mod:`~ppdgm.graph.independence`, public as :mod:`ppdgm.independence`), the
dependency graphs of Pyro programs and their drawings (:mod:`~ppdgm.graph.inspect`, public as
:mod:`ppdgm.inspect`), and conditional-independence tests on samples
(:mod:`~ppdgm.graph.citest`).

A network is anything with a ``dag`` attribute that is a ``networkx.DiGraph``
(:func:`ppdgm.graph.dag.network_dag`), as :class:`ppdgm.bn.DiscreteBN` is: this package does
not import :mod:`ppdgm.bn`.
"""
