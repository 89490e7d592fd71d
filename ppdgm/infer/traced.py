"""A training loss recorded once as a graph of tensor operations and replayed at every step.

Running a Pyro program costs Python: every ``pyro.sample`` passes through the stack of effect
handlers (trace, replay, plates), which on a small VAE costs half as much again as the network's
own arithmetic. The arithmetic is the same at every step, though: the same operations on tensors
of the same shapes, with fresh random draws. :class:`TracedLoss` records it once per input
signature with PyTorch's ``make_fx`` (``torch.fx``: the ATen operations a function performs, on
"fake" tensors that carry shapes and no values) and then calls the recorded graph, whose
operations autograd differentiates as usual. The programs, Pyro's handlers and ppdgm's log
weights do not run again; the random draws are the same operations on the same random stream,
so a step gives the same loss and gradients as running the program (the tests check equality).

What cannot be recorded runs the program as before, with a one-line note (``on_fallback``):

- a branch on values (``if x.sum() > 0``), which fake tensors cannot decide;
- a tensor that is neither an argument nor the module's parameter or buffer (a ``pyro.param``
  of the program's own, or a tensor kept outside the module), which a graph would hold as a
  constant;
- anything else ``make_fx`` refuses (the note says what).

A signature is recorded after it has run ``after`` times (at least once, so that the loss checks
its arguments and creates its parameters; recording takes about a second), so short runs never
pay for it. Autocast, disabled gradients and non-tensor arguments that change
are part of the signature or run the program. The log weights' NaN check, a branch on values,
moves after the graph: a NaN loss runs the program again on the same random draws, which names
the site (:class:`~ppdgm.infer.weights.NaNLogDensity`).

Why not ``JitTrace_ELBO`` or ``torch.compile``: measured here, Pyro's ``JitTrace_ELBO`` was 4-5x
slower than a hand-written step of the same VAE on a CPU, and ``torch.compile`` of the loss 1.7x
(graph breaks at Pyro's handlers, and code generation for operations too small to gain from it);
the recorded graph runs each ATen operation as eager PyTorch does, without the Python around it.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree

from ppdgm._checks import check_int
from ppdgm.infer.weights import nan_checks_deferred

__all__ = ["TracedLoss"]

#: a loss of a module and its arguments: ``loss(module, args, kwargs) -> Tensor``
Loss = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Tensor]


@dataclass
class _Entry:
    calls: int = 0
    graph: Any = None  # the recorded graph, once recorded
    reason: str | None = None  # why it could not be recorded
    compiled: Any = None  # the graph compiled, until its first call has run
    tried: bool = False  # whether compiling was tried


class TracedLoss:
    """``loss(module, args, kwargs)``, recorded per input signature and replayed.

    Arguments:
        loss: the loss, a function of the module (its parameters and buffers are the graph's
            inputs) and the arguments (tensors, or anything fixed).
        after: the calls with one signature before it is recorded, at least 1: the first runs
            the loss itself, which may check its arguments or create parameters.
        on_fallback: called once per module with the reason a signature could not be recorded
            (or compiled).
        compile: compile each recorded graph with ``torch.compile`` (Inductor: fused C++ or
            Triton kernels, the random draws left to PyTorch's own stream so that they stay the
            same): several seconds once per signature, then faster steps. Where compiling fails
            (no C++ compiler), the recorded graph runs, with a note.

    Example:
        >>> class Square(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.tensor(3.0))
        >>> traced = TracedLoss(lambda m, args, kwargs: (m.w * args[0]).square().sum(), after=1)
        >>> module = Square()
        >>> loss = traced(module, (torch.ones(2),), {})  # runs the loss, then records it
        >>> loss = traced(module, (torch.ones(2),), {})  # runs the graph
        >>> loss.backward()
        >>> float(loss.detach()), float(module.w.grad), traced.recorded(module)
        (18.0, 12.0, 1)
    """

    def __init__(
        self,
        loss: Loss,
        *,
        after: int = 10,
        on_fallback: Callable[[str], None] | None = None,
        compile: bool = False,
    ) -> None:
        self.loss = loss
        self.compile = compile
        self.after = check_int("after", after, least=1)
        self.on_fallback = on_fallback
        self._entries: weakref.WeakKeyDictionary[nn.Module, dict[Any, _Entry]] = (
            weakref.WeakKeyDictionary()
        )

    def recorded(self, module: nn.Module) -> int:
        """How many signatures of ``module`` run as recorded graphs."""
        return sum(e.graph is not None for e in self._entries.get(module, {}).values())

    def compiled(self, module: nn.Module) -> int:
        """How many signatures of ``module`` run as compiled graphs."""
        return sum(e.compiled is not None for e in self._entries.get(module, {}).values())

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        leaves, spec = _pytree.tree_flatten((args, kwargs))
        if not torch.is_grad_enabled() or torch.is_autocast_enabled():
            return self.loss(module, args, kwargs)
        params, buffers = _tensors_of(module)
        key = _signature(module.training, params, buffers, leaves, spec)
        entries = self._entries.setdefault(module, {})
        entry = entries.setdefault(key, _Entry())
        if entry.graph is None:
            entry.calls += 1
            if entry.reason is not None or entry.calls <= self.after:
                return self.loss(module, args, kwargs)
            entry.graph, entry.reason = self._record(module, params, buffers, leaves, spec)
            if entry.graph is None:
                if self.on_fallback is not None and not any(
                    e.reason for e in entries.values() if e is not entry
                ):
                    self.on_fallback(str(entry.reason))
                return self.loss(module, args, kwargs)
        tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
        state = _random_state(tensors)
        if self.compile and not entry.tried:
            value = self._compile(entry, (*params, *buffers, *tensors))
        else:
            run = entry.graph if entry.compiled is None else entry.compiled
            value = run(*params, *buffers, *tensors)
        if bool(torch.isnan(value).any()):  # the program again, on the same draws: it says where
            _set_random_state(state)
            return self.loss(module, args, kwargs)
        return value

    def _compile(self, entry: _Entry, inputs: tuple[Tensor, ...]) -> Tensor:
        """Compiles the entry's graph and runs it (compilation happens at the first call)."""
        entry.tried = True
        state = _random_state(list(inputs))
        try:
            with warnings.catch_warnings():  # torch's own, from inside its compiler
                warnings.simplefilter("ignore", DeprecationWarning)
                compiled = torch.compile(
                    entry.graph, dynamic=False, options={"fallback_random": True}
                )
                value = compiled(*inputs)
        except Exception as e:  # no compiler, or an operation Inductor refuses
            if self.on_fallback is not None:
                self.on_fallback(f"the graph is not compiled ({_why(e)}); it runs as recorded")
            _set_random_state(state)
            return entry.graph(*inputs)
        entry.compiled = compiled
        return value

    def _record(
        self,
        module: nn.Module,
        params: list[Tensor],
        buffers: list[Tensor],
        leaves: list[Any],
        spec: Any,
    ) -> tuple[Any, str | None]:
        """The graph of the loss at this signature, or None and why. Its inputs are the
        parameters, the buffers and the arguments' tensors, in one flat list."""
        names = [name for name, _ in module.named_parameters()]
        buffer_names = [name for name, _ in module.named_buffers()]
        assert len(names) == len(params) and len(buffer_names) == len(buffers)
        at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
        loss = self.loss

        class Holder(nn.Module):  # so that functional_call swaps the module's tensors
            def __init__(self) -> None:
                super().__init__()
                self.module = module

            def forward(self, *tensors: Tensor) -> Tensor:
                filled = list(leaves)
                for i, tensor in zip(at, tensors, strict=True):
                    filled[i] = tensor
                args, kwargs = _pytree.tree_unflatten(filled, spec)
                with nan_checks_deferred():
                    return loss(self.module, args, kwargs)

        holder = Holder()

        def step(*flat: Tensor) -> Tensor:
            keys = [f"module.{n}" for n in (*names, *buffer_names)]
            swapped = dict(zip(keys, flat[: len(keys)], strict=True))
            return functional_call(holder, swapped, flat[len(swapped) :])

        tensors = [leaves[i] for i in at]
        try:
            with torch.random.fork_rng(devices=_devices(tensors)):  # recording draws nothing
                graph = make_fx(step, tracing_mode="fake")(*params, *buffers, *tensors)
        except Exception as e:  # a branch on values, or an operation make_fx refuses
            return None, _why(e)
        graph.graph.eliminate_dead_code()  # what only the programs' bookkeeping used
        graph.recompile()
        for node in graph.graph.nodes:
            if node.op == "get_attr":
                constant = getattr(graph, node.target, None)
                if isinstance(constant, Tensor) and constant.requires_grad:
                    return None, (
                        "the program uses a tensor that needs gradients and is not the "
                        "module's parameter (a pyro.param of its own?)"
                    )
        return graph, None


