"""Data-parallel training on torch.distributed: processes on loopback with gloo, launched by
``torchrun`` (the command line) or by hand as a user's script does (``fit`` finds the group).

FVSBN's objective is deterministic, so two processes must reach one process's parameters; a
VAE's guide draws differ per rank, so there the ranks must agree with each other exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from own_models import PlainVAE

from ppdgm import cli
from ppdgm.data import load_digits
from ppdgm.distributed import Group, shard
from ppdgm.infer.estimate import UnreliableWeightsWarning
from ppdgm.train import fit

WORKER = Path(__file__).with_name("distributed_worker.py")
#: one thread a process: two processes share the two cores; gloo on the loopback interface
#: (the machine's host name need not resolve)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PPDGM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def test_the_shards_of_a_minibatch_are_its_rows_in_order() -> None:
    for n in range(0, 12):
        for size in (1, 2, 3, 5):
            x = torch.arange(n)
            parts = [shard(x, Group(r, size)) for r in range(size)]
            assert torch.cat(parts).tolist() == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    rows = {"x": torch.arange(5), "y": torch.arange(5) * 10}  # rows that go together
    part = shard(rows, Group(1, 2))
    assert part["x"].tolist() == [3, 4] and part["y"].tolist() == [30, 40]


def launch(processes: int, *ppdgm: str) -> subprocess.CompletedProcess:
    """``ppdgm ...`` in ``processes`` processes started by ``torchrun``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "ppdgm", *ppdgm]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=240)


def in_this_process(*ppdgm: str) -> None:
    """``ppdgm ...`` run here, on one thread as the launched processes are."""
    assert cli.main(["--threads", "1", *ppdgm]) == 0


