r"""VAEs with labels: the conditional VAE and the semi-supervised VAE (M2), as Pyro programs.

Both decode ``p(x | y, z)`` from a latent ``z ~ N(0, I)`` and a label ``y`` (one of ``y_dim``
classes, given to the networks one-hot), and both guide ``z`` with ``q(z | x, y)``.

:class:`CVAE` (Sohn et al. 2015) is a model of ``x`` given its label: ``model(x, y)`` needs
every row's label, and ``sample(n, y=...)`` draws digits of a chosen class.

:class:`SSVAE` (Kingma et al. 2014, "M2") models the label too, ``y ~ p(y)`` uniform, and guides
it with a classifier ``q(y | x)``. A label of ``-1`` (or ``y=None``: all rows) marks a row whose
label is unknown; its label is then a latent variable that the guide **enumerates**: the
program marks the guide's site ``infer={"enumerate": "parallel"}``, and
:class:`~ppdgm.infer.svi.SVIObjective` trains it with Pyro's ``TraceEnum_ELBO``, whose loss for
such a row is the M2 bound

.. math::

    \mathcal U(x) = \sum_y q(y \mid x)\,\big[\mathcal L(x, y) - \log q(y \mid x)\big],
    \qquad
    \mathcal L(x, y) = \mathbb E_{q(z \mid x, y)}\big[\log p(x \mid y, z) + \log p(y)
    + \log p(z) - \log q(z \mid x, y)\big],

summed over the ten labels exactly, and ``L(x, y)`` for a labelled row. A batch may mix both
kinds of rows: the labelled rows' sites (``y``, ``z``, ``x``) and the unlabelled rows' sites
(``y_unlabelled``, ``z_unlabelled``, ``x_unlabelled``) are each masked to their rows, in one
``pyro.plate("data")``. Both sets of sites are in every call, whatever the batch holds (masked
out where it has no such rows): the programs keep one structure, so the road that trains
them, chosen on the first batch, fits every batch.

Two weights shape the training loss, and only it (they act while the module is in training
mode with gradients on, as :func:`ppdgm.train.fit`'s steps are; the estimators, which run
without gradients, and validation, in evaluation mode, see the plain bound):

- ``class_weight`` (the paper's ``alpha``, the CS236 homework's ``cw``): a term
  ``class_weight * log q(y | x)`` for each labelled row, so that the classifier learns from
  the labels too (in ``L(x, y)`` it does not appear);
- ``gen_weight`` (the homework's ``gw``): the weight of the bound's terms; 0 trains the
  classifier alone (the homework's supervised baseline).

The homework's setting: 100 labelled digits (10 per class) beside the unlabelled training set,
each step a batch of unlabelled rows and one of labelled rows with ``cw = 100``: give ``fit``
the labelled rows repeated as many times as there are unlabelled ones (see
:func:`ppdgm.data.semi_supervised`), so that a minibatch holds about as many of each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import Tensor

from ppdgm._checks import check_int
from ppdgm.base import register_model, seeded, values_are_checked
from ppdgm.models.vae import _activation, _LatentVariableModel, _likelihood, _normal, _widths
from ppdgm.nn import GaussianEncoder, mlp
from ppdgm.settings import from_data, setting

__all__ = ["CVAE", "SSVAE", "UNKNOWN"]

#: The label of a row whose label is unknown (:class:`SSVAE`).
UNKNOWN = -1


def _join(a: Tensor, b: Tensor) -> Tensor:
    """``a [..., da]`` and ``b [..., db]`` side by side, their leading dimensions broadcast
    (an enumerated label ``[K, 1, y]`` beside rows ``[N, x]``)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], -1)


def _some(mask: Tensor) -> Tensor | None:
    """The indices of the rows of ``mask``, or None when it holds every row (no selection)."""
    return None if bool(mask.all()) else mask.nonzero().squeeze(-1)


def _pick(t: Tensor, rows: Tensor | None, n: int) -> Tensor:
    """The rows ``rows`` of ``t`` (rows along dimension -2; a broadcast 1 stays)."""
    return t if rows is None or t.shape[-2] != n else t.index_select(-2, rows)


