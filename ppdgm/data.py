"""Datasets: binarized MNIST (``.amat`` files), labelled MNIST (idx files), scikit-learn's
digits, synthetic binary data, and seeded batches for training.

Nothing here downloads unless :func:`download` is called; loaders take a path.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from ppdgm.atomic import atomic_path, write_text_atomic
from ppdgm.batch import Batch, check_rows, num_rows, select_rows, split_rows

__all__ = [
    "BINARIZED_MNIST_URL",
    "DATASETS",
    "FILE_SUFFIXES",
    "MNIST_SPLITS",
    "MNIST_URL",
    "MNIST_VALID_ROWS",
    "SPLITS",
    "BernoulliMixture",
    "batches",
    "dataloader",
    "download",
    "dynamic_binarization",
    "fixed_binarization",
    "labelled_split",
    "load",
    "load_binarized_mnist",
    "load_digit_labels",
    "load_digits",
    "load_file",
    "load_mnist",
    "read_amat",
    "read_idx",
    "semi_supervised",
    "write_amat",
]

#: Where Hugo Larochelle publishes the statically binarized MNIST of Salakhutdinov and Murray.
BINARIZED_MNIST_URL = (
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
    "binarized_mnist_{split}.amat"
)
SPLITS = ("train", "valid", "test")
#: The names :func:`load` knows, as the command line spells them.
DATASETS = ("binarized-mnist", "digits", "digits-gray", "digits-labelled", "mnist", "mnist-gray")
#: Rows of the MNIST training files that :func:`load` keeps for validation (the last ones).
MNIST_VALID_ROWS = 10_000

_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[list(b"01 \t\r\n")] = True


def read_amat(path: str | os.PathLike[str], dim: int | None = None) -> Tensor:
    r"""Reads an ``.amat`` file of binary rows: one row per line, values ``0``/``1`` separated by
    spaces or tabs. Lines may end with ``\n``, ``\r\n`` or a lone ``\r``; empty lines at the
    end are ignored.

    Arguments:
        path: the file.
        dim: the values each line must hold; None: as many as the first line.

    Returns:
        ``[N, dim]`` float32 tensor of 0 and 1.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: naming the file and the line at fault (counted from 1): a value other than
            0 and 1, or a line with another number of values; or a file without rows.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "x.amat").write_bytes(b"0 1\r1 1\r\n0 0\n")
        ...     read_amat(Path(d, "x.amat")).tolist()
        [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """
    path = Path(path)
    data = _read_bytes(path)
    return _parse_amat(data, str(path), dim)


def _read_bytes(path: Path) -> bytes:
    """The bytes of the file ``path``.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it cannot be read (the message names it and the cause).
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


def _parse_amat(data: bytes, name: str, dim: int | None) -> Tensor:
    """The rows of ``.amat`` text ``data`` (see :func:`read_amat`); ``name`` names it in errors."""
    raw = np.frombuffer(data, dtype=np.uint8)
    digit = (raw == ord("0")) | (raw == ord("1"))
    lf, cr = raw == ord("\n"), raw == ord("\r")
    # a line ends at "\n", and at a "\r" not followed by "\n" (a "\r\n" ends once, at its "\n")
    is_end = lf.copy()
    if len(raw):
        is_end[:-1] |= cr[:-1] & ~lf[1:]
        is_end[-1] |= cr[-1]
    ends = np.flatnonzero(is_end)
    # a value is one digit between white space: any other byte, or two digits in a row, is not
    bad = ~_ALLOWED[raw]
    bad[1:] |= digit[1:] & digit[:-1]
    if bad.any():
        at = int(bad.argmax())
        line = int(np.searchsorted(ends, at)) + 1  # line ends before the byte, plus one
        start = int(ends[line - 2]) + 1 if line > 1 else 0
        stop = int(ends[line - 1]) if line - 1 < len(ends) else len(raw)
        text = raw[start:stop].tobytes().decode("utf-8", "replace").replace("\r", "")
        token = next((t for t in text.split() if t not in ("0", "1")), text.strip())
        raise ValueError(f"{name}, line {line}: value {token[:20]!r} is not 0 or 1")
    if len(raw) and not is_end[-1]:
        ends = np.append(ends, len(raw))
    before = np.concatenate([[0], np.cumsum(digit)])  # before[i]: values in raw[:i]
    counts = np.diff(np.concatenate([[0], before[ends]])).astype(np.int64)
    last = len(counts)
    while last and counts[last - 1] == 0:  # trailing empty lines
        last -= 1
    counts = counts[:last]
    if not last:
        raise ValueError(f"{name} holds no rows")
    dim = int(counts[0]) if dim is None else dim
    if dim == 0:
        raise ValueError(f"{name}, line 1: no values")
    wrong = np.flatnonzero(counts != dim)
    if len(wrong):
        raise ValueError(
            f"{name}, line {int(wrong[0]) + 1}: {int(counts[wrong[0]])} values, expected {dim}"
        )
    values = raw[digit] - ord("0")
    return torch.from_numpy(values.reshape(last, dim).astype(np.float32))


def write_amat(path: str | os.PathLike[str], x: Tensor) -> None:
    """Writes binary ``[N, D]`` data as an ``.amat`` file (atomically: a temporary file is
    renamed over ``path``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_amat(f"{d}/x.amat", torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
        ...     read_amat(f"{d}/x.amat")
        tensor([[0., 1.],
                [1., 1.]])
    """
    x = torch.as_tensor(x)
    if x.dim() != 2 or bool(((x != 0) & (x != 1)).any()):
        raise ValueError(f"expected [N, D] data of 0 and 1, got shape {tuple(x.shape)}")
    text = "\n".join(" ".join(map(str, row)) for row in x.to(torch.int64).tolist()) + "\n"
    write_text_atomic(path, text)


def load_binarized_mnist(directory: str | os.PathLike[str], split: str = "train") -> Tensor:
    """One split of statically binarized MNIST, ``[N, 784]`` float32, from
    ``binarized_mnist_{split}.amat`` in ``directory`` (rows in the file's order).

    Raises:
        ValueError: for an unknown split or a malformed file.
        FileNotFoundError: if the file is missing (the message says how to get it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(directory) / f"binarized_mnist_{split}.amat"
    if not path.is_file():
        raise FileNotFoundError(
            f"no binarized MNIST {split} split at {path}; ppdgm.data.download({str(directory)!r}) "
            "fetches the files"
        )
    return read_amat(path, dim=784)


def download(
    directory: str | os.PathLike[str],
    splits: tuple[str, ...] = SPLITS,
    *,
    url: str = BINARIZED_MNIST_URL,
    opener: Callable[[str], Any] = urllib.request.urlopen,
) -> list[Path]:
    """Downloads the binarized MNIST ``.amat`` files that ``directory`` lacks; returns the paths.

    Each file is checked (:func:`read_amat`) before it is moved into place, so a failed or
    corrupt download leaves nothing behind.

    Arguments:
        directory: where the files go (created if needed).
        splits: which of ``train``, ``valid``, ``test``.
        url: the address of each file, ``{split}`` standing for the split.
        opener: opens an address and returns a readable binary response.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        path = directory / f"binarized_mnist_{split}.amat"
        if not path.is_file():
            with atomic_path(path, ".part") as tmp:
                with opener(url.format(split=split)) as response, tmp.open("wb") as out:
                    shutil.copyfileobj(response, out)
                read_amat(tmp, dim=784)
        paths.append(path)
    return paths


#: Where MNIST's idx files are published (``{name}`` stands for a file name, e.g.
#: ``train-images-idx3-ubyte.gz``); :func:`load_mnist` only reads them, it never downloads.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/{name}"
#: The splits of :func:`load_mnist` and the prefixes of their idx files.
MNIST_SPLITS = {"train": "train", "test": "t10k"}

# idx type code -> big-endian numpy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Reads an idx file (MNIST's format), gzipped or plain: which one is decided by the gzip
    magic bytes, not by the name.

    The format: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64) and the number of dimensions; then one
    big-endian int32 size per dimension; then the values, big-endian, in row-major order.

    Returns:
        A tensor of the file's shape and type (``torch.uint8``, ``int8``, ``int16``, ``int32``,
        ``float32`` or ``float64``), in native byte order.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: naming the file: a corrupt gzip stream, a bad magic number, an unknown type
            code, or a file shorter or longer than its header says (bytes expected vs found).

    Example:
        >>> import gzip, tempfile
        >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "x-idx2-ubyte.gz").write_bytes(gzip.compress(header + bytes(range(6))))
        ...     read_idx(Path(d, "x-idx2-ubyte.gz"))
        tensor([[0, 1, 2],
                [3, 4, 5]], dtype=torch.uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"{path}: corrupt gzip stream ({e}); fetch the file again, or gunzip it to see "
                "where it breaks"
            ) from None
    return _parse_idx(data, str(path))


