"""A spectrogram-based speaker model of the user's (ONNX or TorchScript), as the paper's
ResNet34 (iQIYI-VID §5.1), fed the paper's front end (`vidpipe.audio.spectrogram`).

`audio.embedder = "spectrogram"`, `audio.embedder_model = FILE` (.onnx: ONNX Runtime;
anything else: torch.jit.load). The model takes (batch, 1, bins, frames) float32 and returns
(batch, dim). A clip's speech is cut into 3 s segments (300 frames, VoxCeleb's training
length [37]; 50% overlap, a shorter clip is one segment repeated to length) after the whole
clip's spectrogram is normalised, all segments of all clips go through in batches, and a
clip's embedding is the L2-normalised mean of its segments'.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vidpipe.backends._onnx import session
from vidpipe.backends._torch import torch_device
from vidpipe.backends.base import SpeakerEmbedder
from vidpipe.config import ConfigError
from vidpipe.records import to_float
from vidpipe.registry import BackendContext, register

if TYPE_CHECKING:
    import torch

SEGMENT_FRAMES = 300  # 3 s at 10 ms
SEGMENT_STEP = 150


# The paper gives no window; it follows VoxCeleb [37] (Nagrani et al. 2017): Hamming
# window of 25 ms, step 10 ms, 512-point FFT, i.e. "spectrograms of size 512 x 300 for 3
# seconds of speech" (the full FFT: 512 bins; `onesided` keeps the 257 distinct ones).
N_FFT, WIN_LENGTH, HOP_LENGTH = 512, 400, 160
SPECTROGRAM_DIVISOR = 50.0


def spectrogram(samples: np.ndarray, onesided: bool = False) -> "torch.Tensor":
    """(bins, frames) float32: |STFT| of 16 kHz samples (float in [-1, 1) or int16), each
    bin's mean over the utterance subtracted, divided by 50.0, no variance normalisation
    (iQIYI-VID §5.1). Frame k is a 25 ms periodic Hamming window centred in the 512-sample
    block that starts at k × 10 ms (torch.stft, center=False)."""
    import torch

    x = torch.from_numpy(to_float(np.asarray(samples).reshape(-1)))
    if len(x) < N_FFT:  # one frame at least
        x = torch.nn.functional.pad(x, (0, N_FFT - len(x)))
    spec = torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, window=torch.hamming_window(WIN_LENGTH),
                      center=False, onesided=onesided, return_complex=True).abs()
    return (spec - spec.mean(dim=1, keepdim=True)) / SPECTROGRAM_DIVISOR


def segments(spec: np.ndarray) -> np.ndarray:
    """(n, bins, 300) windows of a (bins, frames) spectrogram; short ones wrapped to length."""
    frames = spec.shape[1]
    if frames < SEGMENT_FRAMES:
        return np.tile(spec, (1, -(-SEGMENT_FRAMES // frames)))[None, :, :SEGMENT_FRAMES]
    starts = list(range(0, frames - SEGMENT_FRAMES + 1, SEGMENT_STEP))
    if starts[-1] + SEGMENT_FRAMES < frames:
        starts.append(frames - SEGMENT_FRAMES)
    return np.stack([spec[:, s : s + SEGMENT_FRAMES] for s in starts])


class SpectrogramEmbedder(SpeakerEmbedder):
    def __init__(self, path: Path, device: str = "auto", threads: int = 0, batch_size: int = 64,
                 onesided: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.onesided = onesided
        self.batch_size = max(1, int(batch_size))
        if self.path.suffix.lower() == ".onnx":
            self._session = session(self.path, device, threads)
            self._input = self._session.get_inputs()[0].name
            self._run = lambda x: self._session.run(None, {self._input: x})[0]
        else:
            import torch

            self.device = torch_device(device)
            model = torch.jit.load(str(self.path), map_location=self.device).eval()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

            self._run = run
        self.name = "spectrogram"
        self.weight_files = [self.path]
        probe = self._run(np.zeros((1, 1, 257 if onesided else 512, SEGMENT_FRAMES), np.float32))
        self.dim = int(np.asarray(probe).reshape(1, -1).shape[1])

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        out = np.full((len(clips), self.dim), np.nan, np.float32)
        keep = [i for i, c in enumerate(clips) if np.any(c)]  # silence has no speaker
        if not keep:
            return out
        parts = [segments(spectrogram(clips[i], self.onesided).numpy()) for i in keep]
        x = np.concatenate(parts)[:, None].astype(np.float32)
        embeds = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i : i + self.batch_size]
            embeds.append(np.asarray(self.timed(lambda: self._run(batch), len(batch))).reshape(len(batch), -1))
        ends = np.cumsum([len(p) for p in parts])
        for i, chunk in zip(keep, np.split(np.concatenate(embeds), ends[:-1])):
            mean = chunk.mean(axis=0)
            out[i] = mean / max(np.linalg.norm(mean), 1e-12)
        return out


@register("speaker_embedder", "spectrogram",
          summary="your spectrogram speaker model, ONNX or TorchScript (audio.embedder_model = FILE)")
def _spectrogram(ctx: BackendContext) -> SpectrogramEmbedder:
    o = ctx.options
    path = getattr(o, "embedder_model", None)
    if not path:
        raise ConfigError("the spectrogram speaker embedder needs audio.embedder_model = FILE (.onnx or TorchScript)")
    if not Path(path).is_file():
        raise ConfigError(f"audio.embedder_model: no such file {path}")
    return SpectrogramEmbedder(Path(path), ctx.device, ctx.threads, o.batch_size, o.spectrogram_onesided)
