"""Real speech: GE2E speaker embeddings separate LibriSpeech speakers (equal error rate),
and the voice activity detector agrees with sample.rttm's speech regions."""

from __future__ import annotations

import numpy as np
import pytest

from vidpipe.audio import SAMPLE_RATE, embed_speech, load_audio, mask_of
from vidpipe.config import Config
from vidpipe.pipeline.runner import config_backends


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    """Where false accepts (different speakers above the threshold) equal false rejects."""
    return float(min(max((scores[~same] >= t).mean(), (scores[same] < t).mean()) for t in np.unique(scores)))


@pytest.fixture(scope="module")
def librispeech(shared):
    files = sorted((shared / "media/audio/librispeech_speakers").glob("*/*.flac"))
    assert len(files) == 50
    return files, np.array([f.parent.name for f in files])


def test_speaker_embeddings_separate_librispeech_speakers(librispeech):
    files, speaker = librispeech
    emb = embed_speech(files)  # one batch, speech only, as `vidpipe run` embeds clips
    assert emb.shape == (50, 256) and np.linalg.norm(emb, axis=1) == pytest.approx(1.0, abs=1e-5)
    pairs = np.triu_indices(len(files), 1)
    scores, same = (emb @ emb.T)[pairs], (speaker[:, None] == speaker[None, :])[pairs]
    eer = equal_error_rate(scores, same)
    print(f"\nGE2E on 5 LibriSpeech speakers x 10 utterances: EER {eer:.2%} "
          f"(same-speaker cosine {scores[same].mean():.2f}, different {scores[~same].mean():.2f})")
    assert eer < 0.03  # chance is 50%; measured 0.4%
    single = embed_speech(str(files[0]))
    assert single.shape == (256,) and single @ emb[0] == pytest.approx(1.0, abs=1e-4)
    silence = np.zeros(SAMPLE_RATE, np.int16)
    assert np.isnan(embed_speech(silence, SAMPLE_RATE)).all()  # no speech, no speaker
    assert np.isnan(embed_speech(silence, SAMPLE_RATE, speech_only=False)).all()


def test_ge2e_mel_front_end_is_resemblyzers(shared):
    """vidpipe computes resemblyzer's mel spectrogram in NumPy (librosa's first call costs
    seconds of imports); the numbers must be librosa's."""
    from vidpipe.backends.ge2e import import_resemblyzer, mel_spectrogram

    _, resemblyzer_audio, _ = import_resemblyzer()
    speech = load_audio(shared / "media/audio/sample.wav")[: 3 * SAMPLE_RATE] / 32768.0
    noise = np.random.default_rng(0).standard_normal(12345) * 0.1
    for wav in (speech.astype(np.float32), noise.astype(np.float32)):
        ours, theirs = mel_spectrogram(wav), resemblyzer_audio.wav_to_mel_spectrogram(wav)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-5 * np.abs(theirs).max()


def test_ge2e_slicing_volume_and_encoder_are_resemblyzers(shared):
    """Without torch, vidpipe slices and normalises clips as resemblyzer does (bit for bit)
    and its ONNX export of the encoder gives resemblyzer's embeddings."""
    import torch

    from vidpipe.backends.ge2e import (MIN_COVERAGE, PARTIALS_PER_S, TARGET_DBFS, import_resemblyzer,
                                       normalize_volume, partial_slices, voice_encoder)

    _, resemblyzer_audio, encoder_module = import_resemblyzer()
    theirs_slices = encoder_module.VoiceEncoder.compute_partial_slices
    for n in range(1, 100_000):  # every length up to 6 s
        assert partial_slices(n) == theirs_slices(n, PARTIALS_PER_S, MIN_COVERAGE)[1], n
    speech = load_audio(shared / "media/audio/sample.wav")[8 * SAMPLE_RATE : 11 * SAMPLE_RATE + 77]
    wav = speech.astype(np.float32) / 32768
    dbfs = 20 * np.log10(np.sqrt(np.mean((wav * 32767.0) ** 2)) / 32767)
    for gain_db in (-20, TARGET_DBFS - dbfs - 0.5, 10):  # raised, raised by 0.5 dB, left as it is
        louder = (wav * 10 ** (gain_db / 20)).astype(np.float32)
        assert np.array_equal(normalize_volume(louder, TARGET_DBFS),
                              resemblyzer_audio.normalize_volume(louder, TARGET_DBFS, increase_only=True))
    embedder = config_backends(Config()).get("speaker_embedder")
    quiet = (speech * 0.1).astype(np.int16)
    theirs = voice_encoder().embed_utterance(resemblyzer_audio.normalize_volume(quiet / 32768.0, TARGET_DBFS, True))
    assert np.abs(embedder.embed([quiet])[0] - theirs).max() < 1e-4  # the whole clip: slices, mels, partials' mean
    mels = np.random.default_rng(0).random((5, 160, 40)).astype(np.float32) * 3
    with torch.inference_mode():
        expected = voice_encoder()(torch.from_numpy(mels)).numpy()
    assert np.abs(embedder.encoder(mels) - expected).max() < 1e-5
    assert np.abs(embedder.encoder(mels[:1]) - expected[:1]).max() < 1e-5