def _parse_idx(data: bytes, name: str) -> Tensor:
    """The tensor in idx bytes ``data`` (see :func:`read_idx`); ``name`` names it in errors."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(
            f"{name}: bad magic number {data[:4].hex() or '(empty file)'}; an idx file starts "
            "with two zero bytes, a type code and the number of dimensions (is it an idx file?)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {t.name}" for c, t in _IDX_TYPES.items())
        raise ValueError(f"{name}: unknown idx type code 0x{code:02X}; known are {known}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{name}: truncated header: {ndim} dimensions need {header} bytes, found {len(data)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: negative size in shape {shape}")
    dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated file" if len(data) < expected else "extra bytes after the data"
        raise ValueError(
            f"{name}: {kind}: shape {shape} of {dtype.name} needs {expected} bytes "
            f"(header included), found {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def _mnist_path(directory: Path, prefix: str, kind: str) -> Path:
    """The idx file ``{prefix}-{kind}`` in ``directory``, plain or ``.gz``."""
    name = f"{prefix}-{kind}"
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no MNIST file {name}(.gz) in {directory}; MNIST's idx files come from "
        f"http://yann.lecun.com/exdb/mnist/ (mirror: {MNIST_URL.format(name=name + '.gz')}); "
        "ppdgm does not download them"
    )


def load_mnist(
    directory: str | os.PathLike[str],
    split: str = "train",
    *,
    binarize: str | None = None,
    threshold: float = 0.5,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Labelled MNIST from the standard idx files in ``directory``: ``train-images-idx3-ubyte``
    and ``train-labels-idx1-ubyte`` for ``split="train"``, ``t10k-...`` for ``"test"``, each
    plain or gzipped (``.gz``; the plain file is read when both are there). Rows are in the
    files' order.

    Arguments:
        directory: the folder of the idx files.
        split: ``train`` or ``test``.
        binarize: None: the intensities ``pixel / 255`` in ``[0, 1]``; ``"threshold"``: 1 where
            the intensity is above ``threshold``, else 0; ``"bernoulli"``: one Bernoulli draw
            with the intensities as probabilities, fixed by ``seed`` (the same draw every call).
            For a fresh draw each epoch, load the intensities and use
            :func:`dynamic_binarization`.
        threshold: for ``binarize="threshold"``, in ``[0, 1]``.
        seed: for ``binarize="bernoulli"``.

    Returns:
        ``(images, labels)``: ``[N, rows * cols]`` float32 (``[N, 784]`` for MNIST) and ``[N]``
        int64 in ``0..9``.

    Raises:
        FileNotFoundError: if a file is missing (the message names it and where MNIST comes
            from).
        ValueError: for an unknown split or binarize mode, a threshold outside ``[0, 1]``, a
            malformed file (:func:`read_idx`), images and labels of different counts, or labels
            outside ``0..9``.
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; choose one of {', '.join(MNIST_SPLITS)}")
    if binarize not in (None, "threshold", "bernoulli"):
        raise ValueError(
            f"unknown binarize mode {binarize!r}; choose None, 'threshold' or 'bernoulli'"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"threshold must be in [0, 1] (intensities are pixel/255), got {threshold}"
        )
    directory = Path(directory)
    prefix = MNIST_SPLITS[split]
    image_path = _mnist_path(directory, prefix, "images-idx3-ubyte")
    label_path = _mnist_path(directory, prefix, "labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(
            f"{image_path}: expected [N, rows, cols] uint8 images, got shape "
            f"{tuple(images.shape)} of {images.dtype}; is this the images file?"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(
            f"{label_path}: expected [N] uint8 labels, got shape {tuple(labels.shape)} of "
            f"{labels.dtype}; is this the labels file?"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{len(images)} images in {image_path.name} but {len(labels)} labels in "
            f"{label_path.name}; the two files must come from the same split"
        )
    if len(labels) and int(labels.max()) > 9:
        bad = int(torch.nonzero(labels > 9)[0])
        raise ValueError(f"{label_path}: label {int(labels[bad])} at row {bad} is not a digit 0..9")
    x = images.reshape(len(images), -1).to(torch.float32).div_(255.0)
    if binarize == "threshold":
        x = (x > threshold).to(torch.float32)
    elif binarize == "bernoulli":
        x = fixed_binarization(x, seed)
    return x, labels.to(torch.int64)


def _seeded_generator(tag: str, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from ``tag`` and non-negative integer ``keys`` (through numpy's
    ``SeedSequence``, so that nearby keys give unrelated streams)."""
    if any(k < 0 for k in keys):
        raise ValueError(f"seeds and epochs must be non-negative integers, got {keys}")
    entropy = [*tag.encode(), *map(int, keys)]
    state = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(state)


