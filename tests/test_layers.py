"""The layers run one way (DESIGN.md): no module of ppdgm or the zoo imports a layer above its
own, at the top of a file or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: bottom to top; a module belongs to the longest prefix that names it
LAYERS = [
    ("base", ["ppdgm", "ppdgm._checks", "ppdgm.atomic", "ppdgm.batch", "ppdgm.base", "ppdgm.data",
              "ppdgm.nn", "ppdgm.threads", "ppdgm.counting", "ppdgm.source", "ppdgm.settings"]),
    ("transforms", ["ppdgm.transforms", "ppdgm.preprocess", "ppdgm.autoregressive"]),
    ("inference, graphs, networks", ["ppdgm.infer", "ppdgm.estimate", "ppdgm.svi", "ppdgm.graph",
                                     "ppdgm.independence", "ppdgm.inspect", "ppdgm.bn"]),
    ("zoo", ["ppdgm.models"]),
    ("training", ["ppdgm.training", "ppdgm.train", "ppdgm.checkpoint"]),
    ("demo", ["ppdgm.demo"]),
    ("commands", ["ppdgm.commands", "ppdgm.cli", "ppdgm.__main__"]),
]  # fmt: skip


def layer(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (i, len(prefix))
    return None if best is None else best[0]


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [name for name in found if name.split(".")[0] == "ppdgm"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "models":
        parts[0:1] = ["ppdgm", "models"]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_layer_above_its_own() -> None:
    files = [*(ROOT / "ppdgm").rglob("*.py"), *(ROOT / "models").rglob("*.py")]
    assert len(files) > 50
    upward = []
    for path in files:
        me = module_name(path)
        mine = layer(me)
        assert mine is not None, f"{me} is in no layer: add it to LAYERS"
        for name in imports(path):
            theirs = layer(name)
            if theirs is not None and theirs > mine:
                upward.append(f"{me} ({LAYERS[mine][0]}) imports {name} ({LAYERS[theirs][0]})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    assert layer("ppdgm.models.vae") > layer("ppdgm.infer.svi") > layer("ppdgm.base")
    assert layer("ppdgm.commands.train") > layer("ppdgm.training.loop")
    assert module_name(ROOT / "models" / "vae.py") == "ppdgm.models.vae"
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from ppdgm.cli import main\n")
    assert imports(source) == ["ppdgm.cli", "ppdgm.cli.main"]