def test_voice_activity_agrees_with_the_reference_speech_regions(shared):
    audio = load_audio(shared / "media/audio/sample.wav")
    vad = config_backends(Config()).get("vad")
    found = mask_of(vad.speech(audio), len(audio))
    truth = np.zeros(len(audio), bool)
    for line in (shared / "media/audio/sample.rttm").read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        truth[round(start * SAMPLE_RATE) : round((start + duration) * SAMPLE_RATE)] = True
    frames = len(audio) // 160  # 10 ms frames, speech when at least half is
    as_frames = lambda m: m[: frames * 160].reshape(frames, 160).mean(axis=1) >= 0.5  # noqa: E731
    agreement = float((as_frames(found) == as_frames(truth)).mean())
    print(f"\nsilero VAD vs sample.rttm: {agreement:.1%} of 10 ms frames agree "
          f"(speech {as_frames(found).mean():.0%} found, {as_frames(truth).mean():.0%} in the RTTM)")
    assert agreement >= 0.85  # measured 98.8%
    assert not vad.speech(np.zeros(5 * SAMPLE_RATE, np.int16)).size  # silence has no speech


def test_silero_regions_are_silero_vads_own():
    """vidpipe's region rule (silero's, written without torch) against silero's function on
    probabilities with speech, silences long and short, and edges."""
    from silero_vad import get_speech_timestamps_from_probs

    from vidpipe.backends.silero import speech_regions

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        runs = np.repeat(rng.random(n // 4 + 1), rng.integers(1, 20, n // 4 + 1))[:n]  # flat stretches
        probs = np.clip(runs + rng.normal(0, 0.1, len(runs)), 0, 1).astype(np.float32).tolist()
        threshold = float(rng.choice([0.5, 0.3, 0.7]))
        length = len(probs) * 512 - int(rng.integers(0, 512))
        theirs = get_speech_timestamps_from_probs(probs, sampling_rate=SAMPLE_RATE, threshold=threshold,
                                                  audio_length_samples=length)
        assert speech_regions(probs, threshold, length) == [[r["start"], r["end"]] for r in theirs], trial


def test_silero_probabilities_are_silero_vads_own(shared):
    """The window loop written in NumPy gives silero's OnnxWrapper's probabilities, bit for bit."""
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    from vidpipe.backends.silero import SileroVad, model_path

    audio = load_audio(shared / "media/audio/sample.wav")[5 * SAMPLE_RATE : 12 * SAMPLE_RATE + 123]
    x = audio.astype(np.float32) / 32768
    ours = SileroVad().probabilities(x)
    theirs = OnnxWrapper(str(model_path()), force_onnx_cpu=True).audio_forward(torch.from_numpy(x)[None], SAMPLE_RATE)[0]
    assert len(ours) == len(theirs) == -(-len(x) // 512)
    assert np.array_equal(ours, theirs.numpy())
    assert 0.2 < (ours > 0.5).mean() < 0.95  # a real mix of speech and not