def _check_intensities(x: Tensor, what: str) -> None:
    if not torch.is_floating_point(x):
        raise ValueError(f"{what} needs float intensities in [0, 1], got dtype {x.dtype}")
    if x.numel() and (bool(x.min() < 0) or bool(x.max() > 1) or bool(x.isnan().any())):
        raise ValueError(
            f"{what} needs intensities in [0, 1] (divide pixels by 255), got values in "
            f"[{float(x.min())}, {float(x.max())}]"
        )


def fixed_binarization(x: Tensor, seed: int) -> Tensor:
    """One Bernoulli draw of intensities ``x`` in ``[0, 1]``, fixed by ``seed``: the same 0s
    and 1s every call (how ``load_mnist(..., binarize="bernoulli")`` binarizes, and how ``fit``
    binarizes validation rows when it trains on :func:`dynamic_binarization`). Rows already
    binary stay as they are.

    Raises:
        ValueError: for values outside ``[0, 1]``, or a negative seed.

    Example:
        >>> x = torch.tensor([[0.0, 0.5, 1.0]])
        >>> torch.equal(fixed_binarization(x, 3), fixed_binarization(x, 3))
        True
        >>> fixed_binarization(x, 3)[0, [0, 2]].tolist()
        [0.0, 1.0]
    """
    _check_intensities(x, "fixed_binarization")
    return torch.bernoulli(x, generator=_seeded_generator("load_mnist", seed, device=x.device))


