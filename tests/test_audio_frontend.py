"""The paper's spectrogram front end against a hand computation, and the spectrogram
speaker-embedder backend with user models (ONNX and TorchScript made here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidpipe.audio import SAMPLE_RATE, bridge, embed_speech, mask_of, spectrogram
from vidpipe.config import Config, ConfigError


def hand_spectrogram(x: np.ndarray, onesided: bool) -> np.ndarray:
    """iQIYI-VID §5.1 by hand: |FFT| of 25 ms periodic-Hamming frames every 10 ms, each
    centred in a 512-point block; each bin's mean over time subtracted; divided by 50."""
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = []
    for k in range(1 + (len(x) - 512) // 160):
        block = np.zeros(512)
        block[56:456] = x[k * 160 + 56 : k * 160 + 456] * window
        frames.append(np.abs(np.fft.fft(block)))
    spec = np.array(frames).T
    spec = spec[:257] if onesided else spec
    return (spec - spec.mean(axis=1, keepdims=True)) / 50.0


@pytest.fixture(scope="module")
def speechlike() -> np.ndarray:
    """1.3 s of a vowel-like harmonic sound with noise, as 16-bit samples."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 2 * t)
    x = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / SAMPLE_RATE) / h for h in range(1, 12))
    x = 0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))
    return np.round(x * 32767).astype(np.int16)


@pytest.mark.parametrize("onesided", [False, True])
def test_spectrogram_is_the_papers_front_end(speechlike, onesided):
    ours = spectrogram(speechlike, onesided=onesided).numpy()
    hand = hand_spectrogram(speechlike / 32768.0, onesided)
    assert ours.shape == hand.shape == (257 if onesided else 512, 1 + (len(speechlike) - 512) // 160)
    assert np.abs(ours - hand).max() < 1e-4 * np.abs(hand).max()
    assert np.abs(ours.mean(axis=1)).max() < 1e-5  # mean-subtracted per bin, not variance-normalised
    assert ours.std(axis=1).max() > 0.05


def test_pauses_shorter_than_the_limit_are_bridged():
    ranges = np.array([[0, 100], [150, 300], [1000, 1200]])
    assert bridge(ranges, 60).tolist() == [[0, 300], [1000, 1200]]
    assert bridge(ranges, 10).tolist() == ranges.tolist()
    assert mask_of(np.array([[2, 4]]), 6).tolist() == [False, False, True, True, False, False]


class SpectrumStats(torch.nn.Module):
    """A stand-in for a user's spectrogram model: a fixed projection of per-bin statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(512, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 512, T) -> (B, 16)
        return x.std(-1).squeeze(1) @ self.w


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    model = SpectrumStats().eval()
    torch.jit.script(model).save(str(d / "spk.pt"))
    example = torch.randn(2, 1, 512, 300)
    torch.onnx.export(model, (example,), str(d / "spk.onnx"), dynamo=False, input_names=["spec"],
                      dynamic_axes={"spec": {0: "batch"}})
    return d


def _config(model_path) -> Config:
    cfg = Config()
    cfg.set("audio.embedder", "spectrogram")
    cfg.set("audio.embedder_model", str(model_path))
    cfg.set("audio.batch_size", 3)
    return cfg


def test_a_user_spectrogram_model_embeds_clips_in_batches(user_models, speechlike):
    rng = np.random.default_rng(1)
    clips = [speechlike, rng.integers(-3000, 3000, 5 * SAMPLE_RATE).astype(np.int16), speechlike[: SAMPLE_RATE // 2]]
    by_file = {}
    for name in ("spk.pt", "spk.onnx"):
        together = embed_speech(clips, SAMPLE_RATE, _config(user_models / name), speech_only=False)
        alone = np.stack([embed_speech(c, SAMPLE_RATE, _config(user_models / name), speech_only=False) for c in clips])
        assert together.shape == (3, 16)
        assert np.linalg.norm(together, axis=1) == pytest.approx(1.0, abs=1e-5)
        assert np.abs(together - alone).max() < 1e-5  # batching over clips changes nothing
        by_file[name] = together
    assert np.abs(by_file["spk.pt"] - by_file["spk.onnx"]).max() < 1e-4
    # What the model saw: the paper's spectrogram of the clip.
    spec = spectrogram(speechlike).numpy()
    raw = SpectrumStats()(torch.from_numpy(np.tile(spec, (1, 3))[None, None, :, :300])).numpy()[0]
    assert by_file["spk.pt"][0] == pytest.approx(raw / np.linalg.norm(raw), abs=1e-5)
    # A 5 s clip: 3 s segments every 1.5 s, the last one ending at the clip's end; their mean.
    spec = torch.from_numpy(spectrogram(clips[1]).numpy())
    starts = [0, 150, spec.shape[1] - 300]
    raw = SpectrumStats()(torch.stack([spec[None, :, s : s + 300] for s in starts])).numpy().mean(axis=0)
    assert by_file["spk.pt"][1] == pytest.approx(raw / np.linalg.norm(raw), abs=1e-5)


def test_the_spectrogram_embedder_needs_a_model_file(tmp_path):
    cfg = Config()
    cfg.set("audio.embedder", "spectrogram")
    with pytest.raises(ConfigError, match="embedder_model"):
        embed_speech(np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE, cfg, speech_only=False)
    with pytest.raises(ConfigError, match="no such file"):
        embed_speech(np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE, _config(tmp_path / "none.onnx"), speech_only=False)
