"""ppdgm.data: .amat files written and read back, malformed files, the download path on files the
tests make (never the network), scikit-learn's digits, synthetic data and seeded batches."""

from __future__ import annotations

import functools
import io
import itertools
import operator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from ppdgm import data
from ppdgm.data import (
    BernoulliMixture,
    batches,
    dataloader,
    download,
    load,
    load_binarized_mnist,
    load_digits,
    read_amat,
    write_amat,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"


def random_binary(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, dim), 0.3), generator=torch.Generator().manual_seed(seed))


def mnist_folder(root: Path, splits: tuple[str, ...] = ("train", "valid")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(splits):
        write_amat(root / f"binarized_mnist_{split}.amat", random_binary(5 + k, 784, seed=k))
    return root


# ------------------------------------------------------------------------------- .amat files
@pytest.mark.parametrize(("n", "dim"), [(1, 1), (7, 5), (20, 784)])
def test_amat_round_trip(tmp_path: Path, n: int, dim: int) -> None:
    x = random_binary(n, dim)
    write_amat(tmp_path / "x.amat", x)
    text = (tmp_path / "x.amat").read_text()
    assert text.count("\n") == n and text.splitlines()[0].split() == [str(int(v)) for v in x[0]]
    back = read_amat(tmp_path / "x.amat")
    assert back.dtype == torch.float32 and torch.equal(back, x)


def test_binarized_mnist_from_a_generated_folder(tmp_path: Path) -> None:
    folder = mnist_folder(tmp_path / "mnist")
    train = load_binarized_mnist(folder, "train")
    assert train.shape == (5, 784) and torch.equal(train, random_binary(5, 784, seed=0))
    assert torch.equal(load("binarized-mnist", "valid", folder), random_binary(6, 784, seed=1))
    with pytest.raises(FileNotFoundError, match=r"no binarized MNIST test split .*download"):
        load_binarized_mnist(folder, "test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_binarized_mnist(folder, "dev")
    with pytest.raises(ValueError, match="needs the folder"):
        load("binarized-mnist", "train")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load("cifar", "train")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1 0\n1 1\n", "line 2: 2 values, expected 3"),
        ("0 1 0\n1 1 0 1\n", "line 2: 4 values, expected 3"),
        ("0 1 0\n1 2 0\n", "line 2: value '2' is not 0 or 1"),
        ("0 1 0\n0 0.5 1\n", "line 2: value '0.5' is not 0 or 1"),
        ("0 1 0\n1 1 10\n", "line 2: value '10' is not 0 or 1"),
        ("0,1,0\n", "line 1: value '0,1,0' is not 0 or 1"),
        ("0 1 -1\n", "line 1: value '-1' is not 0 or 1"),
        ("", "holds no rows"),
        ("\n\n", "holds no rows"),
    ],
)
def test_malformed_amat_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.amat"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        read_amat(path)


def test_amat_with_the_wrong_width_for_mnist(tmp_path: Path) -> None:
    write_amat(tmp_path / "binarized_mnist_train.amat", random_binary(3, 783))
    with pytest.raises(ValueError, match="line 1: 783 values, expected 784"):
        load_binarized_mnist(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_amat(tmp_path / "missing.amat")
    with pytest.raises(ValueError, match="expected \\[N, D\\] data of 0 and 1"):
        write_amat(tmp_path / "x.amat", torch.tensor([[0.5]]))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared data folder {SHARED} is absent")
def test_the_shared_validation_split() -> None:
    valid = load_binarized_mnist(SHARED, "valid")
    assert valid.shape == (10_000, 784)
    assert set(valid.unique().tolist()) == {0.0, 1.0}
    assert 0.1 < float(valid.mean()) < 0.2  # about 13% of the pixels are on


# ------------------------------------------------------------------------------- download
def test_download_from_file_urls(tmp_path: Path) -> None:
    server = mnist_folder(tmp_path / "server", ("train", "valid", "test"))
    url = server.as_uri() + "/binarized_mnist_{split}.amat"
    assert url.startswith("file://")
    paths = download(tmp_path / "here", url=url)
    assert [p.name for p in paths] == [f"binarized_mnist_{s}.amat" for s in data.SPLITS]
    for p in paths:
        assert p.read_bytes() == (server / p.name).read_bytes()
    assert torch.equal(load_binarized_mnist(tmp_path / "here", "test"), random_binary(7, 784, 2))


def test_download_skips_files_present_and_leaves_nothing_when_broken(tmp_path: Path) -> None:
    good = io.BytesIO()
    np.savetxt(good, random_binary(2, 784).numpy(), fmt="%d")
    opened: list[str] = []

    def opener(url: str) -> io.BytesIO:
        opened.append(url)
        if "test" in url:
            return io.BytesIO(b"0 1 2\n")  # corrupt
        return io.BytesIO(good.getvalue())

    folder = tmp_path / "data"
    download(folder, ("train",), url="https://example.invalid/{split}", opener=opener)
    assert opened == ["https://example.invalid/train"]
    download(folder, ("train",), url="https://example.invalid/{split}", opener=opener)
    assert len(opened) == 1, "a file already present is not fetched again"
    with pytest.raises(ValueError, match="value '2' is not 0 or 1"):
        download(folder, ("test",), url="https://example.invalid/{split}", opener=opener)
    assert sorted(p.name for p in folder.iterdir()) == ["binarized_mnist_train.amat"]

    def offline(url: str) -> io.BytesIO:
        raise OSError("network unreachable")

    with pytest.raises(OSError, match="unreachable"):
        download(folder, ("valid",), opener=offline)
    assert sorted(p.name for p in folder.iterdir()) == ["binarized_mnist_train.amat"]


# --------------------------------------------------------------------------------- digits
def test_digits_binarized_gray_and_split() -> None:
    gray = torch.from_numpy(sklearn_digits().data).float()
    assert torch.equal(load_digits(binary=False), gray)
    assert load_digits(binary=False).unique().tolist() == [float(v) for v in range(17)]
    assert torch.equal(load_digits(threshold=5), (gray >= 5).float())
    parts = {s: load_digits(s) for s in ("train", "valid", "test")}
    assert [len(p) for p in parts.values()] == [1397, 200, 200]
    assert sum(len(p) for p in parts.values()) == len(gray)
    again = load_digits("valid", binary=False)
    assert torch.equal(load_digits("valid", binary=False), again)
    # the three splits are disjoint pieces of one permutation
    index = torch.randperm(len(gray), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, gray[index[200:400]])
    assert not torch.equal(load_digits("valid", seed=1), load_digits("valid"))
    with pytest.raises(ValueError, match=r"threshold must be in 1\.\.16"):
        load_digits(threshold=17)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_digits("dev")


# ------------------------------------------------------------------------------ synthetic
def test_bernoulli_mixture_is_normalized_and_sampled_right() -> None:
    truth = BernoulliMixture(dim=8, components=3, seed=2)
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=8)))
    assert abs(float(truth.log_prob(every).exp().sum()) - 1.0) < 1e-12
    x = truth.sample(50_000, seed=0)
    assert torch.equal(x, truth.sample(50_000, seed=0))
    cells = (x.long() * 2 ** torch.arange(7, -1, -1)).sum(-1)
    freq = torch.bincount(cells, minlength=256).double() / len(x)
    assert float((freq - truth.log_prob(every).exp()).abs().sum()) / 2 < 0.02