def _spread(values: Tensor, rows: Tensor | None, n: int, fill: float) -> Tensor:
    """``values`` of the rows ``rows`` put back among ``n`` rows, ``fill`` in the others."""
    if rows is None:
        return values
    full = values.new_full((*values.shape[:-2], n, values.shape[-1]), fill)
    return full.index_copy(-2, rows, values)


def _rows(mask: Tensor) -> contextlib.AbstractContextManager[None]:
    """Masks the sites inside to the rows of ``mask`` (no mask when it holds every row)."""
    return contextlib.nullcontext() if bool(mask.all()) else poutine.mask(mask=mask)


@dataclass(frozen=True)
class _LabelledConfig:
    """The settings the VAEs of labelled rows share."""

    x_dim: int = from_data()
    y_dim: int = setting(10, "the number of classes")
    z_dim: int = setting(10, "latent size", metavar="Z")
    hidden_dims: tuple[int, ...] = _widths()
    likelihood: str = _likelihood()
    activation: str = _activation("elu")


class _LabelledVAE(_LatentVariableModel):
    """What the CVAE and the SSVAE share: ``q(z | x, y)``, ``p(z)``, ``p(x | y, z)`` and the
    checks of labels."""

    y_dim: int

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int],
        likelihood: str,
        activation: str,
    ) -> None:
        super().__init__()
        self.y_dim = check_int("y_dim", y_dim, least=2)
        hidden = self._init_networks(x_dim, z_dim, hidden_dims, likelihood, activation)
        self.hidden_dims = hidden
        self.activation = activation
        self.encoder = GaussianEncoder(x_dim, z_dim, hidden, activation, condition_dim=y_dim)
        self.decoder = mlp([z_dim + y_dim, *reversed(hidden), x_dim], activation)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))
        self._record(
            x_dim=x_dim,
            y_dim=y_dim,
            z_dim=z_dim,
            hidden_dims=hidden,
            likelihood=likelihood,
            activation=activation,
        )

    def _describe(self) -> list[str]:
        widths = [str(h) for h in self.hidden_dims]
        encoder = "-".join([f"{self.x_dim}+{self.y_dim}", *widths, str(2 * self.z_dim)])
        decoder = "-".join([f"{self.z_dim}+{self.y_dim}", *reversed(widths), str(self.x_dim)])
        return [
            f"{type(self).__name__}: x {self.x_dim}, y {self.y_dim} classes, z {self.z_dim}; "
            f"encoder {encoder}, decoder {decoder} ({self.activation}); "
            f"{self.likelihood_name} likelihood",
        ]

    def labels(self, y: Any, n: int, *, unknown: bool) -> tuple[Tensor, Tensor]:
        """Checked labels of ``n`` rows: the labels with unknown ones set to 0, ``[n]`` long,
        and which rows have a label, ``[n]`` bool.

        Arguments:
            y: ``[n]`` integers in ``0 .. y_dim - 1`` (``-1``: unknown, where ``unknown``);
                integral floats are taken; None: every label unknown.
            n: the number of rows.
            unknown: whether a label may be unknown.

        Raises:
            ValueError: naming the fault: missing labels where every row needs one, a wrong
                shape, a value that is not a whole number, or a label out of range.
        """
        name = type(self).__name__
        if y is None:
            if not unknown:
                raise ValueError(f"{name} models x given its label: pass y, one label per row")
            y = torch.full((n,), UNKNOWN)
        y = torch.as_tensor(y)
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if tuple(y.shape) != (n,):
            raise ValueError(f"{name}: y must hold one label per row, [{n}], got {list(y.shape)}")
        if values_are_checked() and not y.is_floating_point():  # fit checked them all once
            y = y.to(self.prior_loc.device)
            return y.clamp(min=0), y != UNKNOWN
        if y.is_floating_point():
            if not bool(torch.isfinite(y).all()) or bool((y != y.round()).any()):
                raise ValueError(f"{name}: labels must be whole numbers (class indices)")
        y = y.long()
        least = UNKNOWN if unknown else 0
        bad = (y < least) | (y >= self.y_dim)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            allowed = (
                f"-1 (unknown) or 0 .. {self.y_dim - 1}" if unknown else f"0 .. {self.y_dim - 1}"
            )
            raise ValueError(
                f"{name}: label {int(y[row])} of row {row} is out of range; labels are {allowed}"
            )
        y = y.to(self.prior_loc.device)
        known = y != UNKNOWN
        return y.clamp(min=0), known

    def check_batch(self, rows: Any) -> tuple[Tensor, Tensor] | dict[str, Tensor]:
        """Rows ``(x, y)`` or ``{"x": x, "y": y}`` (an ``.npz`` file's arrays) checked in full
        (``x`` by :meth:`check`, ``y`` by :meth:`labels`), as :func:`ppdgm.train.fit` checks
        its data once before the steps; rows without labels (a tensor) get ``-1`` where a
        label may be unknown.

        Raises:
            ValueError: as :meth:`check` and :meth:`labels`, or for rows that are not ``x``,
                ``(x, y)`` or ``{"x": x, "y": y}``.
        """
        keyed = isinstance(rows, Mapping) and "x" in rows and set(rows) <= {"x", "y"}
        if isinstance(rows, Tensor):
            x, y = rows, None
        elif isinstance(rows, tuple) and len(rows) == 2:
            x, y = rows
        elif keyed:
            x, y = rows["x"], rows.get("y")
        else:
            raise ValueError(
                f'{type(self).__name__} takes rows x, (x, y) or {{"x": x, "y": y}}, one label '
                "per row"
            )
        x = self.check(x)
        label, known = self.labels(y, x.shape[0], unknown=isinstance(self, SSVAE))
        checked = (x, torch.where(known, label, UNKNOWN))
        return dict(zip(("x", "y"), checked, strict=True)) if keyed else checked

    def one_hot(self, y: Tensor) -> Tensor:
        """Labels ``[...]`` as one-hot rows ``[..., y_dim]`` in the parameters' dtype."""
        return F.one_hot(y, self.y_dim).to(self.dtype)

    def prior(self) -> dist.Distribution:
        """``p(z) = N(0, I)``, event ``[z_dim]``."""
        return _normal(self.prior_loc, self.prior_scale)

    def posterior(self, x: Tensor, y: Tensor, rows: Tensor | None = None) -> dist.Distribution:
        """``q(z | x, y)`` for checked rows ``[N, x_dim]`` and one-hot labels ``[..., y_dim]``
        (an enumerated label broadcasts), event ``[z_dim]``; with ``rows``, the networks run on
        those rows only (the others get ``N(0, I)``, for sites masked to ``rows``)."""
        n = x.shape[0]
        loc, scale, _ = self.encoder(_pick(x, rows, n), _pick(y, rows, n))
        return _normal(_spread(loc, rows, n, 0.0), _spread(scale, rows, n, 1.0))

    def decode(self, z: Tensor, y: Tensor, rows: Tensor | None = None) -> dist.Distribution:
        """``p(x | y, z)`` for latents ``[..., N, z_dim]`` and one-hot labels ``[..., y_dim]``;
        with ``rows``, the decoder runs on those rows only (the others get logits or means
        0, for sites masked to ``rows``)."""
        n = z.shape[-2]
        out = self.decoder(_join(_pick(z, rows, n), _pick(y, rows, n)))
        return self.observation(_spread(out, rows, n, 0.0))

    def sample(self, n: int, y: Any = None, seed: int | None = None, mean: bool = False) -> Tensor:
        """``n`` draws ``[n, x_dim]`` of ``x`` given labels ``y`` (one label for every draw, or
        ``[n]``; None: see the class), or the decoder's means with ``mean``."""
        check_int("n", n, least=0)
        with torch.no_grad(), seeded(seed):
            if y is not None and torch.as_tensor(y).dim() == 0:
                y = torch.full((n,), int(y))
            labels = self._labels_to_draw(n) if y is None else self.labels(y, n, unknown=False)[0]
            out = self.decode(self.prior().sample((n,)), self.one_hot(labels))
            return out.base_dist.mean if mean else out.sample()

    def _labels_to_draw(self, n: int) -> Tensor:
        raise NotImplementedError