def fvsbn(out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "fvsbn",
        "--data",
        "digits",
        "--batch-size",
        "100",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FVSBN on digits, one process, three epochs."""
    out = tmp_path_factory.mktemp("one")
    in_this_process(*fvsbn(out, "--epochs", "3"))
    return out


def valid_nll(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["valid_nll"] for line in lines]


def test_two_processes_reach_the_parameters_of_one(one_process: Path, tmp_path: Path) -> None:
    two = launch(2, *fvsbn(tmp_path, "--epochs", "2"))
    assert two.returncode == 0, two.stderr
    assert len(valid_nll(tmp_path)) == 2
    assert valid_nll(tmp_path) == pytest.approx(valid_nll(one_process)[:2], abs=1e-4)
    # rank 0 alone printed and wrote
    assert two.stdout.count("wrote:") == 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in one_process.iterdir())
    # resumed by another number of processes: the run of one process throughout
    in_this_process(*fvsbn(tmp_path, "--epochs", "3", "--resume"))
    ours, theirs = weights(tmp_path / "last.pt"), weights(one_process / "last.pt")
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-5)
    assert valid_nll(tmp_path) == pytest.approx(valid_nll(one_process), abs=1e-4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(
    model: str, out: Path, *extra: str, processes: int = 2, **env_extra: str
) -> list[subprocess.CompletedProcess]:
    port = str(free_port())
    procs = []
    for rank in range(processes):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": str(processes), "LOCAL_RANK": str(rank)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **env_extra)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), model, str(out), *extra],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def test_the_ranks_of_user_programs_hold_the_same_parameters(tmp_path: Path) -> None:
    runs = run_workers("vae,params", tmp_path)
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    for model in ("vae", "params"):
        out = tmp_path / model
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
        assert ranks[0].keys() == ranks[1].keys() and ranks[0]
        for k in ranks[0]:
            assert torch.equal(ranks[0][k], ranks[1][k]), k
        reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
        nll = [[e["valid_nll"] for e in report["history"]] for report in reports]
        assert len(nll[0]) == 2 and nll[0] == nll[1]  # validation is one sum over the processes
        assert reports[0]["files"] and not reports[1]["files"]  # rank 1 wrote nothing
        assert {p.name for p in out.iterdir()} == {
            "best.pt",
            "last.pt",
            "metrics.jsonl",
            "rank0.pt",
            "rank1.pt",
            "rank0.json",
            "rank1.json",
        }
        if model == "vae":  # the guide's draws differ from one process's: the ELBO is as good
            alone = [_plain_vae_alone(seed) for seed in range(3)]
            spread = max(alone) - min(alone)
            assert abs(nll[0][-1] - sum(alone) / 3) <= max(3 * spread, 0.3), (nll[0], alone)


def _plain_vae_alone(seed: int) -> float:
    """The validation NLL bound of the worker's VAE trained by one process."""
    pyro.clear_param_store()
    torch.manual_seed(100)  # rank 0's initial weights in the worker
    train, valid = load_digits("train")[:600], load_digits("valid")
    result = fit(
        PlainVAE(64, 2, 16),
        train,
        valid,
        epochs=2,
        batch_size=100,
        seed=seed,
        progress=False,
        plots=False,
    )
    return result.history[-1]["valid_nll"]


def test_a_failed_rank_stops_the_run_and_the_checkpoint_resumes(tmp_path: Path) -> None:
    runs = run_workers("fvsbn", tmp_path, "2")  # rank 1 dies at the start of epoch 2
    assert runs[1].returncode == 3
    assert runs[0].returncode != 0
    assert "another process of the run failed" in runs[0].stderr
    kept = torch.load(tmp_path / "last.pt", weights_only=True)
    assert kept["epoch"] == 1
    # resume with the same processes: the epoch is redone and the run finishes
    runs = run_workers("fvsbn", tmp_path, RESUME="1")
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2


def evaluate(run: Path, processes: int, capsys: pytest.CaptureFixture[str]) -> dict:
    ppdgm = ["evaluate", str(run), "--json", "--samples", "1,20", "--rows", "150"]
    ppdgm += ["--batch-size", "40", "--seed", "3"]
    if processes == 1:
        capsys.readouterr()
        in_this_process(*ppdgm)
        printed = capsys.readouterr().out
    else:
        done = launch(processes, *ppdgm)
        assert done.returncode == 0, done.stderr
        printed = done.stdout
    lines = [line for line in printed.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    return json.loads(lines[0])


def test_a_zoo_vae_trains_and_is_evaluated_by_two_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # fit compares the processes' parameters after every epoch (and stops the run if they
    # differ); a VAE's bounds are sampled, and two processes' per-row numbers are one's
    fit_vae = ["fit", "vae", "--data", "digits", "--epochs", "1", "--out", str(tmp_path)]
    trained = launch(2, *fit_vae, "--no-progress", "--z-dim", "4", "--hidden", "32")
    assert trained.returncode == 0, trained.stderr
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    one, two = evaluate(tmp_path, 1, capsys), evaluate(tmp_path, 2, capsys)
    assert one["rows"] == two["rows"] == 150
    assert len(one["results"]) == 3
    for a, b in zip(one["results"], two["results"], strict=True):
        # every row's draws come from the seed of its pass: the same numbers, summed alike
        numbers = {k for k, v in a.items() if isinstance(v, float)}
        assert numbers and {k: a[k] for k in numbers} == pytest.approx(
            {k: b[k] for k in numbers}, rel=1e-12, abs=1e-12
        )
        assert {k: v for k, v in a.items() if k not in numbers} == {
            k: v for k, v in b.items() if k not in numbers
        }


def test_two_processes_train_a_semi_supervised_vae_on_fresh_draws_and_classify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # labelled gray rows, drawn afresh each epoch (the same draw on every rank), validated on
    # one fixed draw: the accuracy fit reports with its rows sharded is the classifier's
    import numpy as np

    from ppdgm.checkpoint import load_model
    from ppdgm.data import fixed_binarization, load_digit_labels
    from ppdgm.models import SSVAE

    gray, labels = load_digits("train", binary=False) / 16, load_digit_labels("train")
    np.savez(tmp_path / "train.npz", x=gray[:300].numpy(), y=labels[:300].numpy())
    np.savez(tmp_path / "valid.npz", x=gray[300:450].numpy(), y=labels[300:450].numpy())
    out = tmp_path / "run"
    fit_ssvae = ["fit", "ssvae", "--data", str(tmp_path / "train.npz"), "--valid-data"]
    fit_ssvae += [str(tmp_path / "valid.npz"), "--dynamic-binarization", "--labels-per-class"]
    fit_ssvae += ["3", "--epochs", "2", "--z-dim", "4", "--hidden", "32", "--out", str(out)]
    trained = launch(2, *fit_ssvae, "--no-progress", "--seed", "2")
    assert trained.returncode == 0, trained.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    model, _ = load_model(out / "last.pt", expect=SSVAE)
    drawn = fixed_binarization(gray[300:450], 2)
    by_hand = float((model.classify(drawn) == labels[300:450]).double().mean())
    assert metrics[-1]["valid_accuracy"] == pytest.approx(by_hand, abs=1e-12)
    one, two = evaluate(out / "last.pt", 1, capsys), evaluate(out / "last.pt", 2, capsys)
    assert one["accuracy"] == two["accuracy"] == pytest.approx(by_hand, abs=1e-12)
    assert one["labelled"] == two["labelled"] == 150


def test_a_minibatch_smaller_than_the_processes_leaves_some_without_rows(group: Path) -> None:
    # 3 processes, global minibatches of 2 rows: one process gets none at every step, and the
    # run still equals one process's (FVSBN: a deterministic objective)
    alone = _tiny_fit()
    for rank in range(3):
        theirs = torch.load(group / f"tiny{rank}.pt", weights_only=True)
        for k, v in alone.items():
            torch.testing.assert_close(theirs[k], v, rtol=0, atol=1e-6)


def _tiny_fit() -> dict[str, torch.Tensor]:
    from ppdgm.models import FVSBN

    x = torch.bernoulli(torch.full((9, 5), 0.4), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = FVSBN(5)
    fit(model, x, epochs=2, batch_size=2, lr=0.05, progress=False)
    return model.state_dict()


class Standardised(torch.nn.Module):
    """A density of standardised rows whose batch statistics are running buffers: each process
    updates them on its own rows."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(dim, affine=False)
        self.loc = torch.nn.Parameter(torch.zeros(dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(self.loc, 1.0).log_prob(self.norm(x)).sum(-1)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three processes in one gloo group, spawned here, each writing what it found."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("group")
    mp.spawn(_group_run, args=(3, free_port(), out), nprocs=3, join=True)
    return out


def _group_run(rank: int, size: int, port: int, out: Path) -> None:
    import torch.distributed as dist

    from ppdgm.bn import ZeroProbabilityEvidence, example
    from ppdgm.distributed import ReplicasDiverged
    from ppdgm.train import maximum_likelihood

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, size, rank == 0)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size)
    try:
        torch.save(_tiny_fit(), out / f"tiny{rank}.pt")
        bn, rows = example("alarm"), _network_rows()
        found = {"log_p": bn.log_prob(rows), **bn.posterior(rows, ["HR", "CO"])}
        torch.save(found, out / f"bn{rank}.pt")
        torch.save(_importance(bn, rows), out / f"importance{rank}.pt")
        impossible = rows.copy()
        impossible.loc[250, ["FIO2", "VENTALV", "PVSAT"]] = ["LOW", "ZERO", "NORMAL"]
        try:
            bn.posterior(impossible, "CO")
        except ZeroProbabilityEvidence as e:
            (out / f"error{rank}.txt").write_text(str(e))

        x = torch.randn(40, 3, generator=torch.Generator().manual_seed(5)) * 2 + 1
        torch.manual_seed(rank)  # different initial weights: fit starts from rank 0's
        model = Standardised(3)
        fit(model, x, epochs=2, batch_size=20, progress=False)
        torch.save(dict(model.state_dict()), out / f"buffers{rank}.pt")

        def rank_one_moves(m: Standardised, batch: torch.Tensor, step: int) -> torch.Tensor:
            if rank == 1 and step == 1:  # outside the optimizer, on one process only
                with torch.no_grad():
                    m.loc.add_(0.1)
            return maximum_likelihood(m, batch, step)

        try:
            fit(
                Standardised(3),
                x,
                epochs=2,
                batch_size=20,
                progress=False,
                objective=rank_one_moves,
            )
        except ReplicasDiverged as e:
            (out / f"diverged{rank}.txt").write_text(str(e))
        dist.barrier()  # rank 0 hosts the store: it leaves after the others are done
    finally:
        dist.destroy_process_group()


def _network_rows():
    from ppdgm.bn import example

    rows = example("alarm").sample(301, seed=2)
    hidden = torch.rand(rows.shape, generator=torch.Generator().manual_seed(3)).numpy() < 0.5
    return rows.mask(hidden)


def _importance(bn, rows) -> dict[str, torch.Tensor]:
    from ppdgm.bn import approximate

    approximate.ROWS_PER_PASS = 64  # five passes of the 301 rows, dealt to the processes
    estimate = bn.log_prob(rows, method="importance", num_samples=50, seed=4)
    post = bn.posterior(rows, "CO", method="importance", num_samples=50, seed=4)
    return {
        "log_p": estimate.log_prob,
        "stderr": estimate.stderr,
        "CO": post.probs["CO"],
        "CO_stderr": post.stderr["CO"],
        "ess": post.ess,
    }


def test_network_queries_are_shared_out_by_rows(group: Path, monkeypatch) -> None:
    from ppdgm.bn import approximate, example

    bn, rows = example("alarm"), _network_rows()
    log_p, posterior = bn.log_prob(rows), bn.posterior(rows, ["HR", "CO"])
    for rank in range(3):
        theirs = torch.load(group / f"bn{rank}.pt", weights_only=True)
        torch.testing.assert_close(theirs["log_p"], log_p, rtol=1e-12, atol=0)
        for v in ("HR", "CO"):
            torch.testing.assert_close(theirs[v], posterior[v], rtol=1e-12, atol=1e-14)
        # evidence of probability zero in a row of rank 2's block: every process raises, and
        # the message names the data's row
        error = (group / f"error{rank}.txt").read_text()
        assert error.startswith("the evidence of row(s) 250 ")
    # importance sampling: each pass of rows seeded on its own, so one process's numbers
    monkeypatch.setattr(approximate, "ROWS_PER_PASS", 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreliableWeightsWarning)
        alone = _importance(bn, rows)
    said = [str(w.message) for w in caught if issubclass(w.category, UnreliableWeightsWarning)]
    assert any("of 301 data points" in m and "at point 139" in m for m in said), said
    for rank in range(3):
        theirs = torch.load(group / f"importance{rank}.pt", weights_only=True)
        assert theirs.keys() == alone.keys()
        for k, v in alone.items():
            torch.testing.assert_close(theirs[k], v, rtol=1e-12, atol=0, equal_nan=True)


def test_buffers_are_rank_0s_after_every_epoch(group: Path) -> None:
    # each process's running statistics come from its own rows; fit makes them rank 0's
    ranks = [torch.load(group / f"buffers{r}.pt", weights_only=True) for r in range(3)]
    assert ranks[0]["norm.running_mean"].abs().min() > 0.01  # moved from the initial zeros
    for theirs in ranks[1:]:
        for k in ranks[0]:
            assert torch.equal(ranks[0][k], theirs[k]), k


def test_processes_whose_parameters_part_stop_with_an_error(group: Path) -> None:
    for rank in range(3):
        message = (group / f"diverged{rank}.txt").read_text()
        assert message.startswith("after epoch 1 the processes hold different parameters: 'loc'")
        assert "rank 1" in message


def test_a_gradient_missing_on_every_process_stays_missing() -> None:
    # Adam skips a parameter without a gradient: summing must not turn None into zeros
    import torch.distributed as dist

    from ppdgm.distributed import sum_gradients

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        used, unused = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
        large = torch.zeros(1 << 20, requires_grad=True)  # reduced in place, not in the buffer
        (2 * used.sum() + large.sum()).backward()
        sum_gradients([used, unused, large])
        assert used.grad.tolist() == [2.0, 2.0, 2.0] and unused.grad is None
        assert bool((large.grad == 1).all())
    finally:
        dist.destroy_process_group()
