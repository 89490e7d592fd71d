r"""The masked autoencoder for distribution estimation, with an ensemble of masks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppdgm._checks import check_int
from ppdgm.autoregressive import Autoregressive, Chain, walk
from ppdgm.base import register_model, seeded
from ppdgm.nn import MaskedLinear, connectivity, made_degrees, made_masks
from ppdgm.settings import from_data, setting

__all__ = ["MADE", "ORDERINGS"]

#: ``natural``: ``x_0, x_1, ...`` for every mask; ``random``: one random ordering shared by every
#: mask; ``agnostic``: a new random ordering for each mask (order-agnostic training).
ORDERINGS = ("natural", "random", "agnostic")


@register_model("made")
class MADE(Autoregressive):
    r"""Masked autoencoder for distribution estimation over ``dim`` binary variables (Germain et
    al., 2015): a ReLU network whose masked weights make output ``i`` the logit of
    ``p(x_{o_t} = 1 | x_{o_<t})``; every conditional comes out of one pass.

    With ``num_masks = K > 1`` the model keeps ``K`` masks, each with its own hidden degrees
    (connectivity-agnostic) and, with ``ordering="agnostic"``, its own ordering (order-agnostic).
    Training visits them in turn, one per minibatch (:meth:`training_loss`), and the density is
    the ensemble, an equal mixture of the ``K`` autoregressive models:

    .. math::

        p(x) = \frac1K \sum_{k=1}^K p_k(x), \qquad
        \log p(x) = \operatorname{logsumexp}_k \log p_k(x) - \log K.

    As a Pyro program (``model``), one mask is the chain rule over the variables (sites
    ``x_0``, ...); an ensemble first draws a latent ``mask`` per row, then ``x@0, x@1, ...``, the
    variables in that mask's order (``x@t`` is the ``t``-th variable of the row's ordering), so
    enumerating ``mask`` gives the ensemble's ``log p(x)``.

    With ``direct=True`` the logits also get a masked linear map of the input (the paper's
    direct input-to-output connections, ``direct_input_connect="Output"`` in its code): output
    ``x_{o_t}`` sees each earlier variable through one weight, an FVSBN inside the MADE.

    Arguments:
        dim: the number of binary variables.
        hidden_dims: the widths of the hidden layers.
        num_masks: ``K``, the masks of the ensemble.
        ordering: one of :data:`ORDERINGS`.
        seed: the random source of the orderings and hidden degrees, so that the same
            arguments build the same masks.
        direct: add direct connections from the inputs to the logits (no bias of their own).

    Example:
        >>> model = MADE(4, [16], num_masks=2, ordering="agnostic")
        >>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
        >>> bool(torch.isclose(model.log_prob(x), torch.logsumexp(torch.stack(
        ...     [model.log_prob(x, mask=k) for k in range(2)]), 0) - math.log(2)))
        True

    References:
        Germain, M., Gregor, K., Murray, I. and Larochelle, H. (2015). MADE: masked autoencoder
        for distribution estimation. ICML.
    """

    orders: Tensor
    _formula = "unmasked weights + biases"

    @dataclass(frozen=True)
    class Config:
        """MADE's settings (see the class)."""

        dim: int = from_data()
        hidden_dims: tuple[int, ...] = setting((500,), "hidden widths", flag="--hidden")
        num_masks: int = setting(1, "masks of the ensemble K", metavar="K")
        ordering: str = setting("natural", "the variables' ordering: natural, random or agnostic")
        seed: int = setting(
            0, "seed of the orderings and hidden degrees", flag="--mask-seed", parse=int
        )
        direct: bool = setting(False, "direct input-to-output connections")

    def __init__(
        self,
        dim: int,
        hidden_dims: int | Sequence[int] = (500,),
        num_masks: int = 1,
        *,
        ordering: str = "natural",
        seed: int = 0,
        direct: bool = False,
    ) -> None:
        super().__init__(dim)
        hidden = [hidden_dims] if isinstance(hidden_dims, int) else list(hidden_dims)
        if not hidden or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden
        ):
            raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims!r}")
        check_int("num_masks", num_masks)
        if ordering not in ORDERINGS:
            raise ValueError(f"unknown ordering {ordering!r}; choose one of {', '.join(ORDERINGS)}")
        if not isinstance(direct, bool):
            raise ValueError(f"direct must be True or False, got {direct!r}")
        self._record(
            dim=dim,
            hidden_dims=hidden,
            num_masks=num_masks,
            ordering=ordering,
            seed=seed,
            direct=direct,
        )
        self.num_masks = num_masks
        generator = torch.Generator().manual_seed(seed)
        shared = torch.randperm(dim, generator=generator)
        orders, layer_masks, direct_masks, hidden_degrees = [], [], [], []
        for _ in range(num_masks):
            order = {
                "natural": torch.arange(dim),
                "random": shared,
                "agnostic": torch.randperm(dim, generator=generator),
            }[ordering]
            orders.append(order)
            degrees = made_degrees(order, hidden, generator)
            # booleans at once: 32 masks of two layers of 8,000 units take 2.5 GB as booleans
            # and four times that as float32
            layer_masks.append([m != 0 for m in made_masks(degrees)])
            direct_masks.append(degrees[0][:, None] > degrees[0][None, :])
            hidden_degrees.append(torch.cat(degrees[1:]).to(torch.int32))
        # the orderings and hidden degrees determine every mask: a checkpoint keeps these
        # (kilobytes) rather than the masks (hundreds of megabytes at 8,000 units), and
        # loading checks that they are the ones this seed draws
        self.register_buffer("orders", torch.stack(orders))
        self.register_buffer("hidden_degrees", torch.stack(hidden_degrees))
        self.order = self.orders[0].clone()
        widths = [dim, *hidden, dim]
        self.layers = nn.ModuleList(
            MaskedLinear(w_in, w_out, torch.stack([m[layer] for m in layer_masks]))
            for layer, (w_in, w_out) in enumerate(itertools.pairwise(widths))
        )
        self.direct = (
            MaskedLinear(dim, dim, torch.stack(direct_masks), bias=False) if direct else None
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        if prefix + "hidden_degrees" not in state_dict and prefix + "layers.0.masks" in state_dict:
            # saved with the masks themselves, which the layers check instead
            state_dict[prefix + "hidden_degrees"] = self.hidden_degrees
        for name in ("orders", "hidden_degrees"):
            saved, mine = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and not torch.equal(saved.to(mine), mine):  # False for shapes
                error_msgs.append(
                    f"{prefix}{name}: the saved masks are not those that seed "
                    f"{self.settings.seed} draws for this configuration"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @property
    def num_parameters(self) -> int:
        layers = [*self.layers, *([self.direct] if self.direct is not None else [])]
        return sum(layer.num_parameters for layer in layers)

    def connectivity(self, mask: int = 0) -> Tensor:
        """``[dim, dim]`` booleans: ``[i, j]`` when the logit of ``x_i`` depends on ``x_j``
        through some path of unmasked weights (only if ``x_j`` comes earlier in the ordering)."""
        paths = connectivity([layer.masks[mask] for layer in self.layers])
        return paths if self.direct is None else paths | self.direct.masks[mask]

    def logits(self, x: Tensor, mask: int = 0) -> Tensor:
        """``[..., dim]`` logits: entry ``i`` is that of ``p(x_i = 1 | earlier variables)``
        under mask ``mask``, in one pass."""
        h = x
        for layer in self.layers[:-1]:
            h = F.relu(layer(h, mask))
        logits = self.layers[-1](h, mask)
        return logits if self.direct is None else logits + self.direct(x, mask)

    def _masked_maps(self, mask: int) -> list[tuple[Tensor, Tensor | None]]:
        """The ``(weight * mask, bias)`` of each layer under mask ``mask``, then the direct
        map's (if any), for a chain of ``dim`` steps to form once rather than at each step (at
        two layers of 8,000 units each product is 256 MB)."""
        layers = [*self.layers, *([self.direct] if self.direct is not None else [])]
        return [(layer.masked_weight(mask), layer.bias) for layer in layers]

    def _step_logit(self, mask: int) -> Callable[[Tensor, int, int], Tensor]:
        """``logit(x, t, i)``: the ``[...]`` logit of variable ``i``, at step ``t`` of mask
        ``mask``'s order, from ``[..., dim]`` inputs, computed through the units that reach it.

        A hidden unit of degree ``m`` feeds only units of degree ``>= m`` and outputs of degree
        ``> m``, so the logit at step ``t`` (degree ``t + 1``) depends on the units of degree
        ``<= t`` alone. With each layer's units sorted by degree these are a prefix of its rows
        and of the next layer's columns: the step multiplies an ``n_t x n_t`` corner of the
        hidden-to-hidden weight, about a third of the work of the whole map over a chain. The
        masked, sorted weights are formed once for the chain.
        """
        maps = self._masked_maps(mask)
        *hidden, (weight, bias) = maps[: len(self.layers)]
        direct = maps[-1][0] if self.direct is not None else None
        degrees = self.hidden_degrees[mask].split([w.shape[0] for w, _ in hidden])
        layers, counts, previous = [], [], None
        for (w, b), degree in zip(hidden, degrees, strict=True):
            ranked, rank = degree.sort(stable=True)
            w = w[rank] if previous is None else w[rank][:, previous]
            layers.append((w, None if b is None else b[rank]))
            # units of degree <= t, for every step t
            steps = torch.arange(self.dim, dtype=ranked.dtype, device=ranked.device)
            counts.append(torch.searchsorted(ranked, steps, right=True).tolist())
            previous = rank
        if previous is not None:
            weight = weight[:, previous]

        def logit(x: Tensor, t: int, i: int) -> Tensor:
            h, width = x, x.shape[-1]
            for (w, b), count in zip(layers, counts, strict=True):
                n = count[t]
                h = F.relu(F.linear(h, w[:n, :width], None if b is None else b[:n]))
                width = n
            out = F.linear(h, weight[i : i + 1, :width], None if bias is None else bias[i : i + 1])
            if direct is not None:
                out = out + F.linear(x, direct[i : i + 1])
            return out[..., 0]

        return logit

    def log_prob(self, x: Tensor, mask: int | None = None) -> Tensor:
        """``log p(x)`` of each row of binary ``[N, dim]`` data, exactly: ``[N]``.

        Arguments:
            x: the data.
            mask: the mask whose model to evaluate; None: the ensemble of every mask.
        """
        x = self.check(x)
        if mask is not None or self.num_masks == 1:
            return self._log_prob(x, mask or 0)
        each = torch.stack([self._log_prob(x, k) for k in range(self.num_masks)])
        return torch.logsumexp(each, 0) - math.log(self.num_masks)

    def _log_prob(self, x: Tensor, mask: int) -> Tensor:
        logits = self.logits(x, mask)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def training_loss(self, x: Tensor, step: int) -> Tensor:
        """``-mean log p_k(x)`` with mask ``k = step mod K``: the masks in turn, one per
        minibatch, as in the paper's connectivity- and order-agnostic training."""
        return -self.log_prob(x, mask=step % self.num_masks).mean()

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` draws from the ensemble: each draw's mask is uniform over the ``K`` masks, then
        its variables are drawn one at a time in that mask's order."""
        check_int("n", n, least=0)
        with torch.no_grad(), seeded(seed):
            if self.num_masks == 1:
                return self._sample(n, order=self.orders[0], mask=0)
            masks = torch.randint(self.num_masks, (n,))
            x = torch.empty(n, self.dim, dtype=self.dtype, device=self.orders.device)
            for k in masks.unique().tolist():  # only the masks some draw has
                rows = (masks == k).nonzero().squeeze(-1)
                x[rows] = self._sample(len(rows), order=self.orders[k], mask=k)
            return x

    def _conditionals(self, shape: tuple[int, ...], mask: int = 0) -> Chain:
        reaches = self.connectivity(mask).tolist()
        logit = self._step_logit(mask)
        zero = torch.zeros(shape, dtype=self.dtype, device=self.orders.device)
        columns: list[Tensor | None] = [None] * self.dim
        for t, i in enumerate(self.orders[mask].tolist()):
            # only the inputs connected to output i, so that provenance gives MADE's own graph
            inputs = [
                column if column is not None and reaches[i][j] else zero
                for j, column in enumerate(columns)
            ]
            x = torch.stack(torch.broadcast_tensors(*inputs), -1)
            columns[i] = yield dist.Bernoulli(logits=logit(x, t, i))

    def model(self, x: Tensor) -> None:
        """The model as a Pyro program (see the class description): the chain rule for one
        mask, a latent ``mask`` then the chain rule in its order for an ensemble."""
        if self.num_masks == 1:
            return super().model(x)
        x = self.check(x)
        rows = torch.arange(x.shape[0], device=x.device)
        with pyro.plate("data", x.shape[0]):
            mask = pyro.sample("mask", dist.Categorical(logits=x.new_zeros(self.num_masks)))
            walk(
                self._ensemble_conditionals(mask, x.new_zeros(())),
                lambda t, d: pyro.sample(f"x@{t}", d, obs=x[rows, self.orders[mask, t]]),
            )
        return None

    def _ensemble_conditionals(self, mask: Tensor, zero: Tensor) -> Chain:
        values: list[Tensor] = []
        for t in range(self.dim):
            variable = self.orders[mask, t]  # the variable each row's mask puts at step t
            if values:
                shape = torch.broadcast_shapes(mask.shape, *(v.shape for v in values))
                index = self.orders[mask, :t].expand(*shape, t)
                earlier = torch.stack([v.expand(shape) for v in values], -1)
                x = zero.expand(*shape, self.dim).scatter(-1, index, earlier)
            else:
                shape = mask.shape
                x = zero.expand(*shape, self.dim)
            logits = torch.stack([self.logits(x, k) for k in range(self.num_masks)])
            logits = logits.gather(
                0, mask.expand(shape)[None, ..., None].expand(1, *shape, self.dim)
            )
            logit = logits[0].gather(-1, variable.expand(shape)[..., None])[..., 0]
            value = yield dist.Bernoulli(logits=logit)
            values.append(value)
