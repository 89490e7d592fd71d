r"""The fully visible sigmoid belief network: one logistic regression per variable."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.distributions import Bernoulli
from torch import Tensor, nn
from torch.nn import functional as F

from ppdgm.autoregressive import Autoregressive, Chain
from ppdgm.base import register_model
from ppdgm.settings import from_data

__all__ = ["FVSBN"]


@register_model("fvsbn")
class FVSBN(Autoregressive):
    r"""Fully visible sigmoid belief network over ``dim`` binary variables (Frey, 1998).

    .. math::

        p(x_i = 1 \mid x_{<i}) = \sigma\Big(b_i + \sum_{j<i} W_{ij} x_j\Big),

    a logistic regression of each variable on the ones before it, in the natural order:
    ``n + n(n-1)/2 = n(n+1)/2`` parameters. ``log_prob`` is one masked matrix product.

    Arguments:
        dim: the number of binary variables ``n``.

    Example:
        >>> model = FVSBN(3)
        >>> x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        >>> model.log_prob(x).shape, model.sample(5, seed=0).shape
        (torch.Size([2]), torch.Size([5, 3]))
        >>> model.num_parameters  # 3 biases and 3 weights below the diagonal
        6

    References:
        Frey, B. J. (1998). Graphical models for machine learning and digital communication.
    """

    mask: Tensor
    _formula = "n(n+1)/2"

    @dataclass(frozen=True)
    class Config:
        """FVSBN's settings: its size, which the data decide."""

        dim: int = from_data()

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._record(dim=dim)
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(dim, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("mask", torch.ones(dim, dim).tril(-1))

    @property
    def num_parameters(self) -> int:
        return self.dim * (self.dim + 1) // 2

    def logits(self, x: Tensor) -> Tensor:
        """``[N, dim]`` logits of every conditional ``p(x_i = 1 | x_<i)``, in one pass."""
        return F.linear(x, self.weight * self.mask, self.bias)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of binary ``[N, dim]`` data, exactly: ``[N]``."""
        x = self.check(x)
        return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(-1)

    def _conditionals(self, shape: tuple[int, ...]) -> Chain:
        values: list[Tensor] = []
        for i in range(self.dim):
            logit = self.bias[i].expand(shape)
            if values:
                earlier = torch.stack(torch.broadcast_tensors(*values), -1)
                logit = logit + earlier @ self.weight[i, :i]
            value = yield Bernoulli(logits=logit)
            values.append(value)
