"""GE2E speaker encoder (Wan et al. 2018) from the resemblyzer wheel: 256-d, weights inside.

resemblyzer's own recipe, batched over clips: each clip's speech is raised to -30 dBFS
(never lowered), cut into 1.6 s partial utterances (1.3 per second, the last kept when
it is 75% covered), every partial of every clip goes through the 3-layer LSTM in one
batch, and a clip's embedding is the L2-normalised mean of its partials. Silences are
already gone (the VAD chose the speech), so resemblyzer's webrtcvad trimming is not used.
Measured on the shared LibriSpeech speakers: EER 0.4% (DESIGN.md).

The mel spectrogram is resemblyzer's (`wav_to_mel_spectrogram`: librosa's melspectrogram,
power 2, 25 ms Hann windows every 10 ms, centred, 40 Slaney mels) computed here in NumPy:
librosa's first call imports numba and scipy.signal, 3-5 s in every process (tested equal).
resemblyzer imports webrtcvad, which imports pkg_resources (setuptools < 82 keeps it; the
pin is in pyproject.toml); its deprecation warning is silenced here.

On the CPU the encoder runs in ONNX Runtime, exported once from resemblyzer's VoiceEncoder
into the user cache, and its volume normalisation and partial slicing are written here:
resemblyzer imports torch, 0.8 s of every run's start-up. tests/test_audio_speaker.py holds
them to resemblyzer's own. On CUDA the encoder stays in torch.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vidpipe.backends._onnx import session_call
from vidpipe.backends._torch import exported_onnx, exported_or_torch
from vidpipe.backends.base import ModelStats, SpeakerEmbedder
from vidpipe.records import SAMPLE_RATE, to_float
from vidpipe.registry import BackendContext, register
from vidpipe.weights import package_dir

PARTIALS_PER_S = 1.3  # resemblyzer's embed_utterance defaults
MIN_COVERAGE = 0.75
TARGET_DBFS = -30  # resemblyzer.hparams.audio_norm_target_dBFS
N_FFT, HOP, N_MELS = 400, 160, 40  # resemblyzer.hparams: 25 ms windows, 10 ms steps, 40 mels
PARTIAL_FRAMES = 160  # resemblyzer.hparams.partials_n_frames: 1.6 s
INT16_MAX = 2**15 - 1


@functools.cache
def slaney_mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters on Slaney's mel scale, area-normalised:
    librosa.filters.mel's defaults (htk=False, norm="slaney", fmin 0, fmax sr / 2)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def to_mel(hz):
        hz = np.asarray(hz, np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)

    def to_hz(mel):
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), n_mels + 2))
    ramps = edges[:, None] - np.linspace(0, sr / 2, 1 + n_fft // 2)[None, :]
    fdiff = np.diff(edges)
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) float32: resemblyzer's wav_to_mel_spectrogram of float samples."""
    frames = sliding_window_view(np.pad(np.asarray(wav, np.float32), N_FFT // 2), N_FFT)[::HOP]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1).astype(np.complex64)) ** 2
    return (power @ slaney_mel_filters().T).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float) -> np.ndarray:
    """resemblyzer.audio.normalize_volume(wav, target_dbfs, increase_only=True)."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else wav * (10 ** (change / 20))


def partial_slices(n_samples: int, rate: float = PARTIALS_PER_S, min_coverage: float = MIN_COVERAGE) -> list[slice]:
    """Mel frames of each 1.6 s partial utterance: resemblyzer's
    VoiceEncoder.compute_partial_slices (its mel slices; the samples are 160 per frame)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / rate) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    coverage = (n_samples - slices[-1].start * HOP) / (PARTIAL_FRAMES * HOP)
    return slices[:-1] if coverage < min_coverage and len(slices) > 1 else slices


def import_resemblyzer():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import resemblyzer
        from resemblyzer import audio, voice_encoder
    return resemblyzer, audio, voice_encoder


def voice_encoder():
    """resemblyzer's VoiceEncoder on the CPU (`torch_call` moves it where it runs)."""
    return import_resemblyzer()[2].VoiceEncoder(device="cpu", verbose=False).eval()


class Ge2eEmbedder(SpeakerEmbedder):
    def __init__(self, device: str = "auto", batch_size: int = 64) -> None:
        super().__init__()
        self.name = "resemblyzer"
        self.dim = 256
        self.batch_size = max(1, int(batch_size))
        self.weight_files = [package_dir("resemblyzer", "resemblyzer") / "pretrained.pt"]
        # (n, 160, 40) mels → (n, 256) embeddings: ONNX Runtime on the CPU, torch on CUDA.
        self.encoder = exported_or_torch(self.name, "encoder", device, self._onnx_encoder, voice_encoder)
        # The first LSTM call allocates: pay that here, once, not on the first clip.
        self.embed([np.full(SAMPLE_RATE, 100, np.int16)])
        self.stats = ModelStats()  # count the clips' calls only

    def _onnx_encoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """(n, 160, 40) mels → (n, 256) in ONNX Runtime on one thread: each LSTM step is a small
        matrix product that threads cannot split usefully, and their barriers collapse on busy
        cores (torch, 64 partials: 22-75 ms each on one thread, 340-640 ms on two, on this
        2-core machine at load 10)."""
        def export():
            import torch

            return voice_encoder(), (torch.zeros((2, PARTIAL_FRAMES, N_MELS)),)

        onnx_file = exported_onnx(self.weight_files[0], "encoder", export, (Path(__file__),), input_names=["mels"],
                                  output_names=["embedding"], dynamic_axes={"mels": {0: "batch", 1: "frames"}})
        return session_call(onnx_file, ["mels"], "cpu", 1)

    def partials(self, speech: np.ndarray) -> np.ndarray:
        """(n, 160, 40) mel spectrograms of the 1.6 s partial utterances of one clip."""
        wav = normalize_volume(to_float(speech), TARGET_DBFS)
        slices = partial_slices(len(wav))
        wav = np.pad(wav, (0, max(0, slices[-1].stop * HOP - len(wav))))
        mel = mel_spectrogram(wav)
        return np.stack([mel[s] for s in slices])

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        out = np.full((len(clips), self.dim), np.nan, np.float32)
        keep = [i for i, c in enumerate(clips) if np.any(c)]  # silence has no speaker
        if not keep:
            return out
        parts = [self.partials(np.asarray(clips[i]).reshape(-1)) for i in keep]
        mels = np.concatenate(parts)
        embeds = []
        for i in range(0, len(mels), self.batch_size):
            batch = mels[i : i + self.batch_size]
            embeds.append(self.timed(lambda: self.encoder(batch), len(batch)))
        partial = np.concatenate(embeds)
        ends = np.cumsum([len(p) for p in parts])
        for i, chunk in zip(keep, np.split(partial, ends[:-1])):
            mean = chunk.mean(axis=0)
            out[i] = mean / max(np.linalg.norm(mean), 1e-12)
        return out


@register("speaker_embedder", "resemblyzer", auto=0, summary="GE2E 256-d (weights in the resemblyzer wheel)")
def _ge2e(ctx: BackendContext) -> Ge2eEmbedder:
    return Ge2eEmbedder(ctx.device, getattr(ctx.options, "batch_size", 64))
