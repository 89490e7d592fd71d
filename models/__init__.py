"""The ppdgm model zoo: generative stories as code, imported as ``ppdgm.models``."""

from __future__ import annotations

from collections.abc import Mapping

from ppdgm.base import registered_models
from ppdgm.models.flows import IAF, MAF, NICE, RealNVP
from ppdgm.models.fvsbn import FVSBN
from ppdgm.models.labelled import CVAE, SSVAE
from ppdgm.models.made import MADE
from ppdgm.models.nade import NADE
from ppdgm.models.pixelcnn import PixelCNN
from ppdgm.models.rnade import RNADE
from ppdgm.models.vae import GMVAE, VAE, HierarchicalVAE

__all__ = [
    "CVAE",
    "FVSBN",
    "GMVAE",
    "IAF",
    "MADE",
    "MAF",
    "MODELS",
    "NADE",
    "NICE",
    "RNADE",
    "SSVAE",
    "VAE",
    "HierarchicalVAE",
    "PixelCNN",
    "RealNVP",
    "model_class",
]

#: The zoo's models by their lower-case names, as the command line and checkpoints name them:
#: the registry the classes fill with ``@register_model`` (read-only).
MODELS: Mapping[str, type] = registered_models()


def model_class(name: str) -> type:
    """The model class called ``name`` (case-insensitive: ``made``, ``MADE``).

    Raises:
        ValueError: for a name that is not in the zoo (the message lists the names).

    Example:
        >>> model_class("nade")
        <class 'ppdgm.models.nade.NADE'>
    """
    cls = MODELS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return cls