def dynamic_binarization(x: Tensor, seed: int, epoch: int) -> Tensor:
    """A fresh Bernoulli draw of intensities ``x`` in ``[0, 1]`` for each epoch (dynamic
    binarization, as the CS236 homework trains on MNIST): ``bernoulli(x)`` from a generator
    seeded by ``(seed, epoch)``, so an epoch's draw can be replayed (on resume) exactly.

    A training loop loads the intensities once (``load_mnist(folder)``, no ``binarize``) and
    binarizes at the start of each epoch, then batches the result::

        x, _ = load_mnist(folder)
        for epoch in range(epochs):
            x_epoch = dynamic_binarization(x, seed, epoch)
            for batch in batches(x_epoch, 128, seed=seed, epoch=epoch):
                ...

    (``fit(..., dynamic_binarization=True)`` does this). Evaluate on a fixed draw
    (:func:`fixed_binarization`) so that numbers stay comparable.

    Returns:
        0 and 1 of ``x``'s shape, dtype and device.

    Raises:
        ValueError: for values outside ``[0, 1]``, or a negative seed or epoch.

    Example:
        >>> x = torch.full((2, 6), 0.5)
        >>> torch.equal(dynamic_binarization(x, 0, 1), dynamic_binarization(x, 0, 1))
        True
        >>> dynamic_binarization(x, 0, 1).unique().tolist()
        [0.0, 1.0]
    """
    _check_intensities(x, "dynamic_binarization")
    return torch.bernoulli(x, generator=_seeded_generator("dynamic", seed, epoch, device=x.device))


