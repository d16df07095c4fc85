"""Silero VAD: speech regions in 16 kHz audio; the model ships in the silero-vad wheel.

Its ONNX file through onnxruntime: 9 ms per audio second here, against 350 ms for the
TorchScript file in the same wheel. A tiny recurrent net fed 32 ms windows one after
another gains nothing from a GPU, so it runs on the CPU whatever `--device` says.
Regions are silero's `get_speech_timestamps` defaults (threshold 0.5, speech >= 250 ms,
silences >= 100 ms split, 30 ms padding): 98.5% frame agreement with sample.rttm.

The window loop (silero's `OnnxWrapper.audio_forward`) and the regions
(`get_speech_timestamps_from_probs` without a longest-speech limit) are written here in
NumPy: the `silero_vad` package imports torch, 0.8 s of every run's start-up for a few
array copies. tests/test_audio_speaker.py holds both to silero's own functions, equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidpipe.backends._onnx import session
from vidpipe.backends.base import VoiceActivityDetector
from vidpipe.records import SAMPLE_RATE, to_float
from vidpipe.registry import BackendContext, register
from vidpipe.weights import package_dir

MODEL_FILE = "silero_vad.onnx"
WINDOW, CONTEXT = 512, 64  # samples per step at 16 kHz, and the previous step's tail each step sees
MIN_SPEECH_MS, MIN_SILENCE_MS, PAD_MS = 250, 100, 30  # get_speech_timestamps' defaults


def model_path() -> Path:
    """silero_vad.onnx inside the installed wheel."""
    return package_dir("silero_vad", "silero-vad") / "data" / MODEL_FILE


def speech_regions(probs, threshold: float, n_samples: int) -> list[list[int]]:
    """[start, end) samples of speech from one probability per 512-sample window: silero's
    hysteresis (speech from `threshold`, silence below it - 0.15), short silences bridged,
    short speech dropped, 30 ms of padding shared with a close neighbour."""
    neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = SAMPLE_RATE * MIN_SPEECH_MS / 1000
    min_silence = SAMPLE_RATE * MIN_SILENCE_MS / 1000
    pad = SAMPLE_RATE * PAD_MS / 1000
    regions: list[list[int]] = []
    start, silence_from = None, 0
    for i, p in enumerate(probs):
        at = WINDOW * i
        if p >= threshold:
            silence_from = 0
            if start is None:
                start = at
                continue
        if p < neg_threshold and start is not None:
            silence_from = silence_from or at
            if at - silence_from < min_silence:
                continue
            if silence_from - start > min_speech:
                regions.append([start, silence_from])
            start, silence_from = None, 0
    if start is not None and n_samples - start > min_speech:
        regions.append([start, n_samples])
    for i, region in enumerate(regions):
        if i == 0:
            region[0] = int(max(0, region[0] - pad))
        if i == len(regions) - 1:
            region[1] = int(min(n_samples, region[1] + pad))
            continue
        gap = regions[i + 1][0] - region[1]
        if gap < 2 * pad:
            region[1] += int(gap // 2)
            regions[i + 1][0] = int(max(0, regions[i + 1][0] - gap // 2))
        else:
            region[1] = int(min(n_samples, region[1] + pad))
            regions[i + 1][0] = int(max(0, regions[i + 1][0] - pad))
    return regions


class SileroVad(VoiceActivityDetector):
    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        path = model_path()
        self.session = session(path, "cpu", 1)  # one thread, as silero's own wrapper
        self.name = "silero"
        self.threshold = threshold
        self.weight_files = [path]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """One speech probability per 512-sample window (the last one zero-padded)."""
        x = np.pad(x, (0, -len(x) % WINDOW))
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(CONTEXT, np.float32)
        sr = np.array(SAMPLE_RATE, np.int64)
        out = np.empty(len(x) // WINDOW, np.float32)
        for i in range(len(out)):
            window = np.concatenate([context, x[i * WINDOW : (i + 1) * WINDOW]])[None]
            prob, state = self.session.run(None, {"input": window, "state": state, "sr": sr})
            out[i] = prob.reshape(-1)[0]
            context = window[0, -CONTEXT:]
        return out

    def speech(self, samples: np.ndarray) -> np.ndarray:
        x = to_float(np.asarray(samples).reshape(-1))
        if len(x) < WINDOW:  # shorter than one VAD window
            return np.zeros((0, 2), np.int64)
        probs = self.timed(lambda: self.probabilities(x).tolist(), 1)
        return np.array(speech_regions(probs, self.threshold, len(x)), np.int64).reshape(-1, 2)


@register("vad", "silero", auto=0, summary="Silero VAD (ONNX, from the silero-vad wheel)")
def _silero(ctx: BackendContext) -> SileroVad:
    return SileroVad(getattr(ctx.options, "vad_threshold", 0.5))
