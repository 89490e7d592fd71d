"""ppdgm: probabilistic programming for deep generative models on Pyro and PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
