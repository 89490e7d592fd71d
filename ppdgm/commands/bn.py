"""``ppdgm bn``: inspect, sample, query, score, learn, predict and impute discrete Bayesian
networks."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppdgm.atomic import describe_os_error
from ppdgm.commands._common import (
    check_folder,
    finite_float,
    fraction,
    load_network,
    notes_stream,
    parse_assignments,
    parse_names,
    positive_int,
    read_rows,
    write_frame,
)
from ppdgm.counting import network_summary

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from ppdgm.bn import DiscreteBN

__all__ = ["cpt_frame", "register"]

_NETWORK_HELP = "a BIF file (.bif or .bif.gz) or an example network's name (asia, alarm, ...)"


def register(subparsers: Any) -> None:
    """Adds ``ppdgm bn`` and its actions to the ``ppdgm`` parser."""
    parser = subparsers.add_parser(
        "bn",
        help="discrete Bayesian networks: structure, sampling, exact queries, learning, "
        "prediction and imputation",
        description="Discrete Bayesian networks: structure, sampling, exact queries, learning, "
        "prediction and imputation. "
        f"FILE is {_NETWORK_HELP}. CSV files hold one column per variable and state names "
        "in the cells; an empty cell is missing.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    info = actions.add_parser(
        "info",
        help="structure and parameter counts",
        description="Structure and free-parameter "
        "counts: the factorized network vs the full joint table vs fully independent variables.",
    )
    info.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    info.add_argument(
        "--cpt", action="append", default=[], metavar="VAR", help="also print VAR's table"
    )
    info.set_defaults(run=run_info)

    sample = actions.add_parser(
        "sample",
        help="draw rows by ancestral sampling",
        description="Draws rows by ancestral sampling and writes them as CSV.",
    )
    sample.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    sample.add_argument("-n", type=positive_int, default=10, help="number of rows (10)")
    sample.add_argument("--seed", type=int, default=None, help="random seed")
    sample.add_argument(
        "--missing",
        type=fraction,
        default=0.0,
        metavar="P",
        help="blank each cell with probability P, at random (0)",
    )
    sample.add_argument("-o", "--output", metavar="CSV", help="output file (standard output)")
    sample.set_defaults(run=run_sample)

    query = actions.add_parser(
        "query",
        help="exact posterior marginals given evidence",
        description="Exact posterior marginals of --vars given evidence from the command line, "
        "or given each row of a CSV file (one posterior per row, written as CSV).",
    )
    query.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    query.add_argument("--vars", required=True, metavar="A,B", help="query variables")
    given = query.add_mutually_exclusive_group()
    given.add_argument(
        "--evidence",
        metavar="V=S,...",
        help="observed states, e.g. smoke=yes,xray=no",
    )
    given.add_argument(
        "--csv", "--data", dest="data", metavar="CSV", help="one evidence row per line"
    )
    query.add_argument("-o", "--output", metavar="CSV", help="write the posteriors as CSV here")
    query.set_defaults(run=run_query)

    loglik = actions.add_parser(
        "loglik",
        help="log-probability of each row of a CSV: exact, importance-sampled or ELBO",
        description="log p(row) of each row, missing cells summed out; prints the total and the "
        "mean per row. --method exact (the default) sums the missing cells out exactly; "
        "importance averages K importance weights per row, proposing the missing cells from "
        "the network (an estimate with a standard error, biased low by about stderr^2 / 2); "
        "elbo averages their logs (a lower bound, with a standard error).",
    )
    loglik.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    loglik.add_argument("--data", "--csv", dest="data", required=True, metavar="CSV")
    loglik.add_argument(
        "--method", choices=("exact", "importance", "elbo"), default="exact", help="(exact)"
    )
    loglik.add_argument(
        "--samples",
        type=positive_int,
        default=1000,
        metavar="K",
        help="samples per row for importance and elbo (1000)",
    )
    loglik.add_argument("--seed", type=int, default=None, help="random seed (importance, elbo)")
    loglik.add_argument("-o", "--output", metavar="CSV", help="output file (standard output)")
    loglik.set_defaults(run=run_loglik)

    fit = actions.add_parser(
        "fit",
        help="learn the tables of FILE's structure from a CSV",
        description="Learns new tables for FILE's structure and states: closed-form counts for "
        "complete data, EM when cells are missing.",
    )
    fit.add_argument("network", metavar="FILE", help=_NETWORK_HELP + "; its structure is kept")
    fit.add_argument("--data", "--csv", dest="data", required=True, metavar="CSV")
    fit.add_argument("--prior", choices=("none", "dirichlet", "bdeu"), default="none")
    fit.add_argument(
        "--pseudo-count",
        type=finite_float(least=0.0),
        default=1.0,
        help="Dirichlet pseudo-count per cell, >= 0 (1)",
    )
    fit.add_argument(
        "--ess",
        type=finite_float(greater=0.0),
        default=10.0,
        help="BDeu equivalent sample size, > 0 (10)",
    )
    fit.add_argument("--max-iter", type=positive_int, default=100, help="EM iteration limit (100)")
    fit.add_argument(
        "--tol",
        type=finite_float(least=0.0),
        default=1e-6,
        help="EM stops below this gain per row, in nats, >= 0 (1e-6)",
    )
    fit.add_argument("--seed", type=int, default=0, help="seed of EM's initialization (0)")
    fit.add_argument("-o", "--output", metavar="BIF", help="write the learned network here")
    fit.set_defaults(run=run_fit)

    predict = actions.add_parser(
        "predict",
        help="the most probable state of variables in each row of a CSV",
        description="For each row of --data, the most probable state of each variable given the "
        "row's observed cells (the argmax of its exact posterior marginal; a tie goes to the "
        "first state in FILE's order, and an observed variable is predicted as its value). "
        "Writes one column per predicted variable, one row per input row, as CSV.",
    )
    predict.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    predict.add_argument("--data", "--csv", dest="data", required=True, metavar="CSV")
    predict.add_argument(
        "--variables",
        "--vars",
        metavar="A,B",
        help="the variables to predict (default: every variable missing in some row)",
    )
    predict.add_argument("-o", "--output", metavar="CSV", help="output file (standard output)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(run=run_predict)

    impute = actions.add_parser(
        "impute",
        help="fill in the missing cells of a CSV",
        description="Writes --data with every missing cell filled in: by default with the cell's "
        "most probable state given the row's observed cells (cell by cell, not the most "
        "probable completion of the row as a whole); with --sample, with a draw from the joint "
        "conditional p(missing cells | observed cells) of each row.",
    )
    impute.add_argument("network", metavar="FILE", help=_NETWORK_HELP)
    impute.add_argument("--data", "--csv", dest="data", required=True, metavar="CSV")
    impute.add_argument(
        "--sample", action="store_true", help="draw the missing cells instead of the best guess"
    )
    impute.add_argument("--seed", type=int, default=None, help="random seed (with --sample)")
    impute.add_argument("-o", "--output", metavar="CSV", help="output file (standard output)")
    impute.add_argument("--no-progress", action="store_true", help="no progress bar")
    impute.set_defaults(run=run_impute)


# --------------------------------------------------------------------------------------- info
def run_info(args: argparse.Namespace) -> int:
    """``ppdgm bn info``: the structure, parameter counts and optionally some tables."""
    bn = load_network(args.network)
    for v in args.cpt:
        bn.parents(v)  # an unknown name fails before anything is printed
    print(network_summary(bn))
    for v in args.cpt:
        print()
        given = ", ".join(bn.parents(v))
        print(f"p({v} | {given}):" if given else f"p({v}):")
        print(cpt_frame(bn, v).to_string(float_format=lambda x: f"{x:.4f}"))
    return 0


def cpt_frame(bn: DiscreteBN, variable: str) -> pd.DataFrame:
    """The table of ``variable`` as a DataFrame: one row per parent configuration, one column
    per state."""
    import pandas as pd

    parents = bn.parents(variable)
    table = bn.cpt(variable).reshape(-1, len(bn.states[variable])).numpy()
    columns = [str(s) for s in bn.states[variable]]
    if not parents:
        return pd.DataFrame(table, columns=columns, index=pd.Index([""]))
    index = pd.MultiIndex.from_tuples(
        list(itertools.product(*(bn.states[u] for u in parents))), names=list(parents)
    )
    return pd.DataFrame(table, columns=columns, index=index)


# ------------------------------------------------------------------------------------- sample
def run_sample(args: argparse.Namespace) -> int:
    """``ppdgm bn sample``: rows by ancestral sampling, optionally with blanked cells."""
    from ppdgm.bn.sampling import blank_cells

    bn = load_network(args.network)
    rows = bn.sample(args.n, seed=args.seed)
    if args.missing > 0:
        rows = blank_cells(rows, args.missing, seed=args.seed)
    write_frame(rows, args.output)
    if args.output is not None:
        blanks = int(rows.isna().to_numpy().sum())
        extra = f", {blanks:,} cells blanked" if args.missing > 0 else ""
        print(f"wrote {len(rows):,} rows of {len(bn.variables)} variables{extra} to {args.output}")
    return 0


# -------------------------------------------------------------------------------------- query
def run_query(args: argparse.Namespace) -> int:
    """``ppdgm bn query``: posterior marginals given command-line or CSV evidence."""
    import pandas as pd
    import torch

    variables = parse_names(args.vars)
    evidence = parse_assignments(args.evidence) if args.evidence else {}
    bn = load_network(args.network)
    for v in variables:
        bn.parents(v)  # names the unknown variable
    if args.data is None:
        return _query_one(bn, variables, evidence, args.output)
    rows = read_rows(args.data)
    log_p = bn.log_prob(rows)
    possible = torch.isfinite(log_p)
    columns: dict[str, Any] = {}
    posterior = bn.posterior(rows[possible.numpy()], variables) if possible.any() else None
    for v in variables:
        for j, s in enumerate(bn.states[v]):
            values = torch.full((len(rows),), float("nan"), dtype=torch.float64)
            if posterior is not None:
                values[possible] = posterior[v][:, j]
            columns[f"p({v}={s})"] = values.numpy()
    out = pd.concat([rows, pd.DataFrame(columns, index=rows.index)], axis=1)
    write_frame(out, args.output)
    notes = notes_stream(args.output)
    _warn_impossible(log_p, notes, "their posteriors are left empty")
    if args.output is not None:
        print(f"wrote the posteriors of {len(rows):,} rows to {args.output}", file=notes)
    return 0


def _query_one(
    bn: DiscreteBN, variables: list[str], evidence: dict[str, str], output: str | None
) -> int:
    import pandas as pd

    frame = pd.DataFrame({k: [v] for k, v in evidence.items()}, index=[0])
    given = ", ".join(f"{k}={v}" for k, v in evidence.items())
    log_p = float(bn.log_prob(frame)[0])
    if log_p == -math.inf:
        raise ValueError(f"the evidence {given} has probability zero; no posterior is defined")
    posterior = bn.posterior(frame, variables)
    if output is not None:
        columns = {
            f"p({v}={s})": [float(posterior[v][0, j])]
            for v in variables
            for j, s in enumerate(bn.states[v])
        }
        write_frame(pd.concat([frame, pd.DataFrame(columns, index=[0])], axis=1), output)
        print(f"wrote the posteriors to {output}")
        return 0
    if given:
        print(f"evidence: {given}  (log p(evidence) = {log_p:.4f})")
    for v in variables:
        print(f"p({v} | {given})" if given else f"p({v})")
        width = max(len(str(s)) for s in bn.states[v])
        for j, s in enumerate(bn.states[v]):
            print(f"  {s!s:<{width}}  {float(posterior[v][0, j]):.4f}")
    return 0


def _warn_impossible(log_p: torch.Tensor, stream: Any, consequence: str) -> None:
    import torch

    bad = (~torch.isfinite(log_p)).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(str(i + 1) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        print(
            f"warning: {len(bad)} row(s) have probability zero under the network "
            f"(rows {shown}, counting from 1); {consequence}",
            file=stream,
        )


# ------------------------------------------------------------------------------------- loglik
def run_loglik(args: argparse.Namespace) -> int:
    """``ppdgm bn loglik``: per-row log-probabilities (exact or estimated), total and mean."""
    import pyro

    from ppdgm.infer.estimate import LogLikelihood, UnreliableWeightsWarning

    bn = load_network(args.network)
    rows = read_rows(args.data)
    method = getattr(args, "method", "exact")
    samples = getattr(args, "samples", 1000)
    if getattr(args, "seed", None) is not None:
        pyro.set_rng_seed(args.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreliableWeightsWarning)
        estimate = LogLikelihood(bn.model, method=method, num_samples=samples, plate=bn.plate)(rows)
    log_p = estimate.log_prob
    out = rows.copy()
    out["log_prob"] = log_p.numpy()
    if method != "exact":
        out["stderr"] = estimate.stderr.numpy()
    write_frame(out, args.output)
    notes = notes_stream(args.output)
    print(_missing_summary(bn, rows), file=notes)
    total = float(log_p.sum())
    mean = total / max(len(rows), 1)
    if method == "exact":
        print(
            f"log p(data) = {total:.4f} nats in total, {mean:.6f} per row "
            "(exact; missing cells summed out)",
            file=notes,
        )
    else:
        name = "log p(data)" if method == "importance" else "ELBO"
        what = (
            "importance sampling, the log of the mean weight"
            if method == "importance"
            else "a lower bound on log p(data), the mean log weight"
        )
        print(
            f"{name} = {total:.4f} ± {estimate.total_stderr:.4f} nats in total, {mean:.6f} per "
            f"row ({what}; {samples:,} samples per row, missing cells drawn from the network; "
            "± one standard error)",
            file=notes,
        )
    if estimate.ess is not None and len(rows):
        print(
            f"effective sample size per row: min {float(estimate.ess.min()):.1f}, "
            f"median {float(estimate.ess.median()):.1f} of {samples:,}",
            file=notes,
        )
    for warning in caught:
        if issubclass(warning.category, UnreliableWeightsWarning):
            print(f"warning: {warning.message}", file=notes)
    _warn_impossible(log_p, notes, "the total is -inf")
    if args.output is not None:
        print(f"wrote the per-row log-probabilities to {args.output}", file=notes)
    return 0


def _missing_summary(bn: DiscreteBN, rows: pd.DataFrame) -> str:
    cells = len(rows) * len(bn.variables)
    missing = int(rows.isna().to_numpy().sum()) + len(rows) * sum(
        v not in rows.columns for v in bn.variables
    )
    share = 100.0 * missing / cells if cells else 0.0
    return f"data: {len(rows):,} rows, {missing:,} of {cells:,} cells missing ({share:.1f}%)"


# ---------------------------------------------------------------------------- predict, impute
def run_predict(args: argparse.Namespace) -> int:
    """``ppdgm bn predict``: the most probable state of variables in each row of a CSV."""
    from ppdgm.bn.evidence import check_columns

    bn = load_network(args.network)
    variables = parse_names(args.variables) if args.variables else None
    for v in variables or ():
        bn.parents(v)  # names the unknown variable
    rows = read_rows(args.data)
    if args.output is not None:
        _check_writable(Path(args.output))
    if variables is None:  # as bn.predict chooses them, but from every row
        check_columns(bn, rows)
        variables = [v for v in bn.variables if v not in rows.columns or rows[v].isna().any()]
    progress = not args.no_progress
    out, log_p = _skipping_impossible(
        bn, rows, lambda part: bn.predict(part, variables, progress=progress), keep_rows=False
    )
    write_frame(out, args.output)
    notes = notes_stream(args.output)
    print(
        f"predicted {len(variables)} variable(s) in {len(rows):,} rows: the most probable state "
        "of each, given the row's observed cells",
        file=notes,
    )
    if log_p is not None:
        _warn_impossible(log_p, notes, "their predictions are left empty")
    if args.output is not None:
        print(f"wrote: {args.output}", file=notes)
    return 0


def run_impute(args: argparse.Namespace) -> int:
    """``ppdgm bn impute``: a CSV's rows with every missing cell filled in."""
    from ppdgm.bn.evidence import check_columns

    if args.seed is not None and not args.sample:
        raise ValueError("--seed applies to the draws of --sample only")
    bn = load_network(args.network)
    rows = read_rows(args.data)
    if args.output is not None:
        _check_writable(Path(args.output))
    check_columns(bn, rows)
    progress = not args.no_progress
    out, log_p = _skipping_impossible(
        bn,
        rows,
        lambda part: bn.impute(part, sample=args.sample, seed=args.seed, progress=progress),
        keep_rows=True,
    )
    write_frame(out, args.output)
    notes = notes_stream(args.output)
    filled = int(rows.isna().to_numpy().sum() - out.isna().to_numpy().sum())
    how = (
        "drawn from p(missing cells | observed cells) of each row"
        + (f", seed {args.seed}" if args.seed is not None else "")
        if args.sample
        else "each cell's most probable state given the row's observed cells (cell by cell, "
        "not the most probable completion of the row)"
    )
    print(f"filled {filled:,} missing cells in {len(rows):,} rows: {how}", file=notes)
    if log_p is not None:
        _warn_impossible(log_p, notes, "their missing cells are left empty")
    if args.output is not None:
        print(f"wrote: {args.output}", file=notes)
    return 0


