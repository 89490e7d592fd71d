"""The installed package: one top-level package, the model zoo as ``ppdgm.models``."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def test_only_ppdgm_is_a_top_level_package():
    top_level = importlib.metadata.distribution("ppdgm").read_text("top_level.txt")
    assert top_level is not None
    assert top_level.split() == ["ppdgm"]


def test_models_is_installed_as_a_subpackage_only(tmp_path):
    # run outside the checkout, so that the current directory cannot provide `models`
    code = (
        "import importlib.util, ppdgm.models; "
        "print(importlib.util.find_spec('models') is None, ppdgm.models.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "ppdgm.models"]


def test_requirements_pin_nothing_that_downloads_example_networks():
    requires = importlib.metadata.requires("ppdgm") or []
    pgmpy = [r for r in requires if r.startswith("pgmpy")]
    # pgmpy 1.1+ fetches the example networks from a hub; 1.0 ships them
    assert pgmpy and "<1.1" in pgmpy[0]
