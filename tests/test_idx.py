"""ppdgm.data's idx reader and labelled MNIST: idx files of every type written by a small writer
here (plain and gzipped) read back, malformed files refused by name, load_mnist on a fake folder,
dynamic binarization and labelled splits; one test reads the shared MNIST files when present."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ppdgm.data import dynamic_binarization, labelled_split, load_mnist, read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """The idx encoding of ``array`` (type code from its dtype unless given)."""
    dtype = np.dtype(array.dtype).newbyteorder(">")
    if code is None:
        code = next(c for c, t in CODES.items() if np.dtype(t) == dtype)
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def sample_array(code: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(CODES[code]).newbyteorder("=")
    if dtype.kind == "f":
        return rng.normal(size=(3, 4, 2)).astype(dtype) * 1e3
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=(3, 4, 2), endpoint=True).astype(dtype)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_round_trip_every_type(tmp_path, code, gz):
    array = sample_array(code, seed=code)
    # a misleading name: plain or gzip is decided by the content
    path = write_idx(tmp_path / ("x.gz" if not gz else "x.idx"), array, gz=gz)
    got = read_idx(path)
    assert got.shape == array.shape
    assert got.numpy().dtype == array.dtype
    np.testing.assert_array_equal(got.numpy(), array)


def test_round_trip_one_and_zero_dims(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "l", labels, gz=True)).tolist() == list(range(7))
    empty = np.zeros((0, 3), dtype=np.int32)
    assert read_idx(write_idx(tmp_path / "e", empty)).shape == (0, 3)


def write_raw(tmp_path: Path, raw: bytes, name: str = "bad") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


GOOD = idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00" + GOOD[2:], "bad magic number"),
        (b"", "bad magic number"),
        (b"PK\x03\x04rest", "bad magic number"),
        (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown idx type code 0x0A"),
        (GOOD[:6], "truncated header: 2 dimensions need 12 bytes, found 6"),
        (
            GOOD[:-1],
            "truncated file: shape (3, 4) of int16 needs 36 bytes (header included), found 35",
        ),
        (
            GOOD + b"\0\0\0",
            "extra bytes after the data: shape (3, 4) of int16 needs 36 bytes (header included), "
            "found 39",
        ),
    ],
)
def test_malformed_files_are_refused_by_name(tmp_path, raw, message):
    path = write_raw(tmp_path, raw)
    with pytest.raises(ValueError, match="bad") as info:
        read_idx(path)
    assert message in str(info.value)
    # the same faults inside a gzip stream
    with pytest.raises(ValueError) as info:
        read_idx(write_raw(tmp_path, gzip.compress(raw), "bad.gz"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda z: z[: len(z) // 2],  # cut short
        lambda z: z[:-8] + bytes(b ^ 0xFF for b in z[-8:-4]) + z[-4:],  # wrong CRC
        lambda z: z[:10] + b"\xff" * 8 + z[18:],  # garbage in the deflate stream
    ],
)
def test_corrupt_gzip_is_refused_by_name(tmp_path, damage):
    z = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    with pytest.raises(ValueError, match=r"bad\.gz: corrupt gzip stream"):
        read_idx(write_raw(tmp_path, damage(z), "bad.gz"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_idx(tmp_path / "nothing")


N = 20


def fake_mnist(root: Path, *, prefix: str = "train", n_labels: int = N, gz=(True, False)) -> Path:
    """A folder of ``N`` random 28x28 images with labels 0..9 (every class twice)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_labels) % 10).astype(np.uint8)
    write_idx(root / f"{prefix}-images-idx3-ubyte{'.gz' * gz[0]}", images, gz=gz[0])
    write_idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' * gz[1]}", labels, gz=gz[1])
    return root


def test_load_mnist_shapes_and_dtypes(tmp_path):
    folder = fake_mnist(tmp_path / "m")
    x, y = load_mnist(folder)
    assert x.shape == (N, 784) and x.dtype == torch.float32
    assert y.shape == (N,) and y.dtype == torch.int64
    assert y.tolist() == [i % 10 for i in range(N)]
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    raw = read_idx(folder / "train-images-idx3-ubyte.gz").reshape(N, -1)
    torch.testing.assert_close(x, raw.float() / 255)
    # the test split reads t10k-*
    fake_mnist(folder, prefix="t10k", gz=(False, True))
    x_test, _ = load_mnist(folder, "test")
    assert x_test.shape == (N, 784)


def test_load_mnist_binarize_modes(tmp_path):
    folder = fake_mnist(tmp_path / "m")
    x, _ = load_mnist(folder)
    threshold, _ = load_mnist(folder, binarize="threshold")
    assert torch.equal(threshold, (x > 0.5).float())
    assert torch.equal(
        load_mnist(folder, binarize="threshold", threshold=0.2)[0], (x > 0.2).float()
    )
    b0, _ = load_mnist(folder, binarize="bernoulli", seed=0)
    assert sorted(b0.unique().tolist()) == [0.0, 1.0]
    assert torch.equal(b0, load_mnist(folder, binarize="bernoulli", seed=0)[0])
    b1, _ = load_mnist(folder, binarize="bernoulli", seed=1)
    assert not torch.equal(b0, b1)
    # 15,680 draws: the mean is within a few standard errors (about 0.004) of the intensities'
    assert abs(float(b0.mean()) - float(x.mean())) < 0.02
    # a pixel of intensity 0 is never 1, one of intensity 1 always is
    assert bool((b0[x == 0] == 0).all()) and bool((b0[x == 1] == 1).all())