# ---------------------------------------------------------------------------- batches
def test_batches_are_seeded_per_epoch_and_cover_every_row() -> None:
    x = torch.arange(23.0)[:, None]
    first = [b.squeeze(1) for b in batches(x, 5, seed=3, epoch=0)]
    assert [len(b) for b in first] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(first).tolist()) == list(range(23))
    again = [b.squeeze(1) for b in batches(x, 5, seed=3, epoch=0)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    later = torch.cat([b.squeeze(1) for b in batches(x, 5, seed=3, epoch=1)])
    assert not torch.equal(torch.cat(first), later)
    ordered = torch.cat([b.squeeze(1) for b in batches(x, 5, shuffle=False)])
    assert ordered.tolist() == list(range(23))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(batches(x, 0))


def test_dataloader_shuffles_with_a_fixed_seed() -> None:
    x = torch.arange(10.0)[:, None]
    epochs = [[b.squeeze(1).tolist() for (b,) in loader] for loader in [dataloader(x, 4, seed=1)]]
    loader = dataloader(x, 4, seed=1)
    assert [b.squeeze(1).tolist() for (b,) in loader] == epochs[0]
    assert sorted(functools.reduce(operator.iadd, epochs[0], [])) == list(range(10))
    assert [len(b) for b in epochs[0]] == [4, 4, 2]
    second = [b.squeeze(1).tolist() for (b,) in loader]
    assert second != epochs[0]  # the next epoch has its own order
    assert next(b.squeeze(1).tolist() for (b,) in dataloader(x, 4, shuffle=False)) == [0, 1, 2, 3]
    assert [len(b) for (b,) in dataloader(x, 4, drop_last=True)] == [4, 4]


# ------------------------------------------------------------- .amat line endings and errors
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_amat_reads_every_kind_of_line_ending(tmp_path: Path, end: bytes) -> None:
    rows = [[0, 1, 1], [1, 0, 0], [1, 1, 1]]
    path = tmp_path / "x.amat"
    path.write_bytes(end.join(b" ".join(str(v).encode() for v in row) for row in rows) + end * 2)
    assert read_amat(path).tolist() == rows
    path.write_bytes(b"0 1 1\r\n1 0 0\r1 1 1")  # mixed, no final line end
    assert read_amat(path).tolist() == rows


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"0 1\r1 1 0\r", r"x\.amat, line 2: 3 values, expected 2"),
        (b"0 1\r\n1 1\r\n0\r\n", r"x\.amat, line 3: 1 values, expected 2"),
        (b"0 1\r1 2\r", r"x\.amat, line 2: value '2' is not 0 or 1"),
        (b"0 1\r\n1 1\r\n0 0.5\r\n", r"x\.amat, line 3: value '0\.5' is not 0 or 1"),
        (b"0 1\r0 1\r\xff\xfe 1", r"x\.amat, line 3: value .* is not 0 or 1"),
        (b"\r\n\r\n", r"x\.amat holds no rows"),
    ],
)
def test_amat_errors_name_the_line_whatever_the_line_endings(
    tmp_path: Path, text: bytes, message: str
) -> None:
    path = tmp_path / "x.amat"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=message):
        read_amat(path)
