"""What every flow family shares: the inverse of a layer as a module, the container of a
conditional flow, the checks of a factory's arguments, and fixed permutations."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import ComposeTransform, Permute
from torch import Tensor, nn

from ppdgm._checks import check_int

__all__ = [
    "HIDDEN_DIMS",
    "ConditionalFlow",
    "Inverse",
    "check_flow",
    "flip",
    "one_dimension_allowed",
]

HIDDEN_DIMS = (64, 64)


class Inverse(TransformModule):
    """The inverse of a transform module, itself a module so that its parameters are registered
    (``t.inv`` is not an ``nn.Module``, so a :class:`ComposeTransformModule` would drop them).

    Arguments:
        base: the transform to invert; its cache is reused.

    Example:
        >>> from ppdgm.transforms import Scaling
        >>> t = Inverse(Scaling(2))
        >>> t.base.log_scale.data.fill_(1.0)
        tensor([1., 1.])
        >>> t(torch.ones(1, 2))
        tensor([[0.3679, 0.3679]], grad_fn=<MulBackward0>)
    """

    bijective = True

    def __init__(self, base: TransformModule) -> None:
        super().__init__(cache_size=0)
        self.base = base

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base.codomain

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base.domain

    @property
    def sign(self) -> int:  # type: ignore[override]
        return self.base.sign

    def _call(self, x: Tensor) -> Tensor:
        return self.base.inv(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.base(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -self.base.log_abs_det_jacobian(y, x)


class ConditionalFlow(nn.Module):
    """A flow whose layers depend on a context vector (an encoder's output): the guide transform
    of an amortized ``q(z | x)``. :meth:`condition` fixes the context and gives an ordinary
    transform in the sampling direction.

    Arguments:
        dim: the dimension of the variable the flow transforms.
        context_dim: the size of the context.
        parts: conditional transforms of Pyro (``ConditionalTransformModule``) and fixed
            transforms (permutations), applied in order.
    """

    def __init__(
        self, dim: int, context_dim: int, parts: Sequence[torch.distributions.Transform]
    ) -> None:
        super().__init__()
        self.dim, self.context_dim = dim, context_dim
        self.parts = list(parts)
        self.layers = nn.ModuleList([p for p in self.parts if isinstance(p, nn.Module)])

    def condition(self, context: Tensor | None) -> ComposeTransform:
        """The flow at ``context`` (``[..., context_dim]``, broadcast against the input's batch).

        Raises:
            ValueError: for no context or one whose last dimension is not ``context_dim``.
        """
        if context is None:
            raise ValueError(
                f"this conditional flow needs a context of size {self.context_dim} "
                "(a guide flow must be given the encoder's context)"
            )
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"the flow's context must have size {self.context_dim} in its last dimension, "
                f"got shape {tuple(context.shape)}"
            )
        return ComposeTransform(
            [p.condition(context) if isinstance(p, ConditionalTransform) else p for p in self.parts]
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


def check_flow(dim: int, num_layers: int, hidden_dims: Sequence[int], least: int = 1) -> list[int]:
    """The hidden widths as a list, after checking a factory's ``dim`` (at least ``least``),
    ``num_layers`` and ``hidden_dims``.

    Raises:
        ValueError: naming the argument at fault.
    """
    check_int("dim", dim, least)
    check_int("num_layers", num_layers)
    hidden = list(hidden_dims)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims!r}")
    return hidden


@contextmanager
def one_dimension_allowed() -> Iterator[None]:
    """Silences Pyro's advice against a one-dimensional MADE: the layer is then an affine map
    (of the context, for a conditional one), which is what a 1-D latent variable needs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ConditionalAutoRegressiveNN input_dim = 1")
        yield


def flip(dim: int) -> Permute:
    """The permutation that reverses ``dim`` coordinates."""
    # reversing the coordinates lets the next coupling layer transform the half this one kept
    return Permute(torch.arange(dim - 1, -1, -1))
