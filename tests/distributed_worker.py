"""One process of a data-parallel run, as a user writes it: join the group ``torchrun`` (or the
test) describes, call ``fit``, and save this rank's parameters so the test can compare ranks.

``python distributed_worker.py MODELS OUT [FAIL_AT_EPOCH]``: MODELS is ``vae`` (a plain Pyro VAE),
``params`` (a program of ``pyro.param`` sites only) or ``fvsbn``, or several of them separated by
commas, trained one after the other in the one group, each into ``OUT/MODEL`` (``OUT`` itself
for one model); with FAIL_AT_EPOCH, rank 1 dies at the start of that epoch (1-based)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyro
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from own_models import ParamProgram, PlainVAE

from ppdgm.data import load_digits
from ppdgm.infer.params import program_params
from ppdgm.models import FVSBN
from ppdgm.train import fit, maximum_likelihood


def main() -> None:
    names, out = sys.argv[1].split(","), Path(sys.argv[2])
    fail_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    dist.init_process_group("gloo")
    for name in names:
        pyro.clear_param_store()
        train_one(name, out / name if len(names) > 1 else out, fail_at)
    dist.barrier()  # rank 0 hosts the store (MASTER_ADDR): it leaves after the others are done
    dist.destroy_process_group()


def train_one(name: str, out: Path, fail_at: int | None) -> None:
    rank = dist.get_rank()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(100 + rank)  # different initial weights: fit starts every rank from rank 0's
    train, valid = load_digits("train")[:600], load_digits("valid")
    if name == "params":  # a program of one number a row: each image's share of ink
        train, valid = train.mean(1), valid.mean(1)
    model = {
        "vae": lambda: PlainVAE(64, 2, 16),
        "params": ParamProgram,
        "fvsbn": lambda: FVSBN(64),
    }[name]()
    objective = None
    if fail_at is not None:

        def objective(m, batch, step):  # rank 1 dies at the start of epoch fail_at
            if rank == 1 and step == (fail_at - 1) * 6:
                os._exit(3)
            return maximum_likelihood(m, batch, step)

    result = fit(
        model,
        train,
        valid,
        epochs=int(os.environ.get("EPOCHS", 2)),
        batch_size=100,
        out_dir=out,
        resume=bool(os.environ.get("RESUME")),
        progress=False,
        plots=False,
        objective=objective,
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if name != "fvsbn":
        state.update(
            {f"pyro.{k}": v.detach().clone() for k, v in program_params(model, valid[:4]).items()}
        )
    torch.save(state, out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(
        json.dumps({"history": result.history, "files": [str(p) for p in result.files]})
    )


if __name__ == "__main__":
    main()
