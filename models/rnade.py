r"""The real-valued NADE: mixture-of-Gaussians conditionals for continuous data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from ppdgm._checks import check_int
from ppdgm.autoregressive import Autoregressive, Chain
from ppdgm.base import register_model
from ppdgm.settings import from_data, setting

__all__ = ["RNADE"]


@register_model("rnade")
class RNADE(Autoregressive):
    r"""Real-valued neural autoregressive density estimator over ``dim`` continuous variables
    (Uria, Murray and Larochelle, 2013), in the natural order.

    NADE's hidden units, ``h_i = \sigma(c + \sum_{j<i} W_{:,j} x_j)``, parameterize a mixture of
    ``C`` Gaussians for each conditional:

    .. math::

        p(x_i \mid x_{<i}) = \sum_{c=1}^{C} \pi_{ic}\,
            \mathcal N\big(x_i; \mu_{ic}, \sigma_{ic}^2\big), \qquad
        (\log\pi_i, \mu_i, \log\sigma_i) = \text{affine}_i(h_i),

    with ``log pi`` normalized by a softmax. ``log_prob`` computes every conditional in one pass;
    ``model(x)`` has a ``MixtureSameFamily`` site per variable.

    Arguments:
        dim: the number of continuous variables.
        hidden_dim: the number of hidden units.
        components: ``C``, the Gaussians of each conditional's mixture.

    Example:
        >>> model = RNADE(2, hidden_dim=8, components=3)
        >>> model.log_prob(torch.tensor([[0.5, -1.0]])).shape, model.sample(4, seed=0).shape
        (torch.Size([1]), torch.Size([4, 2]))

    References:
        Uria, B., Murray, I. and Larochelle, H. (2013). RNADE: the real-valued neural
        autoregressive density-estimator. NeurIPS.
    """

    binary = False
    _formula = "nd + 3nC(d + 1)"

    @dataclass(frozen=True)
    class Config:
        """RNADE's settings (see the class)."""

        dim: int = from_data()
        hidden_dim: int = setting(32, "hidden units d", flag="--hidden", metavar="D")
        components: int = setting(5, "Gaussians per conditional", metavar="C")

    def __init__(self, dim: int, hidden_dim: int = 32, components: int = 5) -> None:
        super().__init__(dim)
        for name, value in (("hidden_dim", hidden_dim), ("components", components)):
            check_int(name, value)
        self._record(dim=dim, hidden_dim=hidden_dim, components=components)
        self.hidden_dim, self.components = hidden_dim, components
        self.W = nn.Parameter(torch.randn(hidden_dim, dim) / math.sqrt(dim))
        self.c = nn.Parameter(torch.zeros(hidden_dim))
        # the heads of the mixture weights, means and log-scales: [dim, hidden_dim, 3, C]
        self.V = nn.Parameter(torch.randn(dim, hidden_dim, 3, components) / math.sqrt(hidden_dim))
        self.b = nn.Parameter(torch.zeros(dim, 3, components))
        with torch.no_grad():  # spread the means so that the components start apart
            self.b[:, 1] = torch.linspace(-2.0, 2.0, components) if components > 1 else 0.0

    @property
    def num_parameters(self) -> int:
        # W's last column would feed a conditional after the last: it is never used
        return sum(p.numel() for p in self.parameters()) - self.hidden_dim

    def _mixture(self, h: Tensor, i: slice | int) -> dist.MixtureSameFamily:
        heads = torch.einsum("...d,...dkc->...kc", h, self.V[i]) + self.b[i]
        logits, loc, log_scale = heads.unbind(-2)
        return dist.MixtureSameFamily(
            dist.Categorical(logits=logits), dist.Normal(loc, log_scale.clamp(-7, 7).exp())
        )

    def conditional_log_prob(self, x: Tensor) -> Tensor:
        """``[N, dim]``: entry ``[n, i]`` is ``log p(x_i | x_<i)`` of row ``n``, in one pass."""
        x = self.check(x)
        steps = x.unsqueeze(-1) * self.W.T
        shifted = torch.cat([torch.zeros_like(steps[..., :1, :]), steps[..., :-1, :]], -2)
        h = torch.sigmoid(self.c + shifted.cumsum(-2))  # [N, n, d]
        return self._mixture(h, slice(None)).log_prob(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of real ``[N, dim]`` data, exactly: ``[N]``."""
        return self.conditional_log_prob(x).sum(-1)

    def _conditionals(self, shape: tuple[int, ...]) -> Chain:
        a = self.c.expand(*shape, self.hidden_dim)
        for i in range(self.dim):
            value = yield self._mixture(torch.sigmoid(a), i)
            a = a + value.unsqueeze(-1) * self.W[:, i]
