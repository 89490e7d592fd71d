"""The probe: one run of the guide and the model without particles, to find the data plate and
the depth of plate nesting, and to check the data and the guide against the model."""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from torch import Tensor
from torch.distributions import constraints

from ppdgm.infer.weights import (
    Layout,
    Program,
    clamped,
    data_frame,
    is_auxiliary,
    latent_sites,
    sample_sites,
    trace_once,
)

__all__ = ["own_stream", "probe"]


def own_stream() -> Any:
    """A block whose draws leave torch's random streams (the CPU's, and CUDA's where it is in
    use) as they were."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


def probe(
    model: Program,
    guide: Program | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    plate: str,
) -> tuple[Layout, Trace, Trace | None]:
    """Runs the guide and the model once without particles and checks them.

    Raises:
        ValueError: if the model has no vectorized plate named ``plate``, observes nothing inside
            it or something outside it, an observed value does not match the plate's size or
            holds NaN, the guide samples a site that is not a latent site of the model, leaves a
            latent site of the model unsampled, or gives a site another shape than the model;
            or there are no data points (a plate of size 0). An observed value holding
            infinity is refused as NaN is.
    """
    try:
        with own_stream():  # probing draws nothing from the stream the estimates then use
            model_trace, guide_trace = trace_once(model, guide, args, kwargs)
    except Exception as e:
        if isinstance(e, ZeroDivisionError) and "size cannot be zero" in str(e):
            raise ValueError(
                "there are no data points to score (a plate of size 0): pass at least one row"
            ) from None
        if guide is not None:  # an amortized guide may fail on bad data: name that instead
            _check_data_alone(model, args, kwargs, plate)
        cause = e.__cause__
        if isinstance(e, ValueError) and type(cause) is type(e) and str(e).startswith(str(cause)):
            # Pyro's trace appends a table of site shapes; the program's own message is clearer
            raise cause from None
        raise
    size = _check_plate(model_trace, plate)
    _check_observations(model_trace, plate, size)
    if guide_trace is not None:
        _check_guide(model_trace, guide_trace, plate)
    depth = 0
    nbytes = 0
    for trace in (model_trace, guide_trace):
        if trace is None:
            continue
        for _, site in sample_sites(trace):
            depth = max(depth, len(site["fn"].batch_shape))
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    depth = max(depth, -frame.dim)
            value = site["value"]
            if isinstance(value, Tensor):
                nbytes += value.numel() * value.element_size()
    layout = Layout(plate, size, depth, max(nbytes, 1))
    return layout, model_trace, guide_trace


def _check_data_alone(
    model: Program, args: tuple[Any, ...], kwargs: dict[str, Any], plate: str
) -> None:
    try:
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    except Exception:
        return
    _check_observations(trace, plate, _check_plate(trace, plate))


def _check_plate(trace: Trace, plate: str) -> int:
    frames = {}
    names = set()
    for _, site in sample_sites(trace):
        for frame in site["cond_indep_stack"]:
            names.add(frame.name)
            if frame.name == plate:
                frames[site["name"]] = frame
    if not frames:
        known = ", ".join(repr(n) for n in sorted(names)) or "none"
        raise ValueError(
            f"the model has no plate named {plate!r} around its sample sites (its plates: "
            f"{known}); pass plate=... naming the plate over data points"
        )
    frame = next(iter(frames.values()))
    if not frame.vectorized:
        raise ValueError(
            f"plate {plate!r} is sequential (a Python loop); the estimators need a vectorized "
            f"plate, `with pyro.plate({plate!r}, N):`"
        )
    full = getattr(frame, "full_size", None)
    if full is not None and full != frame.size:
        raise ValueError(
            f"plate {plate!r} subsamples {frame.size} of {full} data points; estimate on the "
            "full data (no subsample_size)"
        )
    return int(frame.size)


def _check_observations(trace: Trace, plate: str, size: int) -> None:
    inside = 0
    for name, site in sample_sites(trace):
        if clamped(site["fn"]) is not None and data_frame(site, plate):
            inside += 1  # a network's column with missing cells: observed where it has values
        if not site["is_observed"]:
            continue
        frame = data_frame(site, plate)
        if frame is None:
            raise ValueError(
                f"observed site {name!r} is outside plate {plate!r}: a per-data-point "
                "likelihood needs every observation inside the data plate"
            )
        inside += 1
        value = site["value"]
        if not isinstance(value, Tensor):
            continue
        event_dim = len(site["fn"].event_shape)
        dim = frame.dim - event_dim
        if value.dim() < -dim or value.shape[dim] != size:
            raise ValueError(
                f"observed site {name!r} has shape {tuple(value.shape)}, but plate {plate!r} has "
                f"size {size} at dim {frame.dim} (the value needs {size} rows at dim {dim}, left "
                f"of its event shape {tuple(site['fn'].event_shape)}; does the distribution need "
                ".to_event(...)?)"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            rows = ~torch.isfinite(value.movedim(dim, 0).reshape(size, -1)).all(-1)
            where = rows.nonzero().flatten().tolist()
            shown = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
            what = "NaN" if bool(torch.isnan(value).any()) else "an infinite value"
            raise ValueError(
                f"observed site {name!r} has {what} in {len(where)} of its {size} data points "
                f"(indices {shown}); drop them or model them as missing (no distribution "
                "scores NaN or infinity as an observation)"
            )
        _check_support(name, site, value, dim, size)
    if not inside:
        raise ValueError(f"the model observes nothing inside plate {plate!r}: there is no data")


def _check_support(name: str, site: dict[str, Any], value: Tensor, dim: int, size: int) -> None:
    """Refuses observed values outside the support of their distribution: the sampling passes
    run without Pyro's validation, and a log-density there (Bernoulli's at 2, say) is a number
    of no meaning."""
    support = getattr(site["fn"], "support", None)
    if not isinstance(support, constraints.Constraint):
        return
    try:
        ok = torch.as_tensor(support.check(value), dtype=torch.bool)
    except Exception:  # a constraint that cannot check this value: the log-density decides
        return
    if bool(ok.all()):
        return
    if ok.dim() >= -dim:
        rows = ~ok.movedim(dim, 0).expand(size, *ok.movedim(dim, 0).shape[1:])
        where = rows.reshape(size, -1).any(-1).nonzero().flatten().tolist()
    else:
        where = list(range(size))
    shown = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
    raise ValueError(
        f"observed site {name!r} has values outside the support of its distribution "
        f"({type(site['fn']).__name__}: {support}) in {len(where)} of its {size} data points "
        f"(indices {shown}); its log-density there means nothing: fix or drop those rows"
    )


def _check_guide(model_trace: Trace, guide_trace: Trace, plate: str) -> None:
    model_sites = dict(sample_sites(model_trace))
    latent = latent_sites(model_trace)
    guided = [name for name, site in sample_sites(guide_trace) if not is_auxiliary(site)]
    extra = [n for n in guided if n not in model_sites or model_sites[n]["is_observed"]]
    if extra:
        raise ValueError(
            f"the guide samples {extra}, which are not latent sites of the model "
            f"(its latent sites: {latent})"
        )
    missing = [n for n in latent if n not in guided]
    if missing:
        raise ValueError(
            f"the guide does not sample the model's latent site(s) {missing}; every latent site "
            "needs a proposal (pass guide=None to propose all of them from the prior)"
        )
    for name, guide_site in sample_sites(guide_trace):
        if is_auxiliary(guide_site):
            continue
        model_site = model_sites[name]
        expected = tuple(model_site["fn"].batch_shape + model_site["fn"].event_shape)
        actual = tuple(guide_site["value"].shape)
        width = max(len(expected), len(actual))
        if (1,) * (width - len(expected)) + expected != (1,) * (width - len(actual)) + actual:
            hint = ""
            if data_frame(model_site, plate) is not None and data_frame(guide_site, plate) is None:
                hint = f"; the guide samples it outside plate {plate!r}"
            raise ValueError(
                f"the guide's site {name!r} has shape {actual}, the model's {expected}{hint}"
            )