def labelled_split(labels: Tensor, per_class: int, *, seed: int = 0) -> Tensor:
    """The indices of ``per_class`` rows of each class in ``labels``, drawn by ``seed`` and
    sorted: the labelled part of a semi-supervised run (10 per class of MNIST: 100 rows).

    Arguments:
        labels: ``[N]`` integer classes.
        per_class: rows to keep of each class (positive).
        seed: which rows.

    Raises:
        ValueError: for labels that are not a 1-D integer tensor, a per_class below 1, or a
            class with fewer rows than ``per_class`` (the message names it).

    Example:
        >>> labels = torch.tensor([0, 1, 0, 1, 2, 2, 0])
        >>> index = labelled_split(labels, 2, seed=0)
        >>> labels[index].sort().values.tolist()
        [0, 0, 1, 1, 2, 2]
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or torch.is_floating_point(labels) or labels.is_complex():
        raise ValueError(
            f"expected [N] integer labels, got shape {tuple(labels.shape)} of {labels.dtype}"
        )
    if per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    labels = labels.cpu()
    classes, counts = labels.unique(return_counts=True)
    short = counts < per_class
    if bool(short.any()):
        c, n = int(classes[short][0]), int(counts[short][0])
        raise ValueError(
            f"class {c} has {n} rows, fewer than per_class={per_class}; ask for at most "
            f"{int(counts.min())} per class"
        )
    generator = _seeded_generator("labelled_split", seed)
    chosen = []
    for c in classes:
        rows = torch.nonzero(labels == c).squeeze(1)
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def semi_supervised(
    x: Tensor, labels: Tensor, labelled: Tensor, *, repeat: int | None = None
) -> tuple[Tensor, Tensor]:
    """Training rows for a semi-supervised model (:class:`ppdgm.models.SSVAE`): every row of
    ``x`` without its label (``-1``), then the labelled rows with theirs, repeated.

    Repeating the few labelled rows makes a shuffled minibatch hold about as many labelled as
    unlabelled rows, as the CS236 homework's steps do (100 unlabelled and the 100 labelled
    rows in each): ``fit`` then needs no sampler of its own.

    Arguments:
        x: ``[N, ...]`` rows.
        labels: ``[N]`` integer classes of the rows.
        labelled: indices of the rows whose label is kept (e.g. :func:`labelled_split`).
        repeat: copies of the labelled rows; None: as many as make them at least ``N``.

    Returns:
        ``(rows, labels)``: ``[N + repeat * L, ...]`` and ``[N + repeat * L]`` int64, ``-1``
        for the first ``N``.

    Raises:
        ValueError: for labels of another length than ``x``, non-integer labels, an empty or
            out-of-range ``labelled``, or a ``repeat`` below 1.

    Example:
        >>> x, y = torch.eye(4), torch.tensor([0, 1, 1, 0])
        >>> rows, labels = semi_supervised(x, y, torch.tensor([0, 1]))
        >>> rows.shape, labels.tolist()
        (torch.Size([8, 4]), [-1, -1, -1, -1, 0, 1, 0, 1])
    """
    labels = torch.as_tensor(labels)
    labelled = torch.as_tensor(labelled)
    if labels.shape != (len(x),) or torch.is_floating_point(labels):
        raise ValueError(
            f"expected [{len(x)}] integer labels, one per row of x, got shape "
            f"{tuple(labels.shape)} of {labels.dtype}"
        )
    if labelled.dim() != 1 or not len(labelled) or torch.is_floating_point(labelled):
        raise ValueError("labelled must be a non-empty 1-D tensor of row indices")
    if bool((labelled < 0).any()) or bool((labelled >= len(x)).any()):
        raise ValueError(f"labelled holds indices outside 0..{len(x) - 1}")
    if repeat is None:
        repeat = max(1, -(-len(x) // len(labelled)))
    if repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat}")
    rows = torch.cat([x, x[labelled].repeat(repeat, *[1] * (x.dim() - 1))])
    unknown = torch.full((len(x),), -1, dtype=torch.int64, device=labels.device)
    return rows, torch.cat([unknown, labels[labelled].long().repeat(repeat)])


def load_digits(
    split: str = "all", *, binary: bool = True, threshold: int = 8, seed: int = 0
) -> Tensor:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), ``[N, 64]`` float32.

    Arguments:
        split: ``all``, or ``train`` (1,397 images), ``valid`` (200) or ``test`` (200) of a
            shuffle fixed by ``seed``.
        binary: 1 where a pixel is at least ``threshold``, else 0; False: the 17 gray levels
            ``0..16`` as they are.
        threshold: the binarization threshold, in ``1..16``.
        seed: the shuffle of the split.

    Example:
        >>> x = load_digits("valid")
        >>> x.shape, sorted(x.unique().tolist())
        (torch.Size([200, 64]), [0.0, 1.0])
        >>> load_digits(binary=False).unique().numel()
        17
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not 1 <= threshold <= 16:
        raise ValueError(f"threshold must be in 1..16, got {threshold}")
    x = torch.from_numpy(sklearn_digits().data.astype(np.float32))
    if binary:
        x = (x >= threshold).to(torch.float32)
    if split == "all":
        return x
    return x[_digits_split(len(x), split, seed)]


def load_digit_labels(split: str = "all", *, seed: int = 0) -> Tensor:
    """The classes ``0..9`` of the images :func:`load_digits` gives for ``split`` and ``seed``,
    in the same order, ``[N]`` int64 (for colouring latent maps; the models never see them).

    Example:
        >>> load_digit_labels("valid").shape
        torch.Size([200])
    """
    from sklearn.datasets import load_digits as sklearn_digits

    y = torch.from_numpy(sklearn_digits().target.astype(np.int64))
    if split == "all":
        return y
    return y[_digits_split(len(y), split, seed)]


def _digits_split(n: int, split: str, seed: int) -> Tensor:
    """The indices of ``split`` in the digits' shuffle fixed by ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = {"test": order[:200], "valid": order[200:400], "train": order[400:]}
    if split not in parts:
        raise ValueError(f"unknown split {split!r}; choose one of all, {', '.join(SPLITS)}")
    return parts[split]