@register_model("cvae")
class CVAE(_LabelledVAE):
    r"""A conditional VAE of ``x`` given its label ``y``: ``z ~ N(0, I)``,
    ``x ~ p(x | y, z)``, guided by ``q(z | x, y)``; ``log_prob``-style estimates are of
    ``log p(x | y)``.

    Arguments:
        x_dim: the data dimension.
        y_dim: the number of classes.
        z_dim: the latent dimension.
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them.
        likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"``.
        activation: the networks' activation.

    Example:
        >>> cvae = CVAE(6, 3, 2, [16])
        >>> x, y = torch.bernoulli(torch.full((5, 6), 0.5)), torch.tensor([0, 1, 2, 0, 1])
        >>> from ppdgm.infer.estimate import LogLikelihood
        >>> LogLikelihood(cvae.model, cvae.guide, num_samples=4)(x, y).log_prob.shape
        torch.Size([5])
        >>> cvae.sample(4, y=2, seed=0).shape
        torch.Size([4, 6])
    """

    @dataclass(frozen=True)
    class Config(_LabelledConfig):
        """The CVAE's settings (see the class)."""

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 10,
        z_dim: int = 10,
        hidden_dims: Sequence[int] = (300, 300),
        likelihood: str = "bernoulli",
        *,
        activation: str = "elu",
    ) -> None:
        super().__init__(x_dim, y_dim, z_dim, hidden_dims, likelihood, activation)

    def model(self, x: Tensor, y: Tensor) -> None:
        """``z ~ p(z)``, ``x ~ p(x | y, z)`` in ``pyro.plate("data")``; ``y`` is an input."""
        x = self.check(x)
        label, _ = self.labels(y, x.shape[0], unknown=False)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decode(z, self.one_hot(label)), obs=x)

    def guide(self, x: Tensor, y: Tensor) -> None:
        """``z ~ q(z | x, y)`` in ``pyro.plate("data")``."""
        x = self.check(x)
        label, _ = self.labels(y, x.shape[0], unknown=False)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x, self.one_hot(label)))

    def _labels_to_draw(self, n: int) -> Tensor:
        # no p(y) to draw from: the classes in turn, as a grid of pictures shows them
        return torch.arange(n, device=self.prior_loc.device) % self.y_dim


