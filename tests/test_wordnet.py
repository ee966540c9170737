"""Hierarchy utilities and the WordNet loader: a tiny database in WordNet's wndb(5) format written
here, and the real WordNet 3.0 files when installed (Debian's ``wordnet-base``)."""

import pytest

from manifoldnn.datasets import (
    WordNetHierarchy,
    balanced_tree,
    check_hierarchy,
    find_wordnet,
    load_wordnet_nouns,
    transitive_closure,
)

LICENCE = "  1 This software and database is being provided to you, the LICENSEE...  \n"

# synset_offset lex_filenum ss_type w_cnt word lex_id [...] p_cnt [ptr ...] | gloss
DATA_NOUN = LICENCE + (
    "00000001 03 n 01 entity 0 001 ~ 00000002 n 0000 | that which exists  \n"
    "00000002 03 n 01 animal 0 002 @ 00000001 n 0000 ~ 00000003 n 0000 | a living organism  \n"
    "00000003 05 n 01 mammal 0 003 @ 00000002 n 0000 ~ 00000004 n 0000 ~ 00000005 n 0000 "
    "| warm-blooded  \n"
    "00000004 05 n 02 dog 0 domestic_dog 0 003 @ 00000003 n 0000 + 00692347 v 0101 "
    "~i 00000007 n 0000 | a member of the genus Canis  \n"
    "00000005 05 n 01 Cat 0 001 @ 00000003 n 0000 | feline mammal  \n"
    "00000006 18 n 02 dog 1 frump 0 001 @ 00000001 n 0000 | a dull unattractive woman  \n"
    "00000007 18 n 01 Lassie 0 001 @i 00000004 n 0000 | a famous collie  \n"
)

# lemma pos synset_cnt p_cnt [ptr_symbol ...] sense_cnt tagsense_cnt synset_offset [...]
INDEX_NOUN = LICENCE + (
    "animal n 1 2 @ ~ 1 0 00000002  \n"
    "cat n 1 1 @ 1 0 00000005  \n"
    "dog n 2 2 @ ~ 2 1 00000004 00000006  \n"
    "domestic_dog n 1 1 @ 1 0 00000004  \n"
    "entity n 1 1 ~ 1 0 00000001  \n"
    "frump n 1 1 @ 1 0 00000006  \n"
    "lassie n 1 1 @i 1 0 00000007  \n"
    "mammal n 1 2 @ ~ 1 0 00000003  \n"
)


@pytest.fixture
def tiny_wordnet(tmp_path):
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    (tmp_path / "index.noun").write_text(INDEX_NOUN)
    return tmp_path


def test_transitive_closure_of_a_chain_and_a_diamond():
    assert transitive_closure([("c", "b"), ("b", "a")]) == [("c", "b"), ("c", "a"), ("b", "a")]
    diamond = transitive_closure([("d", "b"), ("d", "c"), ("b", "a"), ("c", "a")])
    assert sorted(diamond) == sorted([("d", "b"), ("d", "c"), ("d", "a"), ("b", "a"), ("c", "a")])


@pytest.mark.parametrize("depth, branching", [(1, 1), (2, 2), (4, 3)])
def test_balanced_tree_has_the_stated_sizes(depth, branching):
    edges = balanced_tree(depth, branching)
    nodes = {node for edge in edges for node in edge}
    assert len(nodes) == sum(branching**level for level in range(depth + 1))
    pairs = transitive_closure(edges)
    assert len(pairs) == sum(level * branching**level for level in range(depth + 1))
    assert all(child.startswith(ancestor + ".") for child, ancestor in pairs)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "empty"),
        ([("a", "a")], "self-loops"),
        ([("a", "b"), ("b", "c"), ("c", "a")], "cycle"),
        ([("a",)], r"\(child, ancestor\) pairs"),
    ],
)
def test_check_hierarchy_rejects_bad_input(pairs, message):
    with pytest.raises(ValueError, match=message):
        check_hierarchy(pairs)


