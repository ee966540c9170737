r"""Hierarchies as ``(child, ancestor)`` pairs: checks, transitive closure, balanced trees.

A hierarchy is a directed acyclic graph given by pairs ``(child, parent)`` (its edges) or
``(child, ancestor)`` (its transitive closure, the data of Nickel & Kiela 2017, "Poincaré
embeddings for learning hierarchical representations"). Nodes are any hashable names (strings
for WordNet's synsets). :func:`check_hierarchy` is the one validation of such pairs (no
self-loops, no cycles, at least one pair); :func:`transitive_closure` turns edges into closure
pairs; :func:`balanced_tree` builds the test tree of the papers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

__all__ = ["check_hierarchy", "transitive_closure", "balanced_tree"]


def _as_pairs(pairs: Iterable[Sequence[Hashable]], name: str) -> list[tuple[Hashable, Hashable]]:
    result = []
    for pair in pairs:
        try:
            child, parent = pair
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold (child, ancestor) pairs, got {pair!r}") from None
        result.append((child, parent))
    return result


def check_hierarchy(
    pairs: Iterable[Sequence[Hashable]], name: str = "pairs"
) -> tuple[list[Hashable], list[tuple[Hashable, Hashable]]]:
    """Validate ``(child, ancestor)`` pairs: at least one, no self-loop, no directed cycle.

    Args:
        pairs: ``(child, ancestor)`` (or ``(child, parent)``) pairs of hashable node names.
        name: the argument's name, for messages. Default: ``"pairs"``.

    Returns:
        ``(nodes, pairs)``: the nodes in topological order (every ancestor after its
        descendants; ties in order of first appearance) and the pairs as a list of tuples,
        duplicates removed, in order of first appearance.

    Raises:
        ValueError: on an empty hierarchy, a pair that is not a 2-sequence, a self-loop
            ``(a, a)`` or a cycle (the message names the nodes of one cycle).
    """
    pairs = list(dict.fromkeys(_as_pairs(pairs, name)))
    if not pairs:
        raise ValueError(f"{name} is empty: a hierarchy needs at least one (child, ancestor) pair")
    loops = [child for child, parent in pairs if child == parent]
    if loops:
        raise ValueError(f"{name} holds self-loops (a node its own ancestor): {loops[:5]!r}")
    order: dict[Hashable, None] = {}
    parents: dict[Hashable, list[Hashable]] = {}
    waiting: dict[Hashable, int] = {}  # children not yet placed, per node
    for child, parent in pairs:
        for node in (child, parent):
            order.setdefault(node)
            parents.setdefault(node, [])
            waiting.setdefault(node, 0)
        parents[child].append(parent)
        waiting[parent] += 1
    # Kahn's algorithm from the leaves upwards
    ready = [node for node in order if waiting[node] == 0]
    placed = []
    while ready:
        node = ready.pop()
        placed.append(node)
        for parent in parents[node]:
            waiting[parent] -= 1
            if waiting[parent] == 0:
                ready.append(parent)
    if len(placed) < len(order):
        raise ValueError(f"{name} holds a cycle: {_find_cycle(parents, waiting)!r}")
    return placed, pairs


def _find_cycle(parents: dict, waiting: dict) -> list:
    """One directed cycle among the nodes Kahn's algorithm could not place."""
    left = {node for node, count in waiting.items() if count > 0}
    node = next(iter(left))
    seen: dict[Hashable, int] = {}
    path = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(parent for parent in parents[node] if parent in left)
    return path[seen[node] :] + [node]


def transitive_closure(
    edges: Iterable[Sequence[Hashable]], name: str = "edges"
) -> list[tuple[Hashable, Hashable]]:
    """The ``(descendant, ancestor)`` pairs of a hierarchy given by its ``(child, parent)`` edges.

    Args:
        edges: ``(child, parent)`` pairs of a directed acyclic graph.
        name: the argument's name, for messages. Default: ``"edges"``.

    Returns:
        Every pair ``(u, a)`` with ``a`` reachable from ``u`` along the edges (``u != a``), grouped
        by ``u`` in the topological order of :func:`check_hierarchy`, ancestors in the same order.

    Raises:
        ValueError: as :func:`check_hierarchy`.

    Examples::

        >>> transitive_closure([("dog", "mammal"), ("mammal", "animal")])
        [('dog', 'mammal'), ('dog', 'animal'), ('mammal', 'animal')]
    """
    nodes, edges = check_hierarchy(edges, name)
    rank = {node: i for i, node in enumerate(nodes)}
    parents: dict[Hashable, list[Hashable]] = {}
    for child, parent in edges:
        parents.setdefault(child, []).append(parent)
    ancestors: dict[Hashable, frozenset] = {}
    for node in reversed(nodes):  # ancestors first
        found = set()
        for parent in parents.get(node, ()):
            found.add(parent)
            found |= ancestors[parent]
        ancestors[node] = frozenset(found)
    return [
        (node, ancestor)
        for node in nodes
        for ancestor in sorted(ancestors[node], key=rank.__getitem__)
    ]


def balanced_tree(depth: int, branching: int) -> list[tuple[str, str]]:
    """The ``(child, parent)`` edges of a balanced tree (the test tree of Nickel & Kiela 2017).

    Nodes are named by their path from the root: ``"0"`` the root, ``"0.2"`` its third child,
    ``"0.2.1"`` that child's second child. The tree has ``sum_{l <= depth} branching**l`` nodes;
    its transitive closure (:func:`transitive_closure`) ``sum_l l * branching**l`` pairs.

    Args:
        depth: number of levels below the root (``>= 1``).
        branching: children per inner node (``>= 1``).

    Returns:
        The edges, level by level.
    """
    from ..validation import check_positive_int

    depth = check_positive_int(depth, "depth")
    branching = check_positive_int(branching, "branching")
    level = ["0"]
    edges = []
    for _ in range(depth):
        children = []
        for parent in level:
            for i in range(branching):
                child = f"{parent}.{i}"
                edges.append((child, parent))
                children.append(child)
        level = children
    return edges
