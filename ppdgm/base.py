"""The model contract: what a model gives the toolkit, checked once, up front.

There is no class to inherit. A model is any ``torch.nn.Module`` (a ``PyroModule`` too) of one
of two kinds, told apart by its methods:

- a **density model** has ``log_prob(*data) -> Tensor[N]``, the log-density of each row; it
  trains by maximum likelihood, and is scored by ``log_prob`` itself (exact unless the model
  says ``log_prob_is_exact = False``, as a dequantized flow does, whose ``log_prob`` is a
  bound);
- a **latent-variable model** has ``model(*data)`` and ``guide(*data)``, a Pyro program and its
  variational family, with a ``pyro.plate("data")`` over the rows; it trains by SVI (the ELBO
  by default) and is scored by :class:`ppdgm.estimate.LogLikelihood`.

``data`` is what a batch holds (:mod:`ppdgm.batch`): ``x``, or ``x, y`` for a tuple, or keywords
for a dict. Optional methods: ``sample(n, seed=None)`` (pictures and ``ppdgm sample``),
``check(x)`` (the model's own data check), ``training_loss(x, step)`` (a density model's own
loss, e.g. MADE's mask per step). A module with both ``log_prob`` and ``model``/``guide`` (a
dequantized flow) trains by maximum likelihood unless an SVI objective is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "DENSITY",
    "PROGRAM",
    "ContractError",
    "DensityModel",
    "Kind",
    "LatentVariableModel",
    "can_sample",
    "log_prob_is_exact",
    "model_kind",
]

Kind = Literal["density", "program"]

#: the kind of a model with ``log_prob``
DENSITY: Kind = "density"
#: the kind of a model with ``model`` and ``guide``
PROGRAM: Kind = "program"


class ContractError(TypeError):
    """A model that lacks what the toolkit needs of it (the message names the missing methods)."""


@runtime_checkable
class DensityModel(Protocol):
    """A model with an exact (or bounded) log-density of each row."""

    def log_prob(self, *args: Any, **kwargs: Any) -> Tensor: ...


@runtime_checkable
class LatentVariableModel(Protocol):
    """A Pyro program ``model`` with its variational family ``guide``."""

    def model(self, *args: Any, **kwargs: Any) -> Any: ...

    def guide(self, *args: Any, **kwargs: Any) -> Any: ...


def _has(module: Any, name: str) -> bool:
    return callable(getattr(module, name, None))


def model_kind(module: Any, *, program: bool = False) -> Kind:
    """Which kind of model ``module`` is, checked.

    Arguments:
        module: the model.
        program: an SVI objective was asked for: the module must have ``model`` and ``guide``.

    Raises:
        ContractError: (a ``TypeError``) for something that is not a ``torch.nn.Module``, or a
            module without the methods of either kind (the message names what is missing).

    Example:
        >>> import torch
        >>> class Gaussian(torch.nn.Module):
        ...     def log_prob(self, x):
        ...         return -0.5 * (x**2).sum(-1)
        >>> model_kind(Gaussian())
        'density'
        >>> model_kind(Gaussian(), program=True)
        Traceback (most recent call last):
        ...
        ppdgm.base.ContractError: Gaussian has no guide and no model: SVI needs a Pyro program ...
    """
    from torch import nn

    name = type(module).__name__
    if not isinstance(module, nn.Module):
        raise ContractError(
            f"{name} is not a torch.nn.Module; write the model as a module (nn.Module or "
            "PyroModule) so that its parameters can be trained and saved"
        )
    missing = [m for m in ("model", "guide") if not _has(module, m)]
    if program or not _has(module, "log_prob"):
        if not missing:
            return PROGRAM
        if program:
            raise ContractError(
                f"{name} has no {' and no '.join(reversed(missing))}: SVI needs a Pyro program "
                "model(x) and its guide guide(x) (methods of the module), each with a "
                'pyro.plate("data") over the rows'
            )
        raise ContractError(
            f"{name} is neither a density model (a log_prob(x) method returning one "
            "log-density per row, trained by maximum likelihood) nor a latent-variable model "
            f"(Pyro programs model(x) and guide(x), trained by SVI): it lacks log_prob and "
            f"{' and '.join(missing)}"
        )
    return DENSITY


def log_prob_is_exact(module: Any) -> bool:
    """Whether ``module.log_prob`` is the exact log-density (its ``log_prob_is_exact``
    attribute, True when absent); a dequantized flow's is a bound."""
    return bool(getattr(module, "log_prob_is_exact", True))


def can_sample(module: Any) -> bool:
    """Whether ``module`` draws samples (has ``sample(n)``)."""
    return _has(module, "sample")
