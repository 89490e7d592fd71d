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

import dataclasses
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ppdgm._checks import ContractError, check_int
from ppdgm.settings import config_from, plain

__all__ = [
    "DENSITY",
    "PROGRAM",
    "ContractError",
    "DensityModel",
    "Kind",
    "LatentVariableModel",
    "Model",
    "can_sample",
    "check_data",
    "log_prob_is_exact",
    "model_kind",
    "observed_cells",
    "register_model",
    "registered_models",
    "registered_name",
    "seeded",
    "values_are_checked",
    "values_checked",
]

Kind = Literal["density", "program"]

#: the kind of a model with ``log_prob``
DENSITY: Kind = "density"
#: the kind of a model with ``model`` and ``guide``
PROGRAM: Kind = "program"


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
        ppdgm._checks.ContractError: Gaussian has no guide and no model: SVI needs ...
    """
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


def observed_cells(
    x: Any, observed: Any, dim: int, check: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """The rows to fill in and where their values are given, for ``inpaint``.

    Arguments:
        x: ``[N, dim]`` rows; unobserved cells may hold anything, NaN included.
        observed: ``[N, dim]`` or ``[dim]`` booleans, or None: the cells of ``x`` not NaN.
        dim: the number of variables.
        check: the model's data check, applied with the unobserved cells set to 0.

    Returns:
        ``(x, observed)``: the checked rows (0 where unobserved) and ``[N, dim]`` booleans.

    Raises:
        ValueError: for rows of another shape, or observed values the model cannot take.
    """
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must be [N, {dim}] rows, got shape {tuple(x.shape)}")
    if observed is None:
        observed = ~torch.isnan(x)
    observed = torch.as_tensor(observed, dtype=torch.bool, device=x.device).expand_as(x)
    checked = check(torch.where(observed, x, torch.zeros((), dtype=x.dtype)))
    return checked, observed.to(checked.device)


def check_data(x: Any, dim: int, *, binary: bool, name: str, dtype: torch.dtype) -> Tensor:
    """``x`` as a ``[N, dim]`` tensor of ``dtype``, checked.

    Raises:
        ValueError: naming the fault: not a tensor, not ``[N, dim]``, a NaN or infinite value, or
            (``binary``) a value other than 0 and 1.

    Example:
        >>> check_data(torch.tensor([[0, 1]]), 2, binary=True, name="m", dtype=torch.float64)
        tensor([[0., 1.]], dtype=torch.float64)
        >>> x = torch.tensor([[0.0, 0.5]])
        >>> check_data(x, 2, binary=True, name="m", dtype=torch.float64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: m models binary data, but x[0, 1] = 0.5; binarize first (e.g. x > 0.5), ...
    """
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"x must be a tensor, not {type(x).__name__}") from None
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} expects x of shape [N, {dim}], got {tuple(x.shape)}")
    x = x.to(dtype)
    if _VALUES_CHECKED.get():
        return x
    # x (1 - x) is 0 exactly at 0 and 1, and NaN or nonzero anywhere else: one cheap pass
    if bool((x * (1 - x) if binary else x - x).any()):
        bad = ((x != 0) & (x != 1)) if binary else ~torch.isfinite(x)
        row, col = (int(i) for i in bad.nonzero()[0])  # the first offending value
        value = float(x[row, col])
        if math.isnan(value):
            raise ValueError(f"x[{row}, {col}] is NaN; {name} needs every value observed")
        if binary:
            raise ValueError(
                f"{name} models binary data, but x[{row}, {col}] = {value:g}; "
                "binarize first (e.g. x > 0.5), or train on intensities in [0, 1] with dynamic "
                "binarization (fit(..., dynamic_binarization=True))"
            )
        raise ValueError(f"x[{row}, {col}] = {value:g}; {name} needs finite values")
    return x


_VALUES_CHECKED: ContextVar[bool] = ContextVar("ppdgm_values_checked", default=False)


def values_are_checked() -> bool:
    """Whether the caller runs inside :func:`values_checked` (the data were checked in full)."""
    return _VALUES_CHECKED.get()


@contextmanager
def values_checked() -> Iterator[None]:
    """Inside the block :func:`check_data` checks types and shapes but does not scan the values
    again: for a training loop whose data were checked in full before it began (one scan of
    the data set instead of one per minibatch and step)."""
    token = _VALUES_CHECKED.set(True)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Runs the block on torch's global random stream seeded with ``seed`` and restores the
    stream afterwards; ``seed=None`` leaves the stream alone."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


#: the zoo's models by lower-case name, filled by :func:`register_model` as their modules load
_REGISTRY: dict[str, type[Model]] = {}


def register_model(name: str) -> Any:
    """A class decorator: ``@register_model("nade")`` adds the class to the zoo's registry under
    ``name`` (the name the command line and checkpoints use) and sets its ``zoo_name``."""

    def decorate(cls: type[Model]) -> type[Model]:
        cls.zoo_name = name
        known = _REGISTRY.setdefault(name, cls)
        if known is not cls and _where(known) != _where(cls):
            raise ValueError(f"two zoo models are called {name!r}: {_where(known)}, {_where(cls)}")
        return cls  # the same file loaded twice (a doctest runner) keeps the first

    return decorate


def _where(cls: type) -> str:
    return f"{getattr(sys.modules.get(cls.__module__), '__file__', '?')}:{cls.__qualname__}"


def registered_models() -> Mapping[str, type[Model]]:
    """The registry, read-only: every zoo model by name (as :mod:`ppdgm.models` registers them;
    import it first)."""
    return MappingProxyType(_REGISTRY)


def registered_name(model: Any) -> str | None:
    """The zoo name of ``model``'s class when it is registered (not a subclass of one); None
    for any other module."""
    name = getattr(type(model), "zoo_name", None)
    return name if name is not None and _REGISTRY.get(name) is type(model) else None


class Model(nn.Module):
    """What the zoo's models share on top of the contract: their constructor's arguments
    (``config``, from which checkpoints and the command line rebuild them), ``dtype``,
    ``num_parameters``, and ``sample(n, seed=None)`` around a ``_sample(n)`` of their own.

    A model of your own needs none of this: the contract is only the methods of
    :func:`model_kind`.
    """

    #: the model's settings (:mod:`ppdgm.settings`): a frozen dataclass whose fields are the
    #: constructor's arguments; the command line's flags and the checkpoints' config derive
    #: from it
    Config: ClassVar[type]
    #: the settings this model was built with (:meth:`_record`); None: none to rebuild from (a
    #: model around parts of the user's own)
    settings: Any = None
    #: the name the registry knows the class by (:func:`register_model`); None: not registered
    zoo_name: str | None = None
    #: the family the command line builds it as: ``"autoregressive"``, ``"vae"`` or ``"flow"``
    family: str = ""

    def _record(self, **values: Any) -> None:
        """Keeps the constructor's arguments as the class's ``Config`` (updating the settings
        recorded so far, so that a subclass can add its own)."""
        if self.settings is not None:
            values = {**plain(self.settings), **values}
        self.settings = type(self).Config(**values)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (lists for sizes): ``type(m)(**m.config)``
        builds the same architecture; checkpoints record it.

        Raises:
            ValueError: for a model built around parts that plain data cannot describe.
        """
        if self.settings is None:
            raise ValueError(
                f"this {type(self).__name__} was built around parts of your own, which no "
                "config can rebuild; save its state_dict and rebuild it in code"
            )
        return plain(self.settings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> Model:
        """The model of ``config``: a ``Config`` instance, or the plain settings a checkpoint
        saved (checked: a setting the class does not have is named).

        Raises:
            ValueError: for settings of another model or version, or values the class rejects.
        """
        if not isinstance(config, cls.Config):
            config = config_from(cls.Config, config, cls.zoo_name or cls.__name__)
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the parameters (of the buffers for a model without)."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    @property
    def num_parameters(self) -> int:
        """The number of trainable scalar parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` independent draws ``[n, ...]`` (``seed``: a private seed for this call; None
        uses torch's random stream as it is), without gradients."""
        check_int("n", n, least=0)
        with torch.no_grad(), seeded(seed):
            return self._sample(n)

    def _sample(self, n: int) -> Tensor:
        raise NotImplementedError
