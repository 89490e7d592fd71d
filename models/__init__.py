"""The ppdgm model zoo: generative stories as code, imported as ``ppdgm.models``."""

from __future__ import annotations

__all__: list[str] = []
