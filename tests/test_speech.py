"""espeak-ng transcription, proportional phoneme alignment and librosa log-mel frames."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manifoldnn.datasets import (
    align_proportional,
    find_espeak,
    log_mel,
    speak_words,
    transcribe,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


@needs_espeak
def test_transcription_of_known_words() -> None:
    # `espeak-ng -q -x --sep=_` prints k_'a_t, s_t_r_'E_N_T and dZ_'V_dZ (espeak-ng 1.51):
    # phoneme mnemonics split at "_", the primary stress mark "'" in front of the vowel.
    assert transcribe(["cat", "strength", "judge"]) == [
        ["k", "a", "t"],
        ["s", "t", "r", "E", "N", "T"],
        ["dZ", "V", "dZ"],
    ]


@needs_espeak
def test_no_stress_marks_survive() -> None:
    for phonemes in transcribe(["photograph", "understanding", "international"]):
        assert phonemes and all(not set(p) & set("',%=") for p in phonemes)


def test_alignment_of_a_known_word() -> None:
    # "cat" (k, a, t) over 7 frames: floor(3 t / 7) for t = 0..6
    np.testing.assert_array_equal(align_proportional(3, 7), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(align_proportional(3, 3), [0, 1, 2])
    np.testing.assert_array_equal(align_proportional(2, 1), [0])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 200))
def test_alignment_properties(n_phonemes: int, n_frames: int) -> None:
    index = align_proportional(n_phonemes, n_frames)
    assert index.shape == (n_frames,) and index[0] == 0
    assert np.all(np.diff(index) >= 0) and index.max() < n_phonemes
    if n_frames >= n_phonemes:
        counts = np.bincount(index, minlength=n_phonemes)
        assert counts.min() >= n_frames // n_phonemes
        assert counts.max() <= -(-n_frames // n_phonemes)


@needs_espeak
def test_spoken_word_is_aligned_over_its_frames(tmp_path) -> None:
    (word,) = speak_words(["cat"], n_mels=20, hop_length=256, cache_dir=tmp_path)
    assert word.phonemes == ["k", "a", "t"]
    assert word.frames.shape[1] == 20 and np.isfinite(word.frames).all()
    assert len(word.alignment) == len(word.frames) >= 3
    np.testing.assert_array_equal(word.alignment, align_proportional(3, len(word.frames)))
    (again,) = speak_words(["cat"], n_mels=20, hop_length=256, cache_dir=tmp_path)  # cached
    np.testing.assert_array_equal(again.frames, word.frames)


def test_log_mel_of_a_tone_trims_silence_and_peaks_at_its_band() -> None:
    import librosa

    rate, n_fft, hop, n_mels, freq = 22050, 1024, 256, 40, 1000.0
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    silence = np.zeros(rate // 2)
    frames = log_mel(
        np.concatenate([silence, tone, silence]), rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop
    )
    full = 1 + (rate - n_fft) // hop  # frames of the tone alone, no centring
    # librosa's trim keeps whole frames: at most one frame of slack on either side
    assert abs(len(frames) - full) <= 2 + n_fft // hop
    centres = librosa.mel_frequencies(n_mels + 2, fmax=rate / 2)[1:-1]
    expected = int(np.argmin(np.abs(centres - freq)))
    peaks = frames[2:-2].argmax(1)
    assert np.all(np.abs(peaks - expected) <= 1)


def test_missing_espeak_names_the_install_command(tmp_path) -> None:
    missing = str(tmp_path / "no-such-espeak-ng")
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        find_espeak(missing)
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        transcribe(["cat"], espeak=missing)


def test_value_errors() -> None:
    with pytest.raises(ValueError, match="words"):
        transcribe(["two\nlines"])
    with pytest.raises(ValueError, match="n_phonemes"):
        align_proportional(0, 4)
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 100)), 16000)


def test_log_mel_without_librosa_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "librosa", None)  # as if not installed
    with pytest.raises(ImportError, match=r"manifoldnn\[speech\]"):
        log_mel(np.zeros(2048), 22050)
