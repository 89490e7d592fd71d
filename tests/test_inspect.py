"""Dependency graphs of Pyro programs and their drawings."""

from __future__ import annotations

import functools
import runpy
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.inspect import get_dependencies

from ppdgm.bn import DiscreteBN, asia, example
from ppdgm.cli import main
from ppdgm.independence import d_separated
from ppdgm.inspect import GraphvizNotFound, dependency_graph, render

NETWORKS = ["asia", "sachs", "child", "alarm"]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")


@functools.cache
def network(name: str) -> DiscreteBN:
    return example(name)


def latent_parents_per_pyro(model, *args) -> set[tuple[str, str]]:
    """The edges from latent sites, as Pyro's own get_dependencies reports them."""
    prior = get_dependencies(model, args)["prior_dependencies"]
    return {(u, v) for v, ups in prior.items() for u in ups if u != v}


def latent_edges(g: nx.DiGraph) -> set[tuple[str, str]]:
    return {(u, v) for u, v in g.edges if not g.nodes[u]["observed"]}


# ------------------------------------------------------------------------------ programs
def plated(x: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        with pyro.plate("features", 2, dim=-2):
            w = pyro.sample("w", dist.Normal(mu + z, scale))
        pyro.sample("x", dist.Normal(w.sum(0), 1.0), obs=x)


def with_deterministic() -> None:
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    total = pyro.deterministic("total", a + b)
    c = pyro.sample("c", dist.Normal(total, 1.0))
    pyro.sample("delta", dist.Delta(c))
    pyro.sample("d", dist.Normal(c, 1.0), obs=torch.tensor(0.5))


def observed_parents() -> None:
    x = pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(1.0))
    y = pyro.sample("y", dist.Normal(2 * x, 1.0), obs=torch.tensor(0.0))
    w = pyro.param("w", torch.tensor(0.3))
    pyro.sample("z", dist.Normal(w * y, 1.0))
    pyro.sample("k", dist.Categorical(logits=torch.zeros(3)))


def raising() -> None:
    pyro.sample("a", dist.Normal(0.0, 1.0))
    raise RuntimeError("no data loaded")


def test_plates_observed_and_discrete_sites() -> None:
    g = dependency_graph(plated, torch.zeros(3))
    assert set(g.edges) == {("mu", "w"), ("scale", "w"), ("z", "w"), ("w", "x")}
    assert list(g) == ["mu", "scale", "z", "w", "x"]
    assert g.nodes["w"]["plates"] == ("data", "features")
    assert g.nodes["x"] == {
        "observed": True,
        "distribution": "Normal",
        "plates": ("data",),
        "discrete": False,
        "shape": (3,),
        "event_shape": (),
    }
    assert g.nodes["z"]["discrete"] and g.nodes["z"]["distribution"] == "Bernoulli"
    assert not g.nodes["mu"]["observed"] and g.nodes["mu"]["plates"] == ()
    assert g.graph["plates"] == {"data": 3, "features": 2}
    assert nx.is_frozen(g)
    assert latent_edges(g) == latent_parents_per_pyro(plated, torch.zeros(3))
    assert d_separated(g, "mu", "z") and not d_separated(g, "mu", "z", "x")


def test_deterministic_and_delta_sites_are_elided() -> None:
    g = dependency_graph(with_deterministic)
    assert set(g.edges) == {("a", "c"), ("b", "c"), ("c", "d")}
    assert g.graph["elided"] == ["total", "delta"]
    assert latent_edges(g) == latent_parents_per_pyro(with_deterministic)


def test_observed_sites_are_parents_and_params_are_not() -> None:
    g = dependency_graph(observed_parents)
    assert set(g.edges) == {("x", "y"), ("y", "z")}
    assert set(g) == {"x", "y", "z", "k"}
    # Pyro's prior dependencies drop observed parents: the reason for building our own edges
    assert latent_parents_per_pyro(observed_parents) == set()
    assert g.nodes["k"]["distribution"] == "Categorical" and g.nodes["k"]["discrete"]


def test_subsampled_plates_and_masked_observations() -> None:
    def model(x: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=2) as idx:
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x[idx])
        with pyro.poutine.mask(mask=False):
            pyro.sample("hidden", dist.Normal(loc, 1.0), obs=torch.tensor(0.0))

    g = dependency_graph(model, torch.zeros(5))
    assert set(g.edges) == {("loc", "x")} and g.graph["plates"] == {"data": 5}
    assert g.graph["elided"] == ["hidden"]


@pytest.mark.parametrize("name", NETWORKS)
def test_network_programs_have_the_network_edges(name: str) -> None:
    bn = network(name)
    expected = set(bn.dag.edges)
    prior = dependency_graph(bn.model)
    assert set(prior.edges) == expected and set(prior) == set(bn.variables)
    assert latent_edges(prior) == latent_parents_per_pyro(bn.model)
    full = bn.sample(20, seed=0)
    observed = dependency_graph(bn.model, full)
    assert set(observed.edges) == expected
    assert all(observed.nodes[v]["observed"] for v in bn.variables)
    partial = full.astype(object)
    first, last = bn.variables[0], bn.variables[-1]
    partial.loc[::3, first] = None  # some cells of one column missing
    partial = partial.drop(columns=[last])  # one column missing everywhere
    g = dependency_graph(bn.model, partial)
    assert set(g.edges) == expected
    assert not g.nodes[first]["observed"] and not g.nodes[last]["observed"]
    assert all(g.nodes[v]["discrete"] for v in bn.variables)
    assert g.graph["plates"] == {"data": 20}


