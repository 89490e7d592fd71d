"""The hand-written PyTorch peers of ``benchmarks/bench_autoregressive.py`` compute the same
training loss as the models they are timed against, so that the throughput ratios compare
like with like."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from ppdgm.models import FVSBN, MADE, NADE

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_autoregressive.py"
    spec = importlib.util.spec_from_file_location("bench_autoregressive", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKERS = {
    "fvsbn": lambda: FVSBN(10),
    "nade": lambda: NADE(10, 8),
    "made-1mask": lambda: MADE(10, [16]),
    "made-3masks-2layers": lambda: MADE(10, [16, 12], 3, ordering="agnostic"),
    "made-3masks-direct": lambda: MADE(10, [16, 16], 3, ordering="agnostic", direct=True),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_the_hand_written_peer_computes_the_models_training_loss(name: str) -> None:
    torch.manual_seed(0)
    model = MAKERS[name]().double()
    with torch.no_grad():  # weights away from their initial values, direct ones included
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    params = [p.detach().clone() for p in model.parameters()]
    logits = _bench().hand_written_logits(model, params)
    x = torch.randint(0, 2, (7, 10), dtype=torch.float64)
    for step in range(4):  # every mask in turn, and back to the first
        peer = F.binary_cross_entropy_with_logits(logits(x, step), x, reduction="none")
        if hasattr(model, "training_loss"):
            expected = model.training_loss(x, step)
        else:
            expected = -model.log_prob(x).mean()
        torch.testing.assert_close(peer.sum(-1).mean(), expected, rtol=1e-12, atol=1e-10)