def test_load_mnist_refuses_bad_folders_and_options(tmp_path):
    folder = fake_mnist(tmp_path / "m", n_labels=N - 1)
    with pytest.raises(ValueError, match=r"20 images in .* but 19 labels"):
        load_mnist(folder)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\(\.gz\).*yann\.lecun"):
        load_mnist(folder, "test")
    write_idx(folder / "train-labels-idx1-ubyte", np.full(N, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 at row 0 is not a digit"):
        load_mnist(folder)
    with pytest.raises(ValueError, match="unknown MNIST split 'valid'"):
        load_mnist(folder, "valid")
    with pytest.raises(ValueError, match="unknown binarize mode 'dynamic'"):
        load_mnist(folder, binarize="dynamic")
    with pytest.raises(ValueError, match="threshold must be in"):
        load_mnist(folder, binarize="threshold", threshold=128)
    # labels and images swapped
    swapped = fake_mnist(tmp_path / "s")
    (swapped / "train-images-idx3-ubyte.gz").unlink()
    write_idx(swapped / "train-images-idx3-ubyte", np.zeros(N, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected \[N, rows, cols\] uint8 images"):
        load_mnist(swapped)


def test_dynamic_binarization_per_epoch():
    x = torch.rand(50, 784, generator=torch.Generator().manual_seed(0))
    e0, e1 = dynamic_binarization(x, 0, 0), dynamic_binarization(x, 0, 1)
    assert not torch.equal(e0, e1)
    assert torch.equal(e1, dynamic_binarization(x, 0, 1))
    assert not torch.equal(e0, dynamic_binarization(x, 1, 0))
    assert e0.dtype == x.dtype and e0.shape == x.shape
    assert sorted(e0.unique().tolist()) == [0.0, 1.0]
    assert abs(float(e0.mean()) - float(x.mean())) < 0.02
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\]"):
        dynamic_binarization(x * 255, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        dynamic_binarization(x, 0, -1)


def test_fixed_binarization_draws_each_pixel_with_its_intensity(tmp_path):
    from ppdgm.data import fixed_binarization

    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    drawn = fixed_binarization(p.repeat(20_000, 1), 4)  # 20,000 draws of each intensity
    # within 5 binomial standard errors of p (exact at 0 and 1)
    spread = 5 * (p * (1 - p) / 20_000).sqrt()
    assert bool(((drawn.mean(0) - p).abs() <= spread).all())
    assert torch.equal(fixed_binarization(p.repeat(20_000, 1), 4), drawn)
    assert not torch.equal(fixed_binarization(p.repeat(20_000, 1), 5), drawn)
    binary = drawn[:7]
    assert torch.equal(fixed_binarization(binary, 9), binary)  # binary rows stay
    folder = fake_mnist(tmp_path / "m")  # load_mnist's Bernoulli mode is this draw
    gray, _ = load_mnist(folder)
    assert torch.equal(
        load_mnist(folder, binarize="bernoulli", seed=2)[0], fixed_binarization(gray, 2)
    )
    with pytest.raises(ValueError, match=r"needs float intensities"):
        fixed_binarization(torch.ones(2, 3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\] \(divide pixels by 255\)"):
        fixed_binarization(p * 255, 0)


def test_labelled_split():
    labels = torch.arange(200) % 10
    labels = labels[torch.randperm(200, generator=torch.Generator().manual_seed(3))]
    index = labelled_split(labels, 4, seed=0)
    assert index.dtype == torch.int64 and len(index) == 40
    assert torch.equal(index, index.sort().values)
    assert len(set(index.tolist())) == 40  # disjoint: no row twice
    assert labels[index].bincount().tolist() == [4] * 10
    assert torch.equal(index, labelled_split(labels, 4, seed=0))
    assert not torch.equal(index, labelled_split(labels, 4, seed=1))
    assert len(labelled_split(labels, 20)) == 200
    with pytest.raises(ValueError, match="class 0 has 20 rows, fewer than per_class=21"):
        labelled_split(labels, 21)
    with pytest.raises(ValueError, match="per_class must be a positive integer"):
        labelled_split(labels, 0)
    with pytest.raises(ValueError, match="integer labels"):
        labelled_split(labels.float(), 1)


@pytest.mark.skipif(
    not (SHARED / "train-images-idx3-ubyte.gz").is_file(), reason="no shared MNIST idx files"
)
def test_shared_mnist():
    x, y = load_mnist(SHARED)
    assert x.shape == (60_000, 784) and y.shape == (60_000,)
    assert y.min() == 0 and y.max() == 9
    counts = y.bincount(minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert int(counts.sum()) == 60_000
    raw = read_idx(SHARED / "train-images-idx3-ubyte.gz")
    assert raw.shape == (60_000, 28, 28) and raw.dtype == torch.uint8
    assert len(labelled_split(y, 10)) == 100