@register_model("ssvae")
class SSVAE(_LabelledVAE):
    r"""The semi-supervised VAE M2 (Kingma et al. 2014): ``y ~ p(y)`` uniform, ``z ~ N(0, I)``,
    ``x ~ p(x | y, z)``, guided by a classifier ``q(y | x)`` and ``q(z | x, y)``; an unknown
    label is summed out exactly (see the module description).

    Arguments:
        x_dim: the data dimension.
        y_dim: the number of classes.
        z_dim: the latent dimension (the CS236 homework: 64).
        hidden_dims: widths of the encoder's and the classifier's hidden layers; the decoder
            mirrors them.
        likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"``.
        activation: the networks' activation.
        class_weight: ``alpha``, the weight of ``log q(y | x)`` on labelled rows in training.
        gen_weight: the weight of the bound in training (0: the classifier alone).

    Example:
        >>> ssvae = SSVAE(6, 3, 2, [16])
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> y = torch.tensor([0, -1, 2, -1])  # two rows without a label
        >>> from ppdgm.infer.svi import SVIObjective
        >>> SVIObjective()(ssvae, (x, y), step=0).shape  # enumerates the unknown labels
        torch.Size([])
        >>> ssvae.classify(x).shape
        torch.Size([4])

    References:
        Kingma, D. P., Rezende, D. J., Mohamed, S. and Welling, M. (2014). Semi-supervised
        learning with deep generative models. NeurIPS.
    """

    @dataclass(frozen=True)
    class Config(_LabelledConfig):
        """The SSVAE's settings (see the class)."""

        z_dim: int = setting(64, "latent size", metavar="Z")
        class_weight: float = setting(100.0, "weight of log q(y|x) on labelled rows (alpha, cw)")
        gen_weight: float = setting(1.0, "weight of the bound in training (gw; 0: classifier)")

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 10,
        z_dim: int = 64,
        hidden_dims: Sequence[int] = (300, 300),
        likelihood: str = "bernoulli",
        *,
        activation: str = "elu",
        class_weight: float = 100.0,
        gen_weight: float = 1.0,
    ) -> None:
        super().__init__(x_dim, y_dim, z_dim, hidden_dims, likelihood, activation)
        for name, value in (("class_weight", class_weight), ("gen_weight", gen_weight)):
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.class_weight, self.gen_weight = float(class_weight), float(gen_weight)
        self.classifier = mlp([x_dim, *self.hidden_dims, y_dim], activation)
        self._record(class_weight=self.class_weight, gen_weight=self.gen_weight)

    def _describe(self) -> list[str]:
        widths = "-".join(str(h) for h in [self.x_dim, *self.hidden_dims, self.y_dim])
        return [
            *super()._describe(),
            f"  classifier q(y|x) {widths}; training weights: class {self.class_weight:g}, "
            f"bound {self.gen_weight:g}",
        ]

    def label_prior(self) -> dist.Distribution:
        """``p(y)``: uniform over the ``y_dim`` classes."""
        return dist.Categorical(logits=self.prior_loc.new_zeros(self.y_dim))

    def label_posterior(self, x: Tensor) -> dist.Distribution:
        """The classifier ``q(y | x)`` for checked rows ``[N, x_dim]``, batch ``[N]``."""
        return dist.Categorical(logits=self.classifier(x), validate_args=False)

    def classify(self, x: Tensor) -> Tensor:
        """The most probable label under ``q(y | x)`` of each row, ``[N]`` long."""
        with torch.no_grad():
            return self.classifier(self.check(x)).argmax(-1)

    def _training(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def _bound(self) -> contextlib.AbstractContextManager[None]:
        """Scales the bound's sites by ``gen_weight`` while training."""
        if self._training() and self.gen_weight != 1.0:
            return poutine.scale(scale=self.gen_weight)
        return contextlib.nullcontext()

    def _has_bound(self) -> bool:
        return not (self._training() and self.gen_weight == 0.0)

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        """``y ~ p(y)``, ``z ~ p(z)``, ``x ~ p(x | y, z)`` in ``pyro.plate("data")``: observed
        labels at the sites ``y``, ``z``, ``x``; unknown ones (``-1``, or ``y=None``) at
        ``y_unlabelled``, ``z_unlabelled``, ``x_unlabelled``."""
        x = self.check(x)
        label, known = self.labels(y, x.shape[0], unknown=True)
        n = x.shape[0]
        with pyro.plate("data", n):
            if self._has_bound():
                with self._bound():
                    with _rows(known):
                        pyro.sample("y", self.label_prior(), obs=label)
                        z = pyro.sample("z", self.prior())
                        likelihood = self.decode(z, self.one_hot(label), _some(known))
                        pyro.sample("x", likelihood, obs=x)
                    with _rows(~known):  # the networks run on these rows alone
                        guess = pyro.sample("y_unlabelled", self.label_prior())
                        z = pyro.sample("z_unlabelled", self.prior())
                        hot = self.one_hot(guess)
                        likelihood = self.decode(z, hot, _some(~known))
                        pyro.sample("x_unlabelled", likelihood, obs=x)
            if self._training() and self.class_weight > 0 and bool(known.any()):
                with _rows(known):
                    right = self.label_posterior(x).log_prob(label)
                    pyro.factor("classification", self.class_weight * right)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        """``z ~ q(z | x, y)`` for labelled rows; ``y ~ q(y | x)`` (enumerated) and then
        ``z ~ q(z | x, y)`` for the others, in ``pyro.plate("data")``."""
        x = self.check(x)
        label, known = self.labels(y, x.shape[0], unknown=True)
        if not self._has_bound():
            return
        with pyro.plate("data", x.shape[0]), self._bound():
            with _rows(known):
                pyro.sample("z", self.posterior(x, self.one_hot(label), _some(known)))
            with _rows(~known):
                guess = pyro.sample(
                    "y_unlabelled", self.label_posterior(x), infer={"enumerate": "parallel"}
                )
                posterior = self.posterior(x, self.one_hot(guess), _some(~known))
                pyro.sample("z_unlabelled", posterior)

    def _labels_to_draw(self, n: int) -> Tensor:
        return self.label_prior().sample((n,))
