r"""The neural autoregressive density estimator: tied weights, ``O(nd)`` parameters and time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.distributions import Bernoulli
from torch import Tensor, nn
from torch.nn import functional as F

from ppdgm._checks import check_int
from ppdgm.autoregressive import Autoregressive, Chain
from ppdgm.base import register_model
from ppdgm.settings import from_data, setting

__all__ = ["NADE"]


@register_model("nade")
class NADE(Autoregressive):
    r"""Neural autoregressive density estimator over ``dim`` binary variables (Larochelle and
    Murray, 2011), in the natural order.

    .. math::

        h_i = \sigma\Big(c + \sum_{j<i} W_{:,j}\, x_j\Big), \qquad
        p(x_i = 1 \mid x_{<i}) = \sigma(b_i + V_{i,:} h_i).

    The hidden pre-activations share ``W``: ``a_{i+1} = a_i + W_{:,i} x_i``, so all ``n``
    conditionals cost ``O(nd)`` together; ``2nd + n`` free parameters (``W``'s last column,
    which would feed a conditional after the last, is kept for simplicity but never used).
    ``log_prob`` computes the ``a_i`` of every row at once with a cumulative sum (memory: two
    ``N x n x d`` tensors).

    Arguments:
        dim: the number of binary variables ``n``.
        hidden_dim: the number of hidden units ``d``.

    Example:
        >>> model = NADE(4, 8)
        >>> model.log_prob(torch.tensor([[0.0, 1.0, 1.0, 0.0]])).shape
        torch.Size([1])
        >>> model.num_parameters  # 2 * 4 * 8 + 4
        68

    References:
        Larochelle, H. and Murray, I. (2011). The neural autoregressive distribution estimator.
        AISTATS.
    """

    _formula = "2nd + n"

    @dataclass(frozen=True)
    class Config:
        """NADE's settings (see the class)."""

        dim: int = from_data()
        hidden_dim: int = setting(500, "hidden units d", flag="--hidden", metavar="D")

    def __init__(self, dim: int, hidden_dim: int = 500) -> None:
        super().__init__(dim)
        check_int("hidden_dim", hidden_dim)
        self._record(dim=dim, hidden_dim=hidden_dim)
        self.hidden_dim = hidden_dim
        self.W = nn.Parameter(torch.randn(hidden_dim, dim) / math.sqrt(dim))
        self.c = nn.Parameter(torch.zeros(hidden_dim))
        self.V = nn.Parameter(torch.randn(dim, hidden_dim) / math.sqrt(hidden_dim))
        self.b = nn.Parameter(torch.zeros(dim))

    @property
    def num_parameters(self) -> int:
        return 2 * self.dim * self.hidden_dim + self.dim

    def logits(self, x: Tensor) -> Tensor:
        """``[N, dim]`` logits of every conditional ``p(x_i = 1 | x_<i)``, in one pass."""
        # variable-major [n, N, d], so that the last product is one batched matrix product;
        # in place where autograd allows, since these are the large tensors
        steps = x[:, :-1].T.unsqueeze(-1) * self.W[:, :-1].T.unsqueeze(1)  # W_{:,j} x_j
        a = steps.cumsum(0)  # a[i] sums j <= i; shifted by one below, so that a_i sums j < i
        h = torch.cat([torch.zeros_like(a[:1]), a]).add_(self.c).sigmoid_()
        return torch.baddbmm(self.b.view(-1, 1, 1), h, self.V.unsqueeze(-1)).squeeze(-1).T

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of binary ``[N, dim]`` data, exactly: ``[N]``."""
        x = self.check(x)
        return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(-1)

    def _conditionals(self, shape: tuple[int, ...]) -> Chain:
        a = self.c.expand(*shape, self.hidden_dim)
        for i in range(self.dim):
            value = yield Bernoulli(logits=self.b[i] + torch.sigmoid(a) @ self.V[i])
            a = a + value.unsqueeze(-1) * self.W[:, i]
