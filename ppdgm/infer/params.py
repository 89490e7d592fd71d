"""The parameters a model trains: its module's own, and those its Pyro programs create with
``pyro.param``.

A module's ``nn.Parameter`` s (those of its submodules, of a ``PyroModule``'s ``PyroParam`` s, and
those the programs register with ``pyro.module``) are ``module.parameters()``. A program may also
create parameters in Pyro's global parameter store, ``pyro.param("w", init)``, the first time
it runs: :func:`program_params` runs the model and the guide once on a batch to create them
and returns them, so that the training loop optimizes them and checkpoints keep them. They are
kept unconstrained (the values Pyro's optimizers work on), so a checkpoint needs no constraint
objects and loads back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from torch import Tensor, nn

from ppdgm.batch import Batch, as_arguments

__all__ = ["load_program_params", "program_params"]

#: the separator of the names ``pyro.module`` registers (the module's own parameters)
_MODULE_DIVIDER = "$$$"


def program_params(module: nn.Module, data: Batch) -> dict[str, Tensor]:
    """The unconstrained ``pyro.param`` parameters that ``module.model`` and ``module.guide``
    use on ``data`` and that are not parameters of ``module`` itself, by name (created in Pyro's
    parameter store if they were not there).

    Running the programs draws random numbers: call it on a seeded stream where that matters.

    Example:
        >>> import pyro.distributions as dist
        >>> class Mean(nn.Module):
        ...     def model(self, x):
        ...         with pyro.plate("data", len(x)):
        ...             pyro.sample("x", dist.Normal(pyro.param("mu", torch.zeros(())), 1.0), obs=x)
        ...     def guide(self, x):
        ...         pass
        >>> pyro.clear_param_store()
        >>> list(program_params(Mean(), torch.zeros(3)))
        ['mu']
    """
    args, kwargs = as_arguments(data)
    names: list[str] = []
    for program in (module.guide, module.model):
        with poutine.trace(param_only=True) as tracer, torch.no_grad():
            program(*args, **kwargs)
        names += [n for n, site in tracer.trace.nodes.items() if site["type"] == "param"]
    own = {id(p) for p in module.parameters()}
    store = dict(pyro.get_param_store().named_parameters())
    found: dict[str, Tensor] = {}
    for name in names:
        if _MODULE_DIVIDER in name or name not in store or name in found:
            continue
        value = store[name]
        if id(value) not in own:
            found[name] = value
    return found


def load_program_params(params: dict[str, Tensor], saved: Any, source: str) -> None:
    """Copies the unconstrained values ``saved`` (name to tensor, from a checkpoint) into the
    parameters ``params`` (from :func:`program_params`), in place.

    Raises:
        ValueError: naming the parameter, for a name missing on either side or another shape.
    """
    saved = dict(saved or {})
    if set(saved) != set(params):
        raise ValueError(
            f"{source} holds the Pyro parameters {sorted(saved)}, but the program creates "
            f"{sorted(params)}; it is a checkpoint of another program"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = saved[name]
            if not isinstance(value, Tensor) or value.shape != param.shape:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"{source}: Pyro parameter {name!r} is saved with shape {shape}, but the "
                    f"program's has shape {tuple(param.shape)}"
                )
            param.copy_(value)
