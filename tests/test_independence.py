"""d-separation, Markov blankets, separators and I-maps against pgmpy, networkx and brute force."""

from __future__ import annotations

import functools
import gc
import itertools
import random
import weakref

import networkx as nx
import pytest
from pgmpy.base import DAG

from ppdgm.bn import asia, example
from ppdgm.cli import main
from ppdgm.demo.independence import demo_section
from ppdgm.graph.dag import compiled
from ppdgm.independence import (
    Independence,
    active_trail,
    active_trails,
    d_separated,
    format_trail,
    implied_independencies,
    is_imap,
    local_independencies,
    markov_blanket,
    markov_equivalent,
    minimal_d_separator,
)

NETWORKS = ["asia", "sachs", "child", "alarm"]
RANDOM = ["random-12-0.25-0", "random-25-0.12-1", "random-40-0.08-2"]
#: At most this many queries per conditioning-set size and graph (drawn at random beyond).
QUERIES = 1200


def random_dag(n: int, p: float, seed: int) -> nx.DiGraph:
    """A DAG on ``v0 .. v{n-1}``: each forward edge of a random order present with probability p."""
    rng = random.Random(seed)
    order = [f"v{i}" for i in range(n)]
    rng.shuffle(order)
    g = nx.DiGraph()
    g.add_nodes_from(sorted(order))
    g.add_edges_from(
        (u, w) for i, u in enumerate(order) for w in order[i + 1 :] if rng.random() < p
    )
    return g


@functools.cache
def graph(name: str) -> nx.DiGraph:
    if name.startswith("random"):
        _, n, p, seed = name.split("-")
        return nx.freeze(random_dag(int(n), float(p), int(seed)))
    return example(name).dag


def pgmpy_dag(g: nx.DiGraph) -> DAG:
    dag = DAG(list(g.edges))
    dag.add_nodes_from(g.nodes)
    return dag