def _tensors_of(module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """``list(module.parameters()), list(module.buffers())`` in one walk over the submodules
    (each of those walks them all again; this runs at every step)."""
    params: dict[int, Tensor] = {}
    buffers: dict[int, Tensor] = {}
    for sub in module.modules():
        for p in sub._parameters.values():
            if p is not None:
                params.setdefault(id(p), p)
        for b in sub._buffers.values():
            if b is not None:
                buffers.setdefault(id(b), b)
    return list(params.values()), list(buffers.values())


def _signature(
    training: bool, params: list[Tensor], buffers: list[Tensor], leaves: list[Any], spec: Any
) -> tuple[Any, ...]:
    def of(value: Any) -> Any:
        if isinstance(value, Tensor):
            return (value.shape, value.dtype, value.device, value.requires_grad)
        return ("value", repr(value))

    return (spec, training, *(of(v) for v in (*leaves, *params, *buffers)))


def _devices(tensors: list[Tensor]) -> list[Any]:
    return sorted({t.device for t in tensors if t.device.type == "cuda"}, key=str)


def _random_state(tensors: list[Tensor]) -> tuple[Tensor, list[tuple[Any, Tensor]]]:
    cuda = [(d, torch.cuda.get_rng_state(d)) for d in _devices(tensors)]
    return torch.get_rng_state(), cuda


def _set_random_state(state: tuple[Tensor, list[tuple[Any, Tensor]]]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for device, value in cuda:
        torch.cuda.set_rng_state(value, device)


def _why(error: Exception) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    if "convert all Tensors to FakeTensors" in str(error):
        return (
            "the program uses a tensor that is neither an argument nor the module's parameter "
            "or buffer (a pyro.param, or a tensor kept outside the module)"
        )
    if "data-dependent" in str(error) or "DataDependent" in type(error).__name__:
        return f"it branches on values ({first[:120]})"
    return f"{type(error).__name__}: {first[:160]}"