def _skipping_impossible(
    bn: DiscreteBN,
    rows: pd.DataFrame,
    work: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    keep_rows: bool,
) -> tuple[pd.DataFrame, torch.Tensor | None]:
    """``work(rows)``; or, where some rows have probability zero under the network, ``work``
    of the other rows, the impossible ones left as they are (``keep_rows``) or empty, and the
    log-probability of every row."""
    import pandas as pd
    import torch

    from ppdgm.bn import ZeroProbabilityEvidence

    try:
        return work(rows), None
    except ZeroProbabilityEvidence:
        log_p = bn.log_prob(rows)
    possible = torch.isfinite(log_p).numpy()
    done = work(rows[possible])
    if keep_rows:
        out = rows.astype(object)
    else:
        out = pd.DataFrame(None, index=rows.index, columns=done.columns, dtype=object)
    out.loc[possible, list(done.columns)] = done.astype(object).to_numpy()
    return out, log_p


# ---------------------------------------------------------------------------------------- fit
def run_fit(args: argparse.Namespace) -> int:
    """``ppdgm bn fit``: learns the tables from a CSV (EM when cells are missing)."""
    bn = load_network(args.network)
    rows = read_rows(args.data)
    if args.output is not None:
        _check_writable(Path(args.output))
    before = float(bn.log_prob(rows).sum())  # also rejects unknown variables and states
    print(_missing_summary(bn, rows))
    result = bn.fit(
        rows,
        prior=args.prior,
        pseudo_count=args.pseudo_count,
        equivalent_sample_size=args.ess,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=args.seed,
        progress=True,
    )
    estimate = {
        "none": "maximum likelihood",
        "dirichlet": f"Dirichlet prior, pseudo-count {args.pseudo_count:g}",
        "bdeu": f"BDeu prior, equivalent sample size {args.ess:g}",
    }[args.prior]
    n = max(len(rows), 1)
    history = result.log_likelihood
    if result.method == "em":
        state = "converged" if result.converged else "stopped at --max-iter, not converged"
        print(f"method: EM ({estimate}), {result.iterations} iterations, {state}")
        print(_history_table(history, n))
        if args.prior != "none":
            print("(EM never decreases the log-likelihood plus the log-prior, its objective)")
    else:
        print(f"method: closed-form counts ({estimate}); the data are complete")
    print(
        f"log p(data) under the learned tables: {history[-1]:.4f} ({history[-1] / n:.6f} per row)"
    )
    print(f"log p(data) under {args.network}'s own tables: {before:.4f} ({before / n:.6f} per row)")
    print(_largest_change(bn, result.network))
    if args.output is None:
        print("(not written: give -o FILE.bif to save the learned network)")
        return 0
    _write_bif(result.network, Path(args.output))
    print(f"wrote the learned network to {args.output}")
    return 0


