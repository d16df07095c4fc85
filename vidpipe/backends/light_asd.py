"""Light-ASD active speaker detection (MIT): grey 112x112 face crops at 25 fps + 13-d MFCCs
at 100 fps → one speaking logit per frame (> 0: speaking). The network is in
`_light_asd_net` (torch, imported when the backend is built).

Inputs as upstream's Columbia_test.py makes them: MFCCs by python_speech_features
(numcep 13, 25 ms windows, 10 ms step) of the 16-bit samples; crops centred on the face box
with upstream's geometry (box side s = max(w, h), crop scale 0.4: a square of 1.4 s / 2
around the mouth region, 110-grey outside the picture), i.e. the centre 112x112 of the
224x224 resize, taken in one affine warp. Scores are upstream's ensemble: the backend GRU
runs over windows of 1, 2, 3, 4, 5 and 6 s (weights 3, 3, 2, 1, 1, 1, upstream's duration
set) and the logits are averaged. The convolutional front ends see the whole track once:
the visual one in chunks with enough temporal context (6 frames) to give exactly what one
pass would, so memory stays bounded on long clips.

On the CPU the three parts (visual front end, audio front end, GRUs + classifier) run in
ONNX Runtime, exported once per weights file into the user cache, so a run never imports
torch: the visual part is 2.5-3x faster than eager torch here (0.24-0.42 against 0.66-0.99 s
per second of face track at load 8, same outputs to 1e-6). On CUDA they stay in torch.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from vidpipe.backends._onnx import session_call
from vidpipe.backends._torch import exported_onnx, exported_or_torch, runs_on_cpu
from vidpipe.backends.base import ActiveSpeakerScorer, ModelStats
from vidpipe.registry import BackendContext, register

CROP = 112
CROP_SCALE = 0.4  # upstream cropScale
PAD_GREY = 110  # upstream pads pictures with this value
MFCC_PER_FRAME = 4  # 100 fps audio features per 25 fps video frame
DURATIONS = (1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6)  # upstream's window lengths (s), averaged
VISUAL_CONTEXT = 6  # frames each side that change a frame's visual embedding (_light_asd_net.VisualEncoder.CONTEXT)
CHUNK = 50  # frames per visual front-end input (+ 6 of context each side): 2 s, ~290 MB at most on the CPU
PARTS = {  # part: its module in _light_asd_net and example inputs (batch and time axes free)
    "visual": ("VisualFrontend", {"crops": np.zeros((1, 16, CROP, CROP), np.uint8)}),
    "audio": ("AudioFrontend", {"mfcc": np.zeros((1, 64, 13), np.float32)}),
    "classifier": ("Classifier", {"audio": np.zeros((1, 16, 128), np.float32), "visual": np.zeros((1, 16, 128), np.float32)}),
}


class LightAsdScorer(ActiveSpeakerScorer):
    fps = 25.0

    def __init__(self, path: Path, device: str = "auto", threads: int = 0, chunks_per_call: int | None = None) -> None:
        super().__init__()
        self.name = "light_asd"
        self.weight_files = [Path(path)]
        on_cpu = runs_on_cpu(device)
        # Bigger batches only pay on a GPU; on the CPU they only hold more activations.
        self.chunks_per_call = chunks_per_call or (1 if on_cpu else 8)
        # Each part takes and gives arrays: ONNX Runtime sessions on the CPU, torch on CUDA.
        # The torch network is loaded once, and only where a part needs it (an export, CUDA).
        net = functools.cache(lambda: self._load(Path(path)))
        self.visual_frontend, self.audio_frontend, self.classifier = (
            exported_or_torch(self.name, f"{part} part", device,
                              functools.partial(self._onnx_part, net, part, threads if part == "visual" else 1),
                              functools.partial(self._module, net, part))
            for part in PARTS)
        # The first inference starts the thread pools: not the first clip's cost. One frame
        # is enough for that (a whole chunk was 0.5 CPU-s of every run's start-up, clips or not).
        self.score([(np.zeros(640, np.int16), np.zeros((1, CROP, CROP), np.uint8))])
        self.stats = ModelStats()  # count the clips' calls only

    @staticmethod
    def _load(weights: Path):
        import torch

        from vidpipe.backends._light_asd_net import LightASD

        return LightASD.from_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    @staticmethod
    def _module(net: Callable, part: str):
        """`part` of the network `net()` as a module of its own (`_light_asd_net`)."""
        from vidpipe.backends import _light_asd_net

        return getattr(_light_asd_net, PARTS[part][0])(net())

    def _onnx_part(self, net: Callable, part: str, threads: int) -> Callable:
        """`part` in ONNX Runtime on `threads` threads: the visual one on the run's, the small
        audio net and the recurrent classifier on one (their steps are small products that
        threads cannot split usefully; see Ge2eEmbedder)."""
        inputs = PARTS[part][1]

        def export():
            import torch

            return self._module(net, part), tuple(torch.from_numpy(x) for x in inputs.values())

        code = (Path(__file__), Path(__file__).with_name("_light_asd_net.py"))
        onnx_file = exported_onnx(self.weight_files[0], part, export, code, input_names=list(inputs), output_names=["out"],
                                  dynamic_axes={name: {0: "batch", 1: "frames"} for name in inputs})
        return session_call(onnx_file, inputs, "cpu", threads)

    def crop(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in box)
        s = max(x2 - x1, y2 - y1) / 2  # upstream's half side
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        side = 2 * s * (1 + CROP_SCALE)  # upstream's crop: rows cy - s … cy + s(1 + 2cs), same width
        k = side / (2 * CROP)  # source pixels per pixel of its 224x224 resize
        # The centre 112x112 of that resize (cv2.resize's half-pixel centres), in one warp.
        ox, oy = cx - side / 2, cy - s
        m = np.array([[k, 0, ox + (CROP / 2 + 0.5) * k - 0.5], [0, k, oy + (CROP / 2 + 0.5) * k - 0.5]], np.float64)
        return cv2.warpAffine(gray, m, (CROP, CROP), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=PAD_GREY)

    @staticmethod
    def mfcc(samples: np.ndarray, frames: int) -> np.ndarray:
        """(4 × frames, 13) MFCCs of int16 samples (zero-padded when short)."""
        import python_speech_features

        need = frames * 640 + 240  # the last window of the last frame ends here
        x = np.asarray(samples, np.float64).reshape(-1)
        if len(x) < need:
            x = np.pad(x, (0, need - len(x)))
        return python_speech_features.mfcc(x, 16000, numcep=13, winlen=0.025, winstep=0.010)[: frames * MFCC_PER_FRAME]

    def _visual(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Visual embeddings (T, 128) of each track, chunked with temporal context, chunks of
        equal length batched."""
        ctx = VISUAL_CONTEXT
        pieces = []  # (track, first real frame, input start, input end)
        for i, c in enumerate(crops):
            for a in range(0, len(c), CHUNK):
                pieces.append((i, a, max(0, a - ctx), min(len(c), a + CHUNK + ctx)))
        out = [np.zeros((len(c), 128), np.float32) for c in crops]
        by_length = Counter(e - s for _, _, s, e in pieces)
        for length in by_length:
            group = [p for p in pieces if p[3] - p[2] == length]
            for g in range(0, len(group), self.chunks_per_call):
                batch = group[g : g + self.chunks_per_call]
                x = np.stack([crops[i][s:e] for i, _, s, e in batch])
                emb = self.timed(lambda: self.visual_frontend(x), len(batch) * length)
                for (i, a, s, e), row in zip(batch, emb):
                    b = min(len(crops[i]), a + CHUNK)
                    out[i][a:b] = row[a - s : b - s]
        return out

    def _logits(self, audio: np.ndarray, visual: np.ndarray) -> np.ndarray:
        """Upstream's ensemble over window lengths for one track: (T,) logits."""
        n = len(visual)
        total = np.zeros(n, np.float32)
        for seconds, weight in Counter(DURATIONS).items():
            w = int(seconds * self.fps)
            full = n // w * w
            parts = []
            if full:
                parts.append(self.classifier(audio[:full].reshape(-1, w, 128), visual[:full].reshape(-1, w, 128)).reshape(-1))
            if full < n:
                parts.append(self.classifier(audio[None, full:], visual[None, full:]).reshape(-1))
            total += weight * np.concatenate(parts)
        return total / np.float32(len(DURATIONS))

    def score(self, tracks: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        crops = [np.asarray(c, np.uint8) for _, c in tracks]
        visual = self._visual(crops)
        out = []
        for (samples, c), v in zip(tracks, visual):
            if not len(c):
                out.append(np.zeros(0, np.float32))
                continue
            mfcc = self.mfcc(samples, len(c)).astype(np.float32)
            a = self.timed(lambda: self.audio_frontend(mfcc[None])[0], len(c))
            out.append(self.timed(lambda: self._logits(a, v), len(c)))
        return out


@register("active_speaker", "light_asd", auto=0, summary="Light-ASD (asd.weights: light_asd_talkset, light_asd_ava)")
def _light_asd(ctx: BackendContext) -> LightAsdScorer:
    return LightAsdScorer(ctx.weights(ctx.options.weights), ctx.device, ctx.threads)