def test_a_program_that_raises_names_the_culprit() -> None:
    with pytest.raises(ValueError, match="'raising' failed after site 'a': RuntimeError: no data"):
        dependency_graph(raising)
    with pytest.raises(ValueError, match="before its first site: TypeError"):
        dependency_graph(plated)  # missing argument
    with pytest.raises(TypeError, match="callable"):
        dependency_graph("model")


# ------------------------------------------------------------------------------ drawings
def test_drawing_of_a_program() -> None:
    source = render(dependency_graph(plated, torch.zeros(3)), highlight=["mu"]).source
    assert 'label="data [3]"' in source and 'label="features [2]"' in source
    # the features cluster sits inside the data cluster
    assert source.index("data [3]") < source.index("features [2]")
    assert source.count("subgraph cluster") == 2
    assert '[label="x\\nNormal" fillcolor="#e0e0e0" style=filled]' in source
    assert '[label="mu\\nNormal" color="#d94801" fillcolor="#fdd0a2"' in source
    assert 'label="z\\nBernoulli"]' in source


def test_drawing_of_a_network_with_a_query() -> None:
    trail = ["smoke", "lung", "either", "dysp"]
    drawing = render(
        asia(), highlight={"x": "smoke", "y": "dysp", "given": ["bronc"], "trail": trail}
    )
    source = drawing.source
    assert "either\\nCPT 2×2×2" in source and "asia\\nCPT 2" in source
    assert "cluster" not in source
    bold_edges = [line for line in source.splitlines() if "->" in line and "penwidth" in line]
    assert len(bold_edges) == 3  # exactly the trail's edges
    assert 'fillcolor="#9ecae1"' in source and 'fillcolor="#fc9272"' in source
    assert "trail: smoke -> lung -> either -> dysp" in source


@needs_dot
@pytest.mark.parametrize(
    ("suffix", "magic"), [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")]
)
def test_files_by_extension(tmp_path, suffix: str, magic: bytes) -> None:
    path = render(asia(), tmp_path / "deep" / f"asia.{suffix}", highlight=["tub"])
    assert path == tmp_path / "deep" / f"asia.{suffix}"
    assert path.read_bytes().startswith(magic)
    if suffix == "svg":
        titles = {t.text for t in ET.parse(path).iter("{http://www.w3.org/2000/svg}title")}
        assert {f"n{i}" for i in range(8)} <= titles and "n0&#45;>n2" not in titles


def test_dot_source_and_missing_dot(tmp_path, monkeypatch) -> None:
    path = render(asia(), tmp_path / "asia.gv")
    assert path.read_text().startswith("digraph asia {")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.warns(GraphvizNotFound, match="Install graphviz \\(apt-get install graphviz"):
        written = render(asia(), tmp_path / "asia.svg")
    assert written == tmp_path / "asia.dot" and not (tmp_path / "asia.svg").exists()
    assert "digraph" in written.read_text()


def test_drawing_bad_input() -> None:
    with pytest.raises(ValueError, match=r"'asia\.jpg'"):
        render(asia(), "asia.jpg")
    with pytest.raises(ValueError, match="unknown highlight role"):
        render(asia(), highlight={"colour": ["tub"]})
    with pytest.raises(ValueError, match=r"\['tubb'\] in highlight\['x'\]"):
        render(asia(), highlight={"x": ["tubb"]})
    with pytest.raises(ValueError, match="cycle"):
        render(nx.DiGraph([("a", "b"), ("b", "a")]))


def test_render_a_program_directly() -> None:
    source = render(with_deterministic).source
    assert source.count("->") == 3 and "total" not in source


@needs_dot
def test_cli_render(tmp_path, capsys) -> None:
    out = tmp_path / "asia.svg"
    assert (
        main(["render", "asia", "-o", str(out), "--x", "tub", "--y", "lung", "--given", "dysp"])
        == 0
    )
    assert f"wrote {out}" in capsys.readouterr().out
    svg = out.read_text()
    assert svg.count('stroke="#d94801"') >= 2  # the trail tub -> either <- lung
    out2 = tmp_path / "blanket.svg"
    assert main(["render", "alarm", "-o", str(out2), "--blanket", "HR"]) == 0
    assert out2.read_text().count('fill="#a1d99b"') == 8  # HR's eight blanket members
    assert main(["render", "asia", "-o", str(tmp_path / "x.bmp")]) == 2
    assert "'x.bmp'" in capsys.readouterr().err


def test_tracing_leaves_the_random_state_alone() -> None:
    torch.manual_seed(3)
    before = torch.get_rng_state()
    dependency_graph(plated, torch.zeros(3))
    assert torch.equal(before, torch.get_rng_state())


@needs_dot
def test_documentation_pictures_are_made_by_the_script(tmp_path) -> None:
    docs = Path(__file__).parent.parent / "docs"
    script = runpy.run_path(str(docs / "make_images.py"))
    written = script["make_images"](tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in (docs / "img").glob("*.svg"))
    page = (docs / "independence.md").read_text()
    for path in written:
        assert f"](img/{path.name})" in page  # every picture is shown on the page
        fresh, shipped = ET.parse(path), ET.parse(docs / "img" / path.name)
        labels = {t.text for t in fresh.iter("{http://www.w3.org/2000/svg}text")}
        assert labels == {t.text for t in shipped.iter("{http://www.w3.org/2000/svg}text")}