def _history_table(history: list[float], n: int, head: int = 3, tail: int = 2) -> str:
    lines = ["  iteration  log-likelihood     per row"]
    shown = list(range(len(history)))
    if len(shown) > head + tail + 1:
        shown = [*shown[:head], -1, *shown[-tail:]]
    for i in shown:
        if i < 0:
            lines.append("  ...")
        else:
            lines.append(f"  {i:>9}  {history[i]:>14.4f}  {history[i] / n:>10.6f}")
    return "\n".join(lines)


def _largest_change(before: DiscreteBN, after: DiscreteBN) -> str:
    import torch

    worst, where = -1.0, ""
    for v in before.variables:
        diff = (after.cpt(v) - before.cpt(v)).abs()
        value = float(diff.max())
        if value > worst:
            worst = value
            index = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
            given = ", ".join(
                f"{u}={before.states[u][i]}" for u, i in zip(before.parents(v), index, strict=False)
            )
            state = before.states[v][index[-1]]
            where = (
                f"p({v}={state}{' | ' + given if given else ''}): "
                f"{float(before.cpt(v)[index]):.4f} -> {float(after.cpt(v)[index]):.4f}"
            )
    return f"largest change of a table entry: {worst:.4f}, in {where}"


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    check_folder(parent, f"cannot write {path}:")
    if not parent.is_dir():
        raise FileNotFoundError(f"no such directory: {parent} (for {path})")
    if path.is_dir():
        raise ValueError(f"{path} is a directory")


def _write_bif(bn: DiscreteBN, path: Path) -> None:
    """Writes the BIF through a temporary file renamed into place (``write_bif`` does so)."""
    try:
        bn.write_bif(path)
    except OSError as e:  # ppdgm.atomic has removed the temporary file
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        raise ValueError(f"cannot write {path}: {describe_os_error(e)}") from None
