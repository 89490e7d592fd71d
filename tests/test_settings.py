"""A zoo model's settings are one ``Config`` dataclass: its fields are the constructor's
arguments, its flags are ``ppdgm fit MODEL``'s, and checkpoints record and check it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from ppdgm.checkpoint import load_model, read_checkpoint, same_model, save_checkpoint
from ppdgm.cli import main
from ppdgm.models import MADE, MODELS, NADE
from ppdgm.settings import flags, from_flags, plain, sizes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_config_is_the_constructor(name: str) -> None:
    cls = MODELS[name]
    parameters = {
        p.name: p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    assert list(fields) == list(parameters)
    for field_name, field in fields.items():
        default = parameters[field_name].default
        if default is not inspect.Parameter.empty:  # the constructor's default is the config's
            assert plain(cls.Config(**{field_name: field.default})) == plain(
                cls.Config(**{field_name: default})
            ), field_name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_default_flags_build_the_default_model(name: str) -> None:
    cls = MODELS[name]
    # a square number of variables: PixelCNN's image is square unless told its size
    data = {f: 9 for f in ("dim", "x_dim") if f in cls.Config.__dataclass_fields__}
    if "levels" in cls.Config.__dataclass_fields__:
        data.update(levels=None, logit_alpha=None)
    config = from_flags(cls.Config, _parse(cls, []), name, **data)
    assert config == cls.Config(**data)
    model = cls.from_config(config)
    # a VAE's flow widths and PixelCNN's image sizes are filled in from the data
    assert model.config == plain(config) or name in ("vae", "gmvae", "pixelcnn")
    assert type(model).from_config(model.config).config == model.config


def _parse(cls: type, argv: list[str]):
    import argparse

    from ppdgm.settings import add_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, cls.Config)
    return parser.parse_args(argv)


def test_flags_parse_each_kind_of_setting() -> None:
    made = MODELS["made"]
    argv = ["--hidden", "7,5", "--num-masks", "3", "--ordering", "random", "--direct"]
    config = from_flags(made.Config, _parse(made, [*argv, "--mask-seed", "0"]), "made", dim=4)
    assert config == made.Config(4, (7, 5), 3, "random", 0, True)
    hvae = MODELS["hvae"]
    config = from_flags(
        hvae.Config, _parse(hvae, ["--z-dim", "4,2", "--hidden", "8,8:6"]), "hvae", x_dim=5
    )
    assert config.z_dims == (4, 2) and config.hidden_dims == ((8, 8), (6,))
    assert flags(NADE.Config) == {"hidden_dim": "--hidden"}
    with pytest.raises(ValueError, match=r"--num-masks takes one positive integer, got '0'"):
        from_flags(made.Config, _parse(made, ["--num-masks", "0"]), "made", dim=4)
    with pytest.raises(ValueError, match="dim comes from the data"):
        from_flags(made.Config, _parse(made, []), "made")
    assert sizes("3, 4") == (3, 4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_help_lists_the_models_own_flags(name: str, capsys) -> None:
    assert main(["fit", name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"{name}'s settings" in out and "--epochs" in out
    for flag in flags(MODELS[name].Config).values():
        assert flag in out


def test_fit_without_a_model_or_with_flags_for_a_file(tmp_path: Path, capsys) -> None:
    assert main(["fit", "--help"]) == 0
    assert "ppdgm fit MODEL --help lists them" in capsys.readouterr().out
    assert main(["fit", "--epochs", "1"]) == 2
    assert "name the MODEL" in capsys.readouterr().err
    program = tmp_path / "mine.py"
    program.write_text("import torch\nclass M(torch.nn.Module):\n    pass\n")
    assert main(["fit", f"{program}:M", "--hidden", "3"]) == 2
    assert "takes its arguments as --kwargs JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # other commands: argparse's own error
        main(["evaluate", "x.pt", "--hidden", "3"])
    assert "unrecognized arguments: --hidden 3" in capsys.readouterr().err


def test_rnade_trains_from_the_command_line(tmp_path: Path, capsys) -> None:
    rows = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    out = tmp_path / "run"
    argv = ["fit", "rnade", "--data", str(tmp_path / "rows.npy"), "--hidden", "4"]
    argv += ["--components", "2", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    spec = read_checkpoint(out / "last.pt")["model"]
    assert spec["config"] == {"dim": 3, "hidden_dim": 4, "components": 2}


def test_checkpoints_check_the_saved_settings(tmp_path: Path) -> None:
    model = MADE(5, [4])
    path = save_checkpoint(tmp_path / "m.pt", model)
    assert load_model(path)[0].config == model.config
    payload = torch.load(path, weights_only=True)
    payload["model"]["config"]["width"] = 3
    torch.save(payload, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"name 'width', which made does not have"):
        load_model(tmp_path / "foreign.pt")
    # a checkpoint of an earlier version, without a setting added since, is the same model
    earlier = {"name": "made", "config": {k: v for k, v in model.config.items() if k != "direct"}}
    assert same_model(earlier, {"name": "made", "config": model.config})
    assert not same_model(earlier, {"name": "made", "config": {**model.config, "direct": True}})
