r"""Variational autoencoders as Pyro programs: a decoder ``p(x | z)``, a prior ``p(z)`` and an
amortized guide ``q(z | x)`` (the encoder), with normalizing flows as guide and prior transforms.

The generative story of :class:`VAE` (Kingma & Welling 2014):

.. math::

    z \sim p(z), \qquad x \mid z \sim p_\theta(x \mid z),

with ``p(z) = N(0, I)`` pushed through a flow when ``prior_flow`` is given, and a decoder MLP
giving Bernoulli logits or a Gaussian's location. The guide is
``q(z | x) = N(mu(x), diag sigma(x)^2)``, pushed through a flow conditioned on a context the
encoder computes when ``guide_flow`` is given (IAF, RealNVP, planar, radial). ``model(x)`` and
``guide(x)`` are the Pyro programs (one ``pyro.plate("data")``), and all there is to them: SVI
(:mod:`ppdgm.svi`, or ``pyro.infer.SVI``) trains them, :class:`~ppdgm.estimate.LogLikelihood`
scores them and :func:`~ppdgm.inspect.dependency_graph` reads their structure, as for any
program of your own.

:class:`GMVAE` puts a mixture of Gaussians as the prior; :class:`HierarchicalVAE` has two
stochastic layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import kl_divergence

from ppdgm import transforms
from ppdgm._checks import check_int
from ppdgm.base import Model, check_data, observed_cells, register_model, seeded
from ppdgm.nn import ACTIVATIONS, GaussianEncoder, mlp
from ppdgm.settings import from_data, python_only, setting, size_lists, sizes

__all__ = ["GMVAE", "GUIDE_FLOWS", "LIKELIHOODS", "PRIOR_FLOWS", "VAE", "HierarchicalVAE"]

#: Observation models: Bernoulli logits for binary data, a Gaussian with a learned scale per
#: dimension for real data.
LIKELIHOODS = ("bernoulli", "gaussian")
#: Guide flows by name: the flow factories that take a context
#: (:data:`ppdgm.transforms.CONDITIONAL`).
GUIDE_FLOWS = transforms.CONDITIONAL
#: Prior flows by name: flows whose density direction is one pass, as scoring guide samples needs.
PRIOR_FLOWS = {"maf": transforms.maf, "real_nvp": transforms.real_nvp}
#: a flow's name in the settings when it is a module of the user's own (not rebuildable)
CUSTOM = "custom"


# the settings the VAEs share (their Config fields)
def _z_dim() -> Any:
    return setting(10, "latent size", metavar="Z")


def _widths() -> Any:
    return setting((300, 300), "the encoder's widths (the decoder mirrors them)", flag="--hidden")


def _likelihood() -> Any:
    return setting("bernoulli", f"the observation model: {' or '.join(LIKELIHOODS)}")


def _activation(default: str) -> Any:
    return setting(default, "the networks' activation: elu, relu, tanh or softplus")


def _guide_flow() -> Any:
    return setting(None, f"a flow on the guide: {', '.join(GUIDE_FLOWS)}")


def _flow_layers() -> Any:
    return setting(2, "layers of each flow")


def _flow_hidden() -> Any:
    return setting(
        None,
        "widths of each flow layer's networks (none: max(32, 4 z))",
        flag="--flow-hidden",
        parse=sizes,
    )


def _normal(loc: Tensor, scale: Tensor) -> dist.Distribution:
    return _independent(dist.Normal(loc, scale, validate_args=False))


def _independent(base: dist.Distribution) -> dist.Distribution:
    # the data were checked once; validating again at every step costs a pass over them
    return dist.Independent(base, 1, validate_args=False)


class _LatentVariableModel(Model):
    """What the VAEs share: data checks, the observation model, sampling and the estimators."""

    family = "vae"

    x_dim: int
    likelihood_name: str

    def _init_networks(
        self, x_dim: int, z_dim: int, hidden_dims: Sequence[int], likelihood: str, activation: str
    ) -> list[int]:
        """Checks and keeps the settings every VAE has; returns the hidden widths."""
        self.z_dim = check_int("z_dim", z_dim)
        hidden = [check_int("hidden_dims", h) for h in hidden_dims]
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}"
            )
        self._init_likelihood(x_dim, likelihood)
        return hidden

    def _init_likelihood(self, x_dim: int, likelihood: str) -> None:
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        self.x_dim, self.likelihood_name = check_int("x_dim", x_dim), likelihood
        if likelihood == "gaussian":
            self.x_log_scale = nn.Parameter(torch.zeros(x_dim))

    def summary(self) -> str:
        """A few lines: the networks, the guide, the prior and the number of parameters."""
        return "\n".join([*self._describe(), f"  {self.num_parameters:,} parameters"])

    def _describe(self) -> list[str]:
        raise NotImplementedError

    def check(self, x: Any) -> Tensor:
        """``x`` as ``[N, x_dim]`` data in the parameters' dtype.

        Raises:
            ValueError: naming the fault: a wrong shape, NaN or inf, or (Bernoulli likelihood) a
                value other than 0 and 1, outside the likelihood's support.
        """
        return check_data(
            x,
            self.x_dim,
            binary=self.likelihood_name == "bernoulli",
            name=f"{type(self).__name__} with a {self.likelihood_name} likelihood",
            dtype=self.dtype,
        )

    def likelihood(self, z: Tensor) -> dist.Distribution:
        """``p(x | z)`` for latents ``[..., z_dim]`` (of the decoder's input), event ``[x_dim]``."""
        return self.observation(self.decoder(z))

    def observation(self, out: Tensor) -> dist.Distribution:
        """``p(x | ...)`` for the decoder's output ``[..., x_dim]``: Bernoulli logits or a
        Gaussian's location."""
        if self.likelihood_name == "bernoulli":
            return _independent(dist.Bernoulli(logits=out, validate_args=False))
        return _normal(out, self.x_log_scale.exp().expand_as(out))

    def _mean(self, z: Tensor) -> Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood_name == "bernoulli" else out

    def sample(self, n: int, seed: int | None = None, mean: bool = False) -> Tensor:
        """``n`` draws ``[n, x_dim]`` from the model (``mean``: the decoder's means instead of draws
        of ``x``, e.g. pixel probabilities for pictures; ``seed``: a private seed)."""
        check_int("n", n, least=0)
        with torch.no_grad(), seeded(seed):
            z = self._sample_latent(n)
            return self._mean(z) if mean else self.likelihood(z).sample()

    def _sample_latent(self, n: int) -> Tensor:
        raise NotImplementedError


@register_model("vae")
class VAE(_LatentVariableModel):
    r"""A variational autoencoder with an amortized guide, optionally with flows.

    Arguments:
        x_dim: the data dimension.
        z_dim: the latent dimension.
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them
            (``784-300-300`` encoder, ``300-300-784`` decoder). Empty: linear maps.
        likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"`` (real data; a learned
            scale per dimension).
        guide_flow: None (mean-field Gaussian guide) or one of :data:`GUIDE_FLOWS`: the guide's
            Gaussian pushed through that flow conditioned on a context from the encoder; or a
            :class:`~ppdgm.transforms.ConditionalFlow` of your own (not checkpointable by name).
        prior_flow: None (``N(0, I)``) or one of :data:`PRIOR_FLOWS`: a learned prior, the
            standard Normal pushed through that flow; or a transform module of your own on
            ``[z_dim]``.
        activation: the MLPs' activation (see :data:`ppdgm.nn.ACTIVATIONS`).
        flow_layers: layers of each named flow.
        flow_hidden_dims: widths of each flow layer's networks (default: one layer of
            ``max(32, 4 * z_dim)`` units).
        context_dim: the size of the encoder's context for the guide flow (default:
            ``max(16, 2 * z_dim)``).

    Example:
        >>> from ppdgm.infer.estimate import LogLikelihood
        >>> vae = VAE(6, 2, [16], guide_flow="iaf")
        >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
        >>> bounds = LogLikelihood(vae.model, vae.guide, num_samples=3)(x)  # IWAE, K = 3
        >>> bounds.log_prob.shape, vae.sample(4, seed=0).shape
        (torch.Size([5]), torch.Size([4, 6]))
    """

    @dataclass(frozen=True)
    class Config:
        """The VAE's settings (see the class)."""

        x_dim: int = from_data()
        z_dim: int = _z_dim()
        hidden_dims: tuple[int, ...] = _widths()
        likelihood: str = _likelihood()
        guide_flow: str | None = _guide_flow()
        prior_flow: str | None = setting(None, f"a flow on the prior: {', '.join(PRIOR_FLOWS)}")
        activation: str = _activation("elu")
        flow_layers: int = _flow_layers()
        flow_hidden_dims: tuple[int, ...] | None = _flow_hidden()
        context_dim: int | None = python_only()

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 10,
        hidden_dims: Sequence[int] = (300, 300),
        likelihood: str = "bernoulli",
        guide_flow: str | transforms.ConditionalFlow | None = None,
        prior_flow: str | TransformModule | None = None,
        *,
        activation: str = "elu",
        flow_layers: int = 2,
        flow_hidden_dims: Sequence[int] | None = None,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        hidden = self._init_networks(x_dim, z_dim, hidden_dims, likelihood, activation)
        flow_hidden = list(flow_hidden_dims or [max(32, 4 * z_dim)])

        def named(flow: object) -> object:  # a module of the user's own has no name
            return flow if flow is None or isinstance(flow, str) else CUSTOM

        values = {
            "x_dim": x_dim,
            "z_dim": z_dim,
            "hidden_dims": hidden,
            "likelihood": likelihood,
            "guide_flow": named(guide_flow),
            "prior_flow": named(prior_flow),
            "activation": activation,
            "flow_layers": flow_layers,
            "flow_hidden_dims": flow_hidden,
            "context_dim": context_dim,
        }
        own = {f.name for f in dataclasses.fields(self.Config)}  # a GMVAE has no prior_flow
        self._record(**{k: v for k, v in values.items() if k in own})
        self.guide_flow = self._make_guide_flow(guide_flow, context_dim, flow_hidden, flow_layers)
        context = self.guide_flow.context_dim if self.guide_flow is not None else 0
        self.encoder = GaussianEncoder(x_dim, z_dim, hidden, activation, context_dim=context)
        self.decoder = mlp([z_dim, *reversed(hidden), x_dim], activation)
        self.prior_flow = self._make_prior_flow(prior_flow, flow_hidden, flow_layers)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def _make_guide_flow(
        self,
        guide_flow: str | transforms.ConditionalFlow | None,
        context_dim: int | None,
        hidden: list[int],
        layers: int,
    ) -> transforms.ConditionalFlow | None:
        if guide_flow is None:
            return None
        if isinstance(guide_flow, str):
            if guide_flow not in GUIDE_FLOWS:
                raise ValueError(
                    f"unknown guide_flow {guide_flow!r}; choose one of {', '.join(GUIDE_FLOWS)}"
                )
            context = max(16, 2 * self.z_dim) if context_dim is None else context_dim
            return transforms.FLOWS[guide_flow](
                self.z_dim, hidden_dims=hidden, num_layers=layers, context_dim=context
            )
        if not isinstance(guide_flow, transforms.ConditionalFlow):
            raise ValueError(
                "guide_flow must be a name or a ppdgm.transforms.ConditionalFlow (a guide flow is "
                f"conditioned on the encoder's context), got {type(guide_flow).__name__}"
            )
        if guide_flow.dim != self.z_dim:
            raise ValueError(
                f"the guide flow transforms {guide_flow.dim}-dimensional vectors, "
                f"but z_dim is {self.z_dim}"
            )
        return guide_flow

    def _make_prior_flow(
        self, prior_flow: str | TransformModule | None, hidden: list[int], layers: int
    ) -> TransformModule | None:
        if prior_flow is None:
            return None
        if isinstance(prior_flow, str):
            if prior_flow not in PRIOR_FLOWS:
                raise ValueError(
                    f"unknown prior_flow {prior_flow!r}; choose one of {', '.join(PRIOR_FLOWS)}"
                )
            return PRIOR_FLOWS[prior_flow](self.z_dim, hidden, layers)
        if not isinstance(prior_flow, nn.Module):
            raise ValueError(f"prior_flow must be a name or a transform module, got {prior_flow!r}")
        try:
            with torch.no_grad():
                out = prior_flow(torch.zeros(2, self.z_dim))
        except (RuntimeError, ValueError, IndexError) as e:
            raise ValueError(
                f"the prior flow does not accept z of dimension {self.z_dim}: {e}"
            ) from None
        if tuple(out.shape) != (2, self.z_dim):
            raise ValueError(
                f"the prior flow maps [2, {self.z_dim}] to {list(out.shape)}; it must keep z's "
                f"dimension {self.z_dim}"
            )
        return prior_flow

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments, as checkpoints record them.

        Raises:
            ValueError: for a VAE with a flow module of its own, which a name cannot rebuild.
        """
        if CUSTOM in (self.settings.guide_flow, getattr(self.settings, "prior_flow", None)):
            raise ValueError(
                "a VAE with a flow module of its own cannot be rebuilt from its config; "
                "save its state_dict and rebuild it in code"
            )
        return super().config

    def _describe(self) -> list[str]:
        c = self.settings
        widths = [str(h) for h in c.hidden_dims]
        encoder = "-".join([str(self.x_dim), *widths, str(2 * self.z_dim)])
        decoder = "-".join([str(self.z_dim), *reversed(widths), str(self.x_dim)])
        flow = c.guide_flow
        guide = "diagonal Gaussian (mean-field)" if flow is None else f"Gaussian + {flow} flow"
        return [
            f"{type(self).__name__}: x {self.x_dim}, z {self.z_dim}; encoder {encoder}, "
            f"decoder {decoder} ({c.activation}); {self.likelihood_name} likelihood",
            f"  guide: {guide}; prior: {self._prior_name()}",
        ]

    def _prior_name(self) -> str:
        flow = self.settings.prior_flow
        return "N(0, I)" if flow is None else f"N(0, I) + {flow} flow"

    # -- the distributions -------------------------------------------------------------------

    def prior(self) -> dist.Distribution:
        """``p(z)``, event ``[z_dim]``."""
        base = _normal(self.prior_loc, self.prior_scale)
        if self.prior_flow is None:
            return base
        return dist.TransformedDistribution(base, [self.prior_flow])

    def posterior(self, x: Tensor) -> dist.Distribution:
        """The guide ``q(z | x)`` for checked data ``[N, x_dim]``, event ``[z_dim]``."""
        loc, scale, context = self.encoder(x)
        base = _normal(loc, scale)
        if self.guide_flow is None:
            return base
        return dist.TransformedDistribution(base, [self.guide_flow.condition(context)])

    # -- the Pyro programs -------------------------------------------------------------------

    def model(self, x: Tensor) -> None:
        """The generative story: ``z ~ p(z)``, ``x ~ p(x | z)`` in ``pyro.plate("data")``."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor) -> None:
        """The amortized guide: ``z ~ q(z | x)`` in ``pyro.plate("data")``."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def _gaussian_pair(self) -> bool:
        return self.guide_flow is None and self.prior_flow is None

    def analytic_kl(self, x: Tensor) -> Tensor | None:
        """``KL(q(z | x) || p(z))`` per row in closed form, ``[N]``, when both are Gaussian
        (no flows); None otherwise."""
        if not self._gaussian_pair():
            return None
        return kl_divergence(self.posterior(self.check(x)), self.prior())

    def encode(self, x: Tensor) -> Tensor:
        """A point summary of ``q(z | x)`` per row, ``[N, z_dim]``: the guide's Gaussian mean,
        pushed through the guide flow at the row's context."""
        with torch.no_grad():
            loc, _, context = self.encoder(self.check(x))
            return loc if self.guide_flow is None else self.guide_flow.condition(context)(loc)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder's mean at :meth:`encode`'s point, ``[N, x_dim]``."""
        with torch.no_grad():
            return self._mean(self.encode(x))

    def inpaint(
        self,
        x: Tensor,
        observed: Tensor | None = None,
        *,
        steps: int = 200,
        seed: int | None = None,
    ) -> Tensor:
        r"""Fills in the unobserved cells of each row by Metropolis-within-Gibbs (Mattei and
        Frellsen, 2018), a Markov chain whose stationary distribution is the model's
        :math:`p(z, x_m \mid x_o)`; observed values never change.

        Each step proposes :math:`z' \sim q(z \mid \hat x)` from the guide at the current
        completion :math:`\hat x`, accepts it with probability

        .. math::

            \min\Big(1, rac{p(z')\, p(x_o \mid z')\, q(z \mid \hat x)}
                            {p(z)\, p(x_o \mid z)\, q(z' \mid \hat x)}\Big),

        then draws the missing cells :math:`x_m \sim p(x_m \mid z)`. Unlike pseudo-Gibbs (which
        accepts every proposal and so samples the guide's errors too), the chain converges to
        the model's conditional whatever the guide, faster the closer the guide is to the
        posterior. The chains start from a draw of the prior predictive.

        Arguments:
            x: ``[N, x_dim]`` rows; unobserved cells may hold anything, NaN included.
            observed: ``[N, x_dim]`` or ``[x_dim]`` booleans, True where the value is given;
                None: the cells of ``x`` that are not NaN.
            steps: Markov chain steps per row (the last state is returned).
            seed: a private seed for the draws (None: torch's random stream as it is).

        Returns:
            ``[N, x_dim]``: ``x`` with its unobserved cells filled in.

        Example:
            >>> vae = VAE(4, 1, [8])
            >>> x = torch.tensor([[1.0, 0.0, float("nan"), float("nan")]])
            >>> filled = vae.inpaint(x, steps=20, seed=0)
            >>> filled[:, :2].tolist(), bool(((filled == 0) | (filled == 1)).all())
            ([[1.0, 0.0]], True)

        References:
            Mattei, P.-A. and Frellsen, J. (2018). Leveraging the exact likelihood of deep
            latent variable models. NeurIPS.
        """
        check_int("steps", steps)
        x, observed = observed_cells(x, observed, self.x_dim, self.check)
        prior = self.prior()

        def log_target(z: Tensor) -> Tensor:  # log p(z) + log p(x_o | z)
            cells = self.likelihood(z).base_dist.log_prob(x)
            return prior.log_prob(z) + torch.where(observed, cells, 0.0).sum(-1)

        with torch.no_grad(), seeded(seed):
            z = prior.sample((x.shape[0],))
            filled = torch.where(observed, x, self.likelihood(z).sample())
            current = log_target(z)
            for _ in range(steps):
                q = self.posterior(filled)
                proposal = q.sample()
                new = log_target(proposal)
                log_alpha = new - current + q.log_prob(z) - q.log_prob(proposal)
                accept = torch.rand_like(log_alpha).log() < log_alpha
                z = torch.where(accept[:, None], proposal, z)
                current = torch.where(accept, new, current)
                filled = torch.where(observed, x, self.likelihood(z).sample())
        return filled

    def _sample_latent(self, n: int) -> Tensor:
        return self.prior().sample((n,))


@register_model("gmvae")
class GMVAE(VAE):
    r"""A VAE whose prior is a uniform mixture of ``components`` diagonal Gaussians with learned
    means and scales (the CS236 GMVAE); ``log p(z)`` sums the mixture out exactly.

    Arguments:
        x_dim, z_dim, hidden_dims, likelihood, guide_flow: as for :class:`VAE`.
        components: the number of mixture components.
        activation, flow_layers, flow_hidden_dims, context_dim: as for :class:`VAE`.

    Example:
        >>> gmvae = GMVAE(6, 2, [16], components=3)
        >>> gmvae.prior().log_prob(torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    @dataclass(frozen=True)
    class Config:
        """The GMVAE's settings (see the class)."""

        x_dim: int = from_data()
        z_dim: int = _z_dim()
        hidden_dims: tuple[int, ...] = _widths()
        likelihood: str = _likelihood()
        guide_flow: str | None = _guide_flow()
        components: int = setting(10, "Gaussians of the prior's mixture", metavar="K")
        activation: str = _activation("elu")
        flow_layers: int = _flow_layers()
        flow_hidden_dims: tuple[int, ...] | None = _flow_hidden()
        context_dim: int | None = python_only()

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 10,
        hidden_dims: Sequence[int] = (300, 300),
        likelihood: str = "bernoulli",
        guide_flow: str | transforms.ConditionalFlow | None = None,
        components: int = 10,
        *,
        activation: str = "elu",
        flow_layers: int = 2,
        flow_hidden_dims: Sequence[int] | None = None,
        context_dim: int | None = None,
        **rejected: Any,
    ) -> None:
        if "prior_flow" in rejected:
            raise ValueError("GMVAE's prior is a mixture of Gaussians; it takes no prior_flow")
        if rejected:
            raise TypeError(f"GMVAE got unexpected arguments {sorted(rejected)}")
        k = check_int("components", components)
        super().__init__(
            x_dim,
            z_dim,
            hidden_dims,
            likelihood,
            guide_flow,
            activation=activation,
            flow_layers=flow_layers,
            flow_hidden_dims=flow_hidden_dims,
            context_dim=context_dim,
        )
        self._record(components=k)
        self.component_loc = nn.Parameter(torch.randn(k, z_dim) / math.sqrt(k * z_dim))
        self.component_raw_scale = nn.Parameter(torch.full((k, z_dim), math.log(math.e - 1)))

    def _gaussian_pair(self) -> bool:
        return False

    def _prior_name(self) -> str:
        return f"uniform mixture of {self.settings.components} Gaussians"

    def prior(self) -> dist.Distribution:
        """The mixture ``p(z) = (1/K) sum_k N(z; mu_k, diag sigma_k^2)``, event ``[z_dim]``."""
        k = self.component_loc.shape[0]
        weights = dist.Categorical(logits=self.component_loc.new_zeros(k), validate_args=False)
        scale = nn.functional.softplus(self.component_raw_scale) + 1e-6
        return dist.MixtureSameFamily(weights, _normal(self.component_loc, scale))


@register_model("hvae")
class HierarchicalVAE(_LatentVariableModel):
    r"""A VAE with two stochastic layers (as in the IAF and IWAE papers' two-layer models):

    .. math::

        z_2 \sim N(0, I), \quad z_1 \mid z_2 \sim N(\mu(z_2), \sigma(z_2)^2), \quad
        x \mid z_1 \sim p(x \mid z_1),

    with the bottom-up guide ``q(z_1 | x) q(z_2 | z_1)``.

    Arguments:
        x_dim: the data dimension.
        z_dims: ``(z1_dim, z2_dim)``.
        hidden_dims: ``(widths between x and z1, widths between z1 and z2)``; each decoder
            mirrors its encoder.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        activation: the MLPs' activation.

    Example:
        >>> from ppdgm.infer.svi import SVIObjective
        >>> hvae = HierarchicalVAE(6, (3, 2), ([16], [8]))
        >>> SVIObjective("iwae", 4)(hvae, torch.ones(5, 6), step=0).shape  # a training loss
        torch.Size([])
    """

    @dataclass(frozen=True)
    class Config:
        """The hierarchical VAE's settings (see the class)."""

        x_dim: int = from_data()
        z_dims: tuple[int, int] = setting(
            (100, 50),
            "the two latent sizes",
            flag="--z-dim",
            parse=lambda t: sizes(t, 2),
            metavar="Z1,Z2",
        )
        hidden_dims: tuple[tuple[int, ...], tuple[int, ...]] = setting(
            ((200, 200), (100, 100)),
            "widths between x and z1, and between z1 and z2",
            flag="--hidden",
            parse=lambda t: size_lists(t, 2),
            metavar="W,..:W,..",
        )
        likelihood: str = _likelihood()
        activation: str = _activation("tanh")

    def __init__(
        self,
        x_dim: int,
        z_dims: Sequence[int] = (100, 50),
        hidden_dims: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        likelihood: str = "bernoulli",
        *,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if len(z_dims) != 2 or len(hidden_dims) != 2:
            raise ValueError(
                f"HierarchicalVAE takes two latent sizes and two lists of widths, got "
                f"z_dims={z_dims!r}, hidden_dims={hidden_dims!r}"
            )
        z1, z2 = (check_int("z_dims", z) for z in z_dims)
        h1, h2 = ([check_int("hidden_dims", h) for h in hs] for hs in hidden_dims)
        self._init_likelihood(x_dim, likelihood)
        self.z_dims = (z1, z2)
        self._record(
            x_dim=x_dim,
            z_dims=(z1, z2),
            hidden_dims=(tuple(h1), tuple(h2)),
            likelihood=likelihood,
            activation=activation,
        )
        self.encoder1 = GaussianEncoder(x_dim, z1, h1, activation)
        self.encoder2 = GaussianEncoder(z1, z2, h2, activation)
        self.decoder2 = GaussianEncoder(z2, z1, list(reversed(h2)), activation)
        self.decoder = mlp([z1, *reversed(h1), x_dim], activation)
        self.register_buffer("prior_loc", torch.zeros(z2))
        self.register_buffer("prior_scale", torch.ones(z2))

    def _describe(self) -> list[str]:
        (z1, z2), (h1, h2) = self.z_dims, self.settings.hidden_dims
        return [
            f"HierarchicalVAE: x {self.x_dim}, z1 {z1}, z2 {z2}; widths x-z1 {h1}, z1-z2 {h2} "
            f"({self.settings.activation}); {self.likelihood_name} likelihood",
            "  model z2 -> z1 -> x, guide q(z1 | x) q(z2 | z1); prior on z2: N(0, I)",
        ]

    def prior(self) -> dist.Distribution:
        """``p(z2) = N(0, I)``."""
        return _normal(self.prior_loc, self.prior_scale)

    def conditional_prior(self, z2: Tensor) -> dist.Distribution:
        """``p(z1 | z2)``."""
        loc, scale, _ = self.decoder2(z2)
        return _normal(loc, scale)

    def posterior1(self, x: Tensor) -> dist.Distribution:
        """``q(z1 | x)``."""
        loc, scale, _ = self.encoder1(x)
        return _normal(loc, scale)

    def posterior2(self, z1: Tensor) -> dist.Distribution:
        """``q(z2 | z1)``."""
        loc, scale, _ = self.encoder2(z1)
        return _normal(loc, scale)

    def model(self, x: Tensor) -> None:
        """``z2 ~ N(0, I)``, ``z1 ~ p(z1 | z2)``, ``x ~ p(x | z1)`` in ``pyro.plate("data")``."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.conditional_prior(z2))
            pyro.sample("x", self.likelihood(z1), obs=x)

    def guide(self, x: Tensor) -> None:
        """``z1 ~ q(z1 | x)``, ``z2 ~ q(z2 | z1)`` in ``pyro.plate("data")``."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", self.posterior1(x))
            pyro.sample("z2", self.posterior2(z1))

    def encode(self, x: Tensor) -> Tensor:
        """The mean of ``q(z1 | x)`` per row, ``[N, z1_dim]``."""
        with torch.no_grad():
            return self.encoder1(self.check(x))[0]

    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder's mean at :meth:`encode`'s point, ``[N, x_dim]``."""
        with torch.no_grad():
            return self._mean(self.encode(x))

    def _sample_latent(self, n: int) -> Tensor:
        return self.conditional_prior(self.prior().sample((n,))).sample()