def load(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> Batch:
    """A dataset of :data:`DATASETS` by name:

    - ``binarized-mnist``: the ``.amat`` files in ``data_dir`` (:func:`load_binarized_mnist`);
    - ``digits``: scikit-learn's digits binarized at 8; ``digits-gray``: their 17 gray levels
      ``0..16`` (for flows with dequantization);
    - ``digits-labelled``: the binarized digits with their classes, ``(x, y)``;
    - ``mnist``: labelled MNIST from the idx files in ``data_dir`` (:func:`load_mnist`),
      binarized by one Bernoulli draw fixed by seed 0, ``(x, y)``: ``train`` is the training
      files' first 50,000 rows, ``valid`` their last :data:`MNIST_VALID_ROWS`, ``test`` the
      t10k files; ``mnist-gray``: the same rows as intensities in ``[0, 1]`` (to train with
      dynamic binarization: ``fit(..., dynamic_binarization=True)``, ``ppdgm fit ...
      --dynamic-binarization``).

    Raises:
        ValueError: for an unknown name or split, or a dataset of files without ``data_dir``.
    """
    if name in ("binarized-mnist", "mnist", "mnist-gray") and data_dir is None:
        raise ValueError(f"{name} needs the folder of its files (--data-dir)")
    if name == "binarized-mnist":
        return load_binarized_mnist(data_dir, split)  # type: ignore[arg-type]
    if name in ("mnist", "mnist-gray"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        files = "test" if split == "test" else "train"
        binarize = "bernoulli" if name == "mnist" else None
        x, y = load_mnist(data_dir, files, binarize=binarize, seed=0)  # type: ignore[arg-type]
        if split != "test":
            rows = (
                slice(None, -MNIST_VALID_ROWS)
                if split == "train"
                else slice(-MNIST_VALID_ROWS, None)
            )
            x, y = x[rows], y[rows]
        return x, y
    if name == "digits":
        return load_digits(split)
    if name == "digits-gray":
        return load_digits(split, binary=False)
    if name == "digits-labelled":
        return load_digits(split), load_digit_labels(split)
    raise ValueError(
        f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or name a data file "
        f"({', '.join(FILE_SUFFIXES)})"
    )


#: The kinds of data file :func:`load_file` reads.
FILE_SUFFIXES = (".pt", ".npy", ".npz", ".csv", ".amat")


def load_file(path: str | os.PathLike[str]) -> Batch:
    """Rows of data from a file, by its suffix:

    - ``.pt``: a tensor, or a dict or tuple of tensors (``torch.save``; read with
      ``weights_only=True``, so no code in the file runs);
    - ``.npy``: one array; ``.npz``: its arrays as a dict (``np.savez(path, x=x, y=y)``), read
      without pickles;
    - ``.csv``: numbers, one row per line, comma-separated, no header;
    - ``.amat``: binary rows (:func:`read_amat`).

    Floating-point arrays become float32 tensors (float64 stays float64), integer arrays int64
    (labels). A dict or tuple reaches a model as keyword or positional arguments
    (:mod:`ppdgm.batch`).

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for an unknown suffix, a file that cannot be parsed (the message names the
            file and the fault), ragged rows, or NaN values.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     np.savez(f"{d}/xy.npz", x=np.zeros((3, 2)), y=np.arange(3))
        ...     data = load_file(f"{d}/xy.npz")
        >>> {k: (tuple(v.shape), v.dtype) for k, v in data.items()}
        {'x': ((3, 2), torch.float64), 'y': ((3,), torch.int64)}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pt":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, list):
                loaded = tuple(loaded)
        elif suffix == ".npy":
            loaded = _from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                loaded = {k: _from_numpy(arrays[k]) for k in arrays.files}
        elif suffix == ".csv":
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy only warns about an empty file
                loaded = _from_numpy(np.loadtxt(path, delimiter=",", ndmin=2))
        elif suffix == ".amat":
            loaded = read_amat(path)
        else:
            raise ValueError(
                f"{path}: unknown kind of data file {suffix or '(no suffix)'}; use one of "
                f"{', '.join(FILE_SUFFIXES)}"
            )
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"cannot read {path} as data: {e}") from None
    except (pickle.UnpicklingError, OSError, RuntimeError, UserWarning) as e:
        raise ValueError(f"cannot read {path} as data ({type(e).__name__}: {e})") from None
    try:
        return check_rows(loaded, path.name)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _from_numpy(array: np.ndarray) -> Tensor:
    if array.dtype.kind == "f":
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
    if array.dtype.kind in "iub":
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    raise ValueError(f"arrays of numbers are needed, got dtype {array.dtype}")


def batches(
    x: Batch, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0
) -> Iterator[Batch]:
    """Minibatches of the rows of ``x`` (a tensor, or a tuple or dict of tensors whose rows go
    together), shuffled by a permutation that depends only on ``(seed, epoch)``, so that an
    epoch can be replayed (resumed) exactly.

    Example:
        >>> x = torch.arange(5.0)[:, None]
        >>> [b.squeeze(1).tolist() for b in batches(x, 2, seed=0)]
        [[4.0, 0.0], [1.0, 3.0], [2.0]]
        >>> [y.tolist() for _, y in batches((x, torch.arange(5)), 2, seed=0)]
        [[4, 0], [1, 3], [2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    n = num_rows(x)
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        index = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield select_rows(x, index[start : start + batch_size])
    else:
        yield from split_rows(x, batch_size)


def dataloader(
    x: Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A torch ``DataLoader`` over a ``TensorDataset`` of ``x`` yielding ``(batch,)`` tuples,
    shuffled by a generator seeded with ``seed`` (the order of each epoch follows from the seed
    and the epoch's rank; a new loader with the same seed repeats it).

    Example:
        >>> loader = dataloader(torch.arange(4.0)[:, None], 2, seed=0)
        >>> [b.squeeze(1).tolist() for (b,) in loader] == [b.squeeze(1).tolist() for (b,) in
        ...     dataloader(torch.arange(4.0)[:, None], 2, seed=0)]
        True
    """
    dataset = TensorDataset(x)
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    # whole batches by fancy indexing, not row by row and collated
    return DataLoader(
        dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None
    )


class BernoulliMixture:
    """Synthetic binary data with a known density: a mixture of ``components`` products of
    Bernoullis with random weights and probabilities drawn from ``seed``.

    Example:
        >>> truth = BernoulliMixture(dim=6, components=3, seed=0)
        >>> x = truth.sample(1000, seed=1)
        >>> x.shape, bool(truth.log_prob(x).exp().le(1).all())
        (torch.Size([1000, 6]), True)
    """

    def __init__(self, dim: int, components: int = 4, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        f64 = {"generator": generator, "dtype": torch.float64}
        self.log_weights = torch.log_softmax(torch.randn(components, **f64), 0)
        # probabilities near 0 or 1, so that the data have structure to learn
        probs = torch.rand(components, dim, **f64).mul(0.8).add(0.1)
        near_zero = torch.rand(components, dim, **f64) < 0.5
        self.probs = torch.where(near_zero, probs**3, 1 - (1 - probs) ** 3)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``[n, dim]`` float32 draws."""
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        return torch.bernoulli(self.probs[k], generator=generator).float()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` of each row, float64."""
        x = torch.as_tensor(x, dtype=torch.float64)[:, None, :]
        log_px = (x * self.probs.log() + (1 - x) * (1 - self.probs).log()).sum(-1)
        return torch.logsumexp(self.log_weights + log_px, -1)
