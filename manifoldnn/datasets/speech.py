r"""Spoken words from espeak-ng: phoneme transcription, synthesis, log-mel frames, alignment.

espeak-ng (https://github.com/espeak-ng/espeak-ng) is called as a program through ``subprocess``:

* ``espeak-ng -q -x --sep=_`` writes its own phoneme mnemonics (the ASCII phoneme names of its
  English phoneme table, espeak-ng ``docs/phonemes.md``), one input line per output line,
  phonemes separated by ``_``, stress as a mark in front of the stressed vowel (``'`` primary,
  ``,`` secondary; ``%`` and ``=`` are the other stress marks of its dictionary notation,
  ``docs/dictionary.md``). :func:`transcribe` strips the marks and returns the phoneme names,
  e.g. ``"cat" -> ["k", "a", "t"]`` (espeak-ng 1.51 prints ``k_'a_t``);
* ``espeak-ng -w FILE`` writes the speech as a 16-bit mono WAV file (:func:`synthesise`).

The log-mel frames use librosa's Slaney mel filterbank (:func:`librosa.feature.melspectrogram`,
Slaney 1998, Auditory Toolbox) and its silence trimming (:func:`librosa.effects.trim`).
espeak-ng's ``--pho`` phoneme durations are only written for MBROLA voices, so phonemes are
aligned to a word's frames proportionally (:func:`align_proportional`): phoneme ``j`` of ``P``
covers the frames ``t`` with ``floor(t P / T) = j``.

Sizes: ``T`` frames of a word, ``P`` phonemes, ``n_mels`` mel bands.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.optional import require

__all__ = [
    "INSTALL_HINT",
    "STRESS_MARKS",
    "SpokenWord",
    "align_proportional",
    "find_espeak",
    "log_mel",
    "speak_words",
    "synthesise",
    "transcribe",
]

INSTALL_HINT = (
    "espeak-ng was not found. Install it first:\n"
    "  Debian/Ubuntu: sudo apt-get install espeak-ng\n"
    "  Fedora:        sudo dnf install espeak-ng\n"
    "  macOS:         brew install espeak-ng"
)

STRESS_MARKS = "',%="


def find_espeak(executable: str = "espeak-ng") -> str:
    """Full path of the espeak-ng program; ``FileNotFoundError`` with the install command if absent.

    Args:
        executable: program name or path. Default: ``"espeak-ng"``.
    """
    path = shutil.which(executable)
    if path is None:
        raise FileNotFoundError(f"{INSTALL_HINT}\n(looked for {executable!r})")
    return path


def _check_words(words: Sequence[str]) -> list[str]:
    words = list(words)
    for word in words:
        if not isinstance(word, str) or not word.strip() or "\n" in word:
            raise ValueError(f"words must be non-empty single-line strings, got {word!r}")
    return words


def transcribe(
    words: Sequence[str], *, espeak: str = "espeak-ng", voice: str = "en"
) -> list[list[str]]:
    """espeak-ng's phoneme names of each word (``-q -x --sep=_``, stress marks removed).

    All words are transcribed in one call, one word a line (espeak-ng answers line by line).

    Args:
        words: the words (each a non-empty line of text).
        espeak: the espeak-ng program. Default: ``"espeak-ng"``.
        voice: espeak-ng voice (``-v``). Default: ``"en"``.

    Returns:
        one list of phoneme names per word, e.g. ``transcribe(["cat"]) == [["k", "a", "t"]]``.
    """
    words = _check_words(words)
    if not words:
        return []
    program = find_espeak(espeak)
    completed = subprocess.run(
        [program, "-q", "-x", "--sep=_", "-v", voice],
        input="\n".join(words) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.strip() for line in completed.stdout.splitlines() if line.strip()]
    if len(lines) != len(words):
        raise RuntimeError(f"espeak-ng returned {len(lines)} transcriptions for {len(words)} words")
    result = []
    for word, line in zip(words, lines):
        phonemes = []
        for chunk in line.split():  # a word may be read as several (e.g. a spelt-out acronym)
            for name in chunk.split("_"):
                name = name.strip(STRESS_MARKS)
                if name and not name.startswith(":"):
                    phonemes.append(name)
        if not phonemes:
            raise RuntimeError(f"espeak-ng gave no phonemes for {word!r}: {line!r}")
        result.append(phonemes)
    return result


def synthesise(
    word: str, *, espeak: str = "espeak-ng", voice: str = "en"
) -> tuple[np.ndarray, int]:
    """espeak-ng speech of ``word``: ``(waveform float32 in [-1, 1], sample_rate)``.

    Args:
        word: the text to speak.
        espeak: the espeak-ng program. Default: ``"espeak-ng"``.
        voice: espeak-ng voice (``-v``). Default: ``"en"``.
    """
    import scipy.io.wavfile

    (word,) = _check_words([word])
    program = find_espeak(espeak)
    with tempfile.TemporaryDirectory() as tmp:
        wav = str(Path(tmp) / "speech.wav")
        subprocess.run([program, "-v", voice, "-w", wav, word], check=True, capture_output=True)
        sample_rate, wave = scipy.io.wavfile.read(wav)
    return wave.astype(np.float32) / 32768.0, int(sample_rate)


def log_mel(
    wave: np.ndarray,
    sample_rate: int,
    *,
    n_mels: int = 32,
    n_fft: int = 1024,
    hop_length: int = 256,
    top_db: float = 30.0,
) -> np.ndarray:
    r"""Log-mel frames ``(T, n_mels)`` of a mono waveform, leading and trailing silence trimmed.

    .. math::

        X_{t,m} = \log\big(\textstyle\sum_f M_{m,f} |S_{f,t}|^2 + 10^{-10}\big)

    with the short-time Fourier transform S (Hann window) and librosa's Slaney mel filters M.

    Args:
        wave: ``(samples,)`` float waveform.
        sample_rate: in Hz.
        n_mels: mel bands. Default: 32.
        n_fft: FFT length. Default: 1024.
        hop_length: frame step in samples. Default: 256.
        top_db: silence threshold of :func:`librosa.effects.trim` in dB below the peak.
            Default: 30.
    """
    librosa = require("librosa", "speech", "log_mel")

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave must be a mono waveform (samples,), got shape {wave.shape}")
    trimmed, _ = librosa.effects.trim(
        wave, top_db=top_db, frame_length=n_fft, hop_length=hop_length
    )
    if trimmed.size < n_fft:
        trimmed = np.pad(trimmed, (0, n_fft - trimmed.size))
    power = librosa.feature.melspectrogram(
        y=trimmed, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, center=False
    )
    return np.log(power + 1e-10).T.astype(np.float32)


def align_proportional(n_phonemes: int, n_frames: int) -> np.ndarray:
    r"""Phoneme index of each frame, phonemes spread evenly over the word: ``floor(t P / T)``.

    Args:
        n_phonemes: P >= 1.
        n_frames: T >= 1.

    Returns:
        ``(T,)`` int64, non-decreasing from 0 to P - 1; every phoneme gets ``floor(T / P)`` or
        ``ceil(T / P)`` frames when ``T >= P``.
    """
    if n_phonemes < 1 or n_frames < 1:
        raise ValueError(f"n_phonemes and n_frames must be >= 1, got {n_phonemes}, {n_frames}")
    return (np.arange(n_frames) * n_phonemes) // n_frames


@dataclass
class SpokenWord:
    """One word spoken by espeak-ng.

    Attributes:
        word: the text.
        phonemes: espeak-ng's phoneme names (:func:`transcribe`).
        frames: ``(T, n_mels)`` float32 log-mel frames (:func:`log_mel`).
        alignment: ``(T,)`` int64, index into ``phonemes`` of each frame (:func:`align_proportional`).
    """

    word: str
    phonemes: list[str]
    frames: np.ndarray
    alignment: np.ndarray


def speak_words(
    words: Sequence[str],
    *,
    n_mels: int = 32,
    hop_length: int = 256,
    espeak: str = "espeak-ng",
    voice: str = "en",
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[SpokenWord]:
    """Transcribe, synthesise and align each word (:class:`SpokenWord` list, in order).

    Args:
        words: the words.
        n_mels: mel bands, as in :func:`log_mel`. Default: ``32``.
        hop_length: samples between frames, as in :func:`log_mel`. Default: ``256``.
        espeak: the espeak-ng program. Default: ``"espeak-ng"``.
        voice: the espeak-ng voice. Default: ``"en"``.
        cache_dir: if given, the frames are stored in (and read back from) a ``.npz`` file there,
            keyed by the words and settings. Default: ``None``.
        progress: show a tqdm bar over the synthesis. Default: False.
    """
    words = _check_words(words)
    program = find_espeak(espeak)
    phonemes = transcribe(words, espeak=program, voice=voice)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(repr((words, n_mels, hop_length, voice)).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"espeak_logmel_{key}.npz"
    if cache is not None and cache.exists():
        stored = np.load(cache)
        frames = np.split(stored["frames"], stored["bounds"])
    else:
        from tqdm import tqdm

        frames = []
        for word in tqdm(words, desc="espeak-ng", disable=not progress):
            wave, rate = synthesise(word, espeak=program, voice=voice)
            frames.append(log_mel(wave, rate, n_mels=n_mels, hop_length=hop_length))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            bounds = np.cumsum([len(f) for f in frames])[:-1]
            np.savez_compressed(cache, frames=np.concatenate(frames), bounds=bounds)
    return [
        SpokenWord(word, names, frame, align_proportional(len(names), len(frame)))
        for word, names, frame in zip(words, phonemes, frames)
    ]
