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
from typing import Sequence

import numpy as np

from vidpipe.audio import SpeakerEmbedder, spectrogram
from vidpipe.backends._onnx import session
from vidpipe.backends._torch import torch_device
from vidpipe.config import ConfigError
from vidpipe.registry import BackendContext, register

SEGMENT_FRAMES = 300  # 3 s at 10 ms
SEGMENT_STEP = 150


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
