r"""WordNet 3.0's noun hierarchy and its transitive closure, read from the ``wndb`` files.

The benchmark of Nickel & Kiela (2017, "Poincaré embeddings for learning hierarchical
representations", Sec. 4.1): every noun synset, and the pairs ``(u, a)`` where ``a`` is a
hypernym of ``u`` or an ancestor of one (the transitive closure of the hypernym and instance
hypernym pointers), or the part of it below one synset (``"mammal.n.01"``).

The files are WordNet's own database (Debian package ``wordnet-base``, installed under
``/usr/share/wordnet``; nothing is downloaded). Their format is the man page wndb(5): a line of
``data.noun`` is ``synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt
[pointer_symbol synset_offset pos source/target ...] | gloss`` (``w_cnt`` in hexadecimal), lines
starting with two spaces are the licence; a line of ``index.noun`` is ``lemma pos synset_cnt
p_cnt [ptr_symbol ...] sense_cnt tagsense_cnt synset_offset [synset_offset ...]``, the offsets in
sense order. A synset is named as NLTK names it: ``lemma.n.NN`` with the synset's first word in
lower case and ``NN`` the position of the synset among that lemma's senses in ``index.noun``
(NLTK's WordNet reader wants a ``lexnames`` file this package lacks, so it is not used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hierarchy import transitive_closure

__all__ = ["WordNetHierarchy", "find_wordnet", "load_wordnet_nouns", "WORDNET_INSTALL_HINT"]

#: where the Debian/Ubuntu package ``wordnet-base`` (and Homebrew's ``wordnet``) install the files
WORDNET_DIRS = (
    Path("/usr/share/wordnet"),
    Path("/usr/local/share/wordnet"),
    Path("/usr/local/WordNet-3.0/dict"),
    Path("/opt/homebrew/share/wordnet"),
)

WORDNET_INSTALL_HINT = (
    "WordNet 3.0's database files (data.noun, index.noun) were not found. Install them first:\n"
    "  Debian/Ubuntu: sudo apt-get install wordnet-base   (files in /usr/share/wordnet)\n"
    "or pass path= the directory that holds data.noun and index.noun"
)

_HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym (wndb(5), "Pointers")


@dataclass
class WordNetHierarchy:
    """The noun hierarchy (or a part of it) as node names and pairs.

    Attributes:
        nodes: synset names (``"mammal.n.01"``), sorted.
        pairs: ``(child, ancestor)`` pairs of the transitive closure, both in ``nodes``.
        edges: ``(child, parent)`` hypernym and instance hypernym pointers, both in ``nodes``.
        root: the synset the hierarchy was cut below, or ``None`` for all nouns.
    """

    nodes: list[str]
    pairs: list[tuple[str, str]]
    edges: list[tuple[str, str]]
    root: str | None = None


def find_wordnet(path: str | Path | None = None) -> Path:
    """The directory holding WordNet 3.0's ``data.noun`` and ``index.noun``.

    Args:
        path: a directory to use; ``None`` looks in the places packages install it
            (``/usr/share/wordnet`` for Debian's ``wordnet-base``). Default: ``None``.

    Returns:
        The directory.

    Raises:
        FileNotFoundError: with the install command, when the files are not there.
    """
    candidates = WORDNET_DIRS if path is None else (Path(path),)
    for directory in candidates:
        if (directory / "data.noun").is_file() and (directory / "index.noun").is_file():
            return directory
    where = ", ".join(str(d) for d in candidates)
    raise FileNotFoundError(f"{WORDNET_INSTALL_HINT}\n(looked in {where})")


def _read_index(path: Path) -> dict[int, list[str]]:
    """``synset_offset -> [lemma.NN, ...]`` over ``index.noun`` (NN the 1-based sense number)."""
    senses: dict[int, list[str]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.startswith("  ") or not line.strip():
                continue
            fields = line.split()
            try:
                lemma, p_cnt = fields[0], int(fields[3])
                offsets = fields[4 + p_cnt + 2 :]
                for sense, offset in enumerate(offsets, 1):
                    senses.setdefault(int(offset), []).append(f"{lemma}.n.{sense:02d}")
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}:{number}: not an index.noun line: {line[:80]!r}"
                ) from None
    return senses


def _read_data(path: Path) -> tuple[dict[int, str], list[tuple[int, int]]]:
    """``synset_offset -> first word`` and the hypernym pointers ``(offset, target)`` of
    ``data.noun``."""
    first_word: dict[int, str] = {}
    pointers: list[tuple[int, int]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.startswith("  ") or not line.strip():
                continue
            fields = line.split(" | ", 1)[0].split()
            try:
                offset, w_cnt = int(fields[0]), int(fields[3], 16)
                first_word[offset] = fields[4].lower()
                at = 4 + 2 * w_cnt
                p_cnt = int(fields[at])
                for i in range(p_cnt):
                    symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
                    if symbol in _HYPERNYM_POINTERS and pos == "n":
                        pointers.append((offset, int(target)))
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{number}: not a data.noun line: {line[:80]!r}") from None
    return first_word, pointers


def _synset_names(first_word: dict[int, str], senses: dict[int, list[str]]) -> dict[int, str]:
    names = {}
    for offset, word in first_word.items():
        prefix = f"{word}.n."
        match = [name for name in senses.get(offset, ()) if name.startswith(prefix)]
        if not match:
            raise ValueError(f"synset {offset:08d} ({word}) is not among {word!r}'s senses")
        names[offset] = match[0]
    return names


def load_wordnet_nouns(
    root: str | None = None, *, path: str | Path | None = None
) -> WordNetHierarchy:
    """The transitive closure of WordNet 3.0's noun hierarchy, whole or below ``root``.

    Nickel & Kiela (2017), Sec. 4.1: the pairs ``(u, a)`` with ``a`` a hypernym (``@``) or
    instance hypernym (``@i``) of ``u``, or an ancestor of one. Below ``root``: the nodes are
    ``root`` and every synset that has it as an ancestor, the pairs those of the closure between
    two of these nodes.

    Args:
        root: a synset name such as ``"mammal.n.01"``; ``None`` for every noun. Default: ``None``.
        path: the directory of ``data.noun`` and ``index.noun``. Default: ``None``
            (:func:`find_wordnet`'s search).

    Returns:
        A :class:`WordNetHierarchy`.

    Raises:
        FileNotFoundError: when the files are missing (the message names
            ``apt-get install wordnet-base``).
        ValueError: for an unknown ``root`` or malformed files.

    Examples::

        >>> mammals = load_wordnet_nouns("mammal.n.01")  # doctest: +SKIP
        >>> len(mammals.nodes), mammals.pairs[0]  # doctest: +SKIP
    """
    directory = find_wordnet(path)
    senses = _read_index(directory / "index.noun")
    first_word, pointers = _read_data(directory / "data.noun")
    names = _synset_names(first_word, senses)
    edges = [(names[child], names[parent]) for child, parent in pointers if parent in names]
    pairs = transitive_closure(edges, "WordNet's hypernym pointers")
    nodes = set(names.values())
    if root is not None:
        if root not in nodes:
            close = sorted(n for n in nodes if n.split(".")[0] == str(root).split(".")[0])
            hint = f"; synsets of that lemma: {close}" if close else ""
            raise ValueError(f"root {root!r} is not a noun synset of WordNet{hint}")
        nodes = {child for child, ancestor in pairs if ancestor == root} | {root}
        pairs = [(u, a) for u, a in pairs if u in nodes and a in nodes]
        edges = [(u, a) for u, a in edges if u in nodes and a in nodes]
    return WordNetHierarchy(nodes=sorted(nodes), pairs=pairs, edges=edges, root=root)
