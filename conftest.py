"""Fixtures for every test and doctest of the repository (tests/, docs/, ppdgm/, models/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_default_dtype() -> Iterator[None]:
    """Puts torch's default dtype back after each test, so that a doctest page that switches to
    float64 and fails before switching back cannot change the tests after it."""
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)