def test_check_hierarchy_names_a_cycle_and_orders_nodes_topologically():
    with pytest.raises(ValueError, match=r"\['b', 'c', 'b'\]|\['c', 'b', 'c'\]"):
        check_hierarchy([("a", "b"), ("b", "c"), ("c", "b")])
    nodes, pairs = check_hierarchy([("c", "b"), ("b", "a"), ("c", "b")])
    assert nodes == ["c", "b", "a"] and pairs == [("c", "b"), ("b", "a")]


def test_tiny_wordnet_closure_and_names(tiny_wordnet):
    nouns = load_wordnet_nouns(path=tiny_wordnet)
    assert isinstance(nouns, WordNetHierarchy) and nouns.root is None
    assert nouns.nodes == sorted(
        ["entity.n.01", "animal.n.01", "mammal.n.01", "dog.n.01", "cat.n.01", "dog.n.02"]
        + ["lassie.n.01"]
    )
    expected = {
        ("animal.n.01", "entity.n.01"),
        ("mammal.n.01", "animal.n.01"),
        ("mammal.n.01", "entity.n.01"),
        ("dog.n.02", "entity.n.01"),
    }
    for leaf in ("dog.n.01", "cat.n.01", "lassie.n.01"):
        expected |= {(leaf, a) for a in ("mammal.n.01", "animal.n.01", "entity.n.01")}
    expected.add(("lassie.n.01", "dog.n.01"))  # the instance hypernym pointer @i
    assert set(nouns.pairs) == expected and len(nouns.pairs) == len(expected)
    assert ("lassie.n.01", "dog.n.01") in nouns.edges  # "+ ... v" and "~i" pointers ignored
    assert len(nouns.edges) == 6


def test_tiny_wordnet_below_a_root(tiny_wordnet):
    mammals = load_wordnet_nouns("mammal.n.01", path=tiny_wordnet)
    assert mammals.root == "mammal.n.01"
    assert mammals.nodes == ["cat.n.01", "dog.n.01", "lassie.n.01", "mammal.n.01"]
    assert set(mammals.pairs) == {
        ("dog.n.01", "mammal.n.01"),
        ("cat.n.01", "mammal.n.01"),
        ("lassie.n.01", "mammal.n.01"),
        ("lassie.n.01", "dog.n.01"),
    }


def test_unknown_root_names_the_lemma_senses(tiny_wordnet):
    with pytest.raises(ValueError, match=r"'dog.n.03' is not a noun synset.*dog.n.01"):
        load_wordnet_nouns("dog.n.03", path=tiny_wordnet)


def test_missing_files_name_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        find_wordnet(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        load_wordnet_nouns(path=tmp_path / "nowhere")


def test_malformed_data_line_names_file_and_line(tiny_wordnet):
    (tiny_wordnet / "data.noun").write_text(LICENCE + "00000001 03 n zz entity\n")
    with pytest.raises(ValueError, match=r"data.noun:2"):
        load_wordnet_nouns(path=tiny_wordnet)


def _real_wordnet():
    try:
        return find_wordnet()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(
    _real_wordnet() is None,
    reason="WordNet 3.0 files not installed (apt-get install wordnet-base)",
)
def test_real_wordnet_counts_of_nickel_and_kiela():
    """82,115 nouns and 743,241 closure pairs; the mammal subtree 1,182 nodes, 6,542 pairs."""
    nouns = load_wordnet_nouns()
    assert (len(nouns.nodes), len(nouns.pairs)) == (82115, 743241)
    mammals = load_wordnet_nouns("mammal.n.01")
    assert (len(mammals.nodes), len(mammals.pairs)) == (1182, 6542)
    assert ("dog.n.01", "mammal.n.01") in mammals.pairs
    assert ("dog.n.01", "carnivore.n.01") in mammals.pairs