def queries(g: nx.DiGraph, size: int, seed: int = 0) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (x, y, Z) with |Z| = size, or QUERIES of them drawn uniformly when there are more."""
    nodes = list(g)
    pairs = [(x, y) for x in nodes for y in nodes if x != y]
    total = len(pairs) * len(list(itertools.combinations(range(len(nodes) - 2), size)))
    if total <= QUERIES:
        return [
            (x, y, z)
            for x, y in pairs
            for z in itertools.combinations([v for v in nodes if v not in (x, y)], size)
        ]
    rng = random.Random(seed)
    drawn = []
    for _ in range(QUERIES):
        x, y = rng.choice(pairs)
        drawn.append((x, y, tuple(rng.sample([v for v in nodes if v not in (x, y)], size))))
    return drawn


def is_active(g: nx.DiGraph, trail: list[str], given: set[str]) -> bool:
    """Checks a trail by the definition: colliders in An(given), other inner nodes not given."""
    if len(set(trail)) != len(trail):
        return False
    for u, v in itertools.pairwise(trail):
        if not (g.has_edge(u, v) or g.has_edge(v, u)):
            return False
    for a, b, c in zip(trail, trail[1:], trail[2:], strict=False):
        if g.has_edge(a, b) and g.has_edge(c, b):
            if b not in given and not nx.descendants(g, b) & given:
                return False
        elif b in given:
            return False
    return True


# ------------------------------------------------------------------------------ oracles
@pytest.mark.parametrize("name", NETWORKS + RANDOM)
@pytest.mark.parametrize("size", [0, 1, 2])
def test_d_separation_agrees_with_pgmpy_and_networkx(name: str, size: int) -> None:
    g = graph(name)
    reference = pgmpy_dag(g)
    answers = []
    for x, y, z in queries(g, size):
        ours = d_separated(g, x, y, z)
        assert ours == (not reference.is_dconnected(x, y, list(z))), (x, y, z)
        assert ours == nx.is_d_separator(g, {x}, {y}, set(z)), (x, y, z)
        answers.append(ours)
    assert not all(answers)  # so the check has teeth (some networks are connected marginally)
    assert any(answers) or size == 0


@pytest.mark.parametrize("name", NETWORKS + RANDOM)
def test_sets_and_mutable_graphs_agree_with_networkx(name: str) -> None:
    g = graph(name)
    mutable = nx.DiGraph(g)
    rng = random.Random(1)
    for _ in range(150):
        chosen = rng.sample(list(g), min(len(g), rng.randint(2, 7)))
        cut1, cut2 = sorted(rng.sample(range(1, len(chosen)), 2)) if len(chosen) > 2 else (1, 2)
        xs, ys, z = set(chosen[:cut1]), set(chosen[cut1:cut2]), set(chosen[cut2:])
        if not ys:
            continue
        expected = nx.is_d_separator(g, xs, ys, z)
        assert d_separated(g, xs, ys, z) == expected
        assert d_separated(mutable, list(xs), tuple(ys), frozenset(z)) == expected


@pytest.mark.parametrize("name", NETWORKS + RANDOM)
def test_markov_blanket_agrees_with_pgmpy_and_separates(name: str) -> None:
    g = graph(name)
    reference = pgmpy_dag(g)
    for v in g:
        blanket = markov_blanket(g, v)
        assert blanket == set(reference.get_markov_blanket(v))
        others = set(g) - blanket - {v}
        if others:  # the blanket's defining property, checked by pgmpy
            assert not any(reference.is_dconnected(v, y, list(blanket)) for y in others)
            assert d_separated(g, v, others, blanket)


@pytest.mark.parametrize("name", ["asia", "alarm", *RANDOM])
def test_active_trails_agree_with_pgmpy(name: str) -> None:
    g = graph(name)
    reference = pgmpy_dag(g)
    for x, _, z in queries(g, 2, seed=3)[:300]:
        expected = reference.active_trail_nodes(x, observed=list(z))[x] - {x}
        assert active_trails(g, x, z) == {x: expected}


@pytest.mark.parametrize("name", ["asia", "child", *RANDOM])
def test_active_trail_is_a_shortest_active_trail(name: str) -> None:
    g = graph(name)
    for x, y, z in queries(g, 2, seed=4)[:400]:
        trail = active_trail(g, x, y, z)
        if d_separated(g, x, y, z):
            assert trail is None
            continue
        assert trail[0] == x and trail[-1] == y
        assert is_active(g, trail, set(z))
        shorter = [
            p
            for p in nx.all_simple_paths(g.to_undirected(as_view=True), x, y, len(trail) - 2)
            if is_active(g, p, set(z))
        ]
        assert not shorter


# ------------------------------------------------------------------------------ textbook
@pytest.mark.parametrize(
    ("edges", "given", "expected"),
    [
        ([("a", "b"), ("b", "c")], [], False),  # chain: open
        ([("a", "b"), ("b", "c")], ["b"], True),  # chain: blocked by the middle
        ([("b", "a"), ("b", "c")], [], False),  # fork: open
        ([("b", "a"), ("b", "c")], ["b"], True),  # fork: blocked by the common cause
        ([("a", "b"), ("c", "b")], [], True),  # collider: blocked
        ([("a", "b"), ("c", "b")], ["b"], False),  # collider observed: explaining away
        ([("a", "b"), ("c", "b"), ("b", "d")], ["d"], False),  # a descendant observed
        ([("a", "b"), ("c", "b"), ("b", "d")], [], True),
    ],
)
def test_textbook_cases(edges: list[tuple[str, str]], given: list[str], expected: bool) -> None:
    assert d_separated(nx.DiGraph(edges), "a", "c", given) is expected


@pytest.mark.parametrize(
    ("x", "y", "given", "expected"),
    [
        ("asia", "smoke", [], True),
        ("tub", "lung", [], True),
        ("tub", "lung", ["either"], False),
        ("tub", "lung", ["xray"], False),
        ("tub", "lung", ["dysp"], False),
        ("xray", "dysp", ["either"], True),
        ("xray", "smoke", ["either"], True),
        ("asia", "dysp", ["tub"], True),
        ("smoke", "dysp", ["bronc"], False),
        ("smoke", "dysp", ["bronc", "either"], True),
        ("bronc", "either", [], False),
        ("bronc", "either", ["smoke"], True),
        ("bronc", "either", ["smoke", "dysp"], False),
    ],
)
def test_asia_classic_statements(x: str, y: str, given: list[str], expected: bool) -> None:
    assert d_separated(asia(), x, y, given) is expected
    assert d_separated(asia(), y, x, given) is expected


def test_statement_repr_and_symmetry() -> None:
    s = Independence("xray", ["smoke", "bronc"], "either")
    assert repr(s) == "xray ⊥ bronc, smoke | either"
    assert repr(Independence("a", "b")) == "a ⊥ b"
    assert s == Independence({"bronc", "smoke"}, "xray", {"either"})
    assert s != Independence("xray", ["smoke", "bronc"])
    assert len({s, Independence(["smoke", "bronc"], "xray", "either")}) == 1


def test_format_trail() -> None:
    assert format_trail(asia(), ["smoke", "lung", "either", "tub"]) == (
        "smoke -> lung -> either <- tub"
    )
    with pytest.raises(ValueError, match="'smoke' and 'tub' are not adjacent"):
        format_trail(asia(), ["smoke", "tub"])


# ------------------------------------------------------------------------------ separators
@pytest.mark.parametrize("name", ["asia", "sachs", *RANDOM[:2]])
def test_minimal_d_separator(name: str) -> None:
    g = graph(name)
    reference = pgmpy_dag(g)
    for x, y in itertools.combinations(g, 2):
        found = minimal_d_separator(g, x, y)
        if g.has_edge(x, y) or g.has_edge(y, x):
            assert found is None
            continue
        assert found is not None and not reference.is_dconnected(x, y, list(found))
        for v in found:  # no element can be dropped
            assert reference.is_dconnected(x, y, list(found - {v}))
        if len(found) <= 4:  # nor any subset: brute force
            for k in range(len(found)):
                for subset in itertools.combinations(found, k):
                    assert reference.is_dconnected(x, y, list(subset))


def test_minimal_d_separator_included_and_restricted() -> None:
    bn = asia()
    found = minimal_d_separator(bn, "smoke", "dysp", included=["either"])
    assert "either" in found and d_separated(bn, "smoke", "dysp", found)
    assert minimal_d_separator(bn, "smoke", "dysp", restricted=["lung", "either"]) is None
    restricted = minimal_d_separator(bn, "smoke", "xray", restricted=["either", "tub"])
    assert restricted == {"either"}


# ------------------------------------------------------------------------------ statements
def as_statements(independencies: object) -> set[Independence]:
    return {Independence(a.event1, a.event2, a.event3) for a in independencies.get_assertions()}


@pytest.mark.parametrize("name", ["asia", "sachs", *RANDOM[:2]])
def test_local_independencies_agree_with_pgmpy(name: str) -> None:
    g = graph(name)
    expected = as_statements(pgmpy_dag(g).local_independencies(list(g)))
    assert set(local_independencies(g)) == expected


@pytest.mark.parametrize(("name", "k"), [("asia", 2), ("random-12-0.25-0", 2), ("sachs", 1)])
def test_implied_independencies_by_brute_force(name: str, k: int) -> None:
    g = graph(name)
    reference = pgmpy_dag(g)
    expected = {
        Independence(x, y, z)
        for x, y in itertools.combinations(g, 2)
        for size in range(k + 1)
        for z in itertools.combinations([v for v in g if v not in (x, y)], size)
        if not reference.is_dconnected(x, y, list(z))
    }
    found = implied_independencies(g, max_conditioning=k)
    assert len(found) == len(set(found)) and set(found) == expected
    assert [len(s.given) for s in found] == sorted(len(s.given) for s in found)


def test_implied_independencies_of_a_chain() -> None:
    chain = nx.DiGraph([("x1", "x2"), ("x2", "x3"), ("x3", "x4")])
    assert [repr(s) for s in implied_independencies(chain, max_conditioning=1)] == [
        "x1 ⊥ x3 | x2",
        "x1 ⊥ x4 | x2",
        "x1 ⊥ x4 | x3",
        "x2 ⊥ x4 | x3",
    ]


def all_statements(g: nx.DiGraph) -> set[Independence]:
    """Every pairwise statement pgmpy says the graph implies (pairwise ones determine all)."""
    reference = pgmpy_dag(g)
    return {
        Independence(x, y, z)
        for x, y in itertools.combinations(sorted(g), 2)
        for k in range(len(g) - 1)
        for z in itertools.combinations([v for v in sorted(g) if v not in (x, y)], k)
        if not reference.is_dconnected(x, y, list(z))
    }


def test_is_imap_and_markov_equivalence_by_brute_force() -> None:
    outcomes = {"imap": set(), "equivalent": set()}
    for seed in range(24):
        h = random_dag(6, 0.35, seed)
        g = random_dag(6, 0.35, seed + 100) if seed % 3 else _more_edges(h, seed)
        if seed % 4 == 0:
            g = _reverse_a_covered_edge(h, seed) or g
        ig, ih = all_statements(g), all_statements(h)
        assert is_imap(g, h) is (ig <= ih)
        assert is_imap(h, g) is (ih <= ig)
        assert markov_equivalent(g, h) is (ig == ih)
        assert markov_equivalent(g, h) is pgmpy_dag(g).is_iequivalent(pgmpy_dag(h))
        outcomes["imap"].add(ig <= ih)
        outcomes["equivalent"].add(ig == ih)
    assert outcomes == {"imap": {True, False}, "equivalent": {True, False}}


def _more_edges(h: nx.DiGraph, seed: int) -> nx.DiGraph:
    g = nx.DiGraph(h)
    order = list(nx.topological_sort(h))
    rng = random.Random(seed)
    g.add_edges_from(
        (u, w) for i, u in enumerate(order) for w in order[i + 1 :] if rng.random() < 0.3
    )
    return g


def _reverse_a_covered_edge(h: nx.DiGraph, seed: int) -> nx.DiGraph | None:
    covered = [(u, w) for u, w in h.edges if set(h.predecessors(w)) == set(h.predecessors(u)) | {u}]
    if not covered:
        return None
    u, w = random.Random(seed).choice(covered)
    g = nx.DiGraph(h)
    g.remove_edge(u, w)
    g.add_edge(w, u)
    return g


# ------------------------------------------------------------------------------ caching
def test_mutable_graphs_are_compiled_again_when_their_edges_change() -> None:
    g = nx.DiGraph([("a", "b"), ("c", "b")])
    assert d_separated(g, "a", "c")
    assert compiled(g) is compiled(g)  # unchanged: compiled once
    g.add_edge("a", "c")
    assert not d_separated(g, "a", "c")
    g.remove_edge("a", "c")
    assert d_separated(g, "a", "c") and not d_separated(g, "a", "c", "b")
    g.remove_edge("c", "b")  # as many edges as before, other ones
    g.add_edge("b", "c")
    assert not d_separated(g, "a", "c") and d_separated(g, "a", "c", "b")
    g.add_node("d")
    assert d_separated(g, "a", "d")
    g.add_edge("c", "a")  # a cycle, after the graph was cached
    with pytest.raises(ValueError, match="cycle"):
        d_separated(g, "a", "d")
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None


def test_frozen_graphs_are_cached_without_keeping_them_alive() -> None:
    g = nx.freeze(random_dag(30, 0.1, 7))
    mutable = nx.DiGraph(g)
    rng = random.Random(0)
    for _ in range(500):  # repeated (x, given) with many y: the memo must not change answers
        x, y, *z = rng.sample(list(g), 4)
        z = z[: rng.randint(0, 2)]
        assert d_separated(g, x, y, z) == d_separated(mutable, x, y, z)
    ref = weakref.ref(g)
    bn = asia()
    d_separated(bn, "asia", "smoke")
    bn_ref = weakref.ref(bn)
    del g, bn
    gc.collect()
    assert ref() is None and bn_ref() is None


# ------------------------------------------------------------------------------ bad input
def test_bad_input_names_the_culprit() -> None:
    bn = asia()
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['smok'\] in xs"):
        d_separated(bn, "smok", "dysp")
    with pytest.raises(ValueError, match=r"\['nope'\] in ys"):
        d_separated(bn, "smoke", ["dysp", "nope"])
    with pytest.raises(ValueError, match=r"\['nope'\] in given"):
        d_separated(bn, "smoke", "dysp", ["nope"])
    with pytest.raises(ValueError, match=r"\['bronc'\] appear in both xs and given"):
        d_separated(bn, ["smoke", "bronc"], "dysp", "bronc")
    with pytest.raises(ValueError, match=r"\['dysp'\] appear in both xs and ys"):
        d_separated(bn, "dysp", "dysp")
    with pytest.raises(ValueError, match=r"\['either'\] appear in both ys and given"):
        d_separated(bn, "smoke", "either", ["either"])
    with pytest.raises(ValueError, match="xs is empty"):
        d_separated(bn, [], "dysp")
    with pytest.raises(ValueError, match=r"\['ghost'\] in v"):
        markov_blanket(bn, "ghost")
    with pytest.raises(ValueError, match="max_conditioning"):
        implied_independencies(bn, max_conditioning=-1)
    with pytest.raises(ValueError, match=r"only in the first \['d'\]"):
        is_imap(nx.DiGraph([("a", "b"), ("c", "d")]), nx.DiGraph([("a", "b"), ("c", "a")]))


@pytest.mark.parametrize(
    "call",
    [
        lambda g: d_separated(g, "a", "d"),
        lambda g: markov_blanket(g, "a"),
        lambda g: local_independencies(g),
        lambda g: minimal_d_separator(g, "a", "d"),
        lambda g: markov_equivalent(g, g),
    ],
)
def test_a_cycle_is_named(call: object) -> None:
    cyclic = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    with pytest.raises(
        ValueError, match=r"cycle (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    ):
        call(cyclic)


def test_wrong_kind_of_graph() -> None:
    with pytest.raises(ValueError, match="undirected"):
        d_separated(nx.Graph([("a", "b")]), "a", "b")
    with pytest.raises(TypeError, match="DiscreteBN"):
        d_separated({"a": ["b"]}, "a", "b")


# ------------------------------------------------------------------------------ CLI
def test_cli_ci_on_an_example_and_a_bif_file(tmp_path, capsys) -> None:
    assert main(["ci", "asia", "--x", "smoke", "--y", "dysp", "--given", "bronc"]) == 0
    out = capsys.readouterr().out
    assert "smoke ⊥ dysp | bronc: no, d-connected" in out
    assert "active trail: smoke -> lung -> either -> dysp" in out
    separator = out.split("minimal separator: {")[1].split("}")[0].split(", ")
    assert d_separated(asia(), "smoke", "dysp", separator)
    assert set(separator) == minimal_d_separator(asia(), "smoke", "dysp")
    path = tmp_path / "asia.bif"
    asia().write_bif(path)
    assert main(["ci", str(path), "--x", "xray", "--y", "dysp,bronc", "--given", "either"]) == 0
    out = capsys.readouterr().out
    assert "xray ⊥ bronc, dysp | either: yes, d-separated" in out
    assert main(["ci", "asia", "--x", "tub", "--y", "lung", "--samples", "3000"]) == 0
    out = capsys.readouterr().out
    assert "empirical: tub ⊥ lung: G-test" in out and "graph: d-separated" in out


def test_cli_on_a_program_file(tmp_path, capsys) -> None:
    program = tmp_path / "story.py"
    program.write_text(
        "import pyro, pyro.distributions as dist\n"
        "def story():\n"
        "    z = pyro.sample('z', dist.Normal(0.0, 1.0))\n"
        "    a = pyro.sample('a', dist.Normal(z, 1.0))\n"
        "    b = pyro.sample('b', dist.Normal(z, 1.0))\n"
        "    return a + b\n"
    )
    assert main(["ci", f"{program}:story", "--x", "a", "--y", "b", "--given", "z"]) == 0
    assert "a ⊥ b | z: yes, d-separated" in capsys.readouterr().out
    assert main(["blanket", f"{program}:story", "z"]) == 0
    assert "Markov blanket of z (2 variables): a, b" in capsys.readouterr().out
    assert main(["ci", f"{program}:nothing", "--x", "a", "--y", "b"]) == 2
    assert "has no class or function 'nothing'; its functions: story" in capsys.readouterr().err


def test_cli_blanket_and_errors(capsys) -> None:
    assert main(["blanket", "alarm", "HR"]) == 0
    out = capsys.readouterr().out
    blanket = out.splitlines()[0].split(": ")[1].split(", ")
    assert set(blanket) == set(pgmpy_dag(graph("alarm")).get_markov_blanket("HR"))
    assert "  parents: CATECHOL" in out
    assert main(["ci", "asia", "--x", "smok", "--y", "dysp"]) == 2
    assert "unknown variable(s) ['smok']" in capsys.readouterr().err
    assert main(["blanket", "no-such-network", "x"]) == 2
    assert "'no-such-network'" in capsys.readouterr().err


def test_demo_section(tmp_path) -> None:
    text = demo_section(tmp_path)
    assert "asia ⊥ smoke: yes, d-separated" in text
    assert "Markov blanket of either (5 variables): bronc, dysp, lung, tub, xray" in text
    checks = [line for line in text.splitlines() if "G-test" in line]
    assert len(checks) == 4
    for line in checks:  # the graph's answers hold on the samples
        p = float(line.split("p = ")[1].split(" ")[0])
        assert p > 0.01 if "graph: d-separated" in line else p < 1e-6
    drawn = list(tmp_path.iterdir())
    assert len(drawn) == 1 and drawn[0].stat().st_size > 0 and drawn[0].name in text
