"""Audio: a clip's sound as 16 kHz mono 16-bit, the paper's spectrogram, speaker embeddings.

iQIYI-VID §5.1: "The audio from the video clips is converted to a single-channel, 16-bit
signal with a 16kHz sampling rate." `AudioReader` reads it from the video file itself
(PyAV, FFmpeg's resampler) on the presentation timeline, so a clip's audio is the sound
heard with its frames even where the streams start at different times
(short_hamilton_clip.mp4: audio at 0 s, video at 0.844 s). It keeps its own container open
and reads forward clip by clip, holding only the samples not yet asked for: a long video's
audio is never in memory.

`spectrogram` (defined with the backend that feeds it, `backends/spectrogram_model.py`) is
the paper's front end for spectrogram-based speaker models (the paper's ResNet34 and any
model a user registers); the default embedder (GE2E, resemblyzer) brings its own mel front
end. Torch is imported inside functions: listing stages stays fast.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import av
import numpy as np

from vidpipe.backends.base import SpeakerEmbedder, VoiceActivityDetector  # noqa: F401  (re-exported)
from vidpipe.backends.spectrogram_model import spectrogram  # noqa: F401  (the paper's front end, re-exported)
from vidpipe.records import INT16_SCALE, SAMPLE_RATE, ClipAudio, mask_of, to_float  # noqa: F401  (the audio stages' records)

if TYPE_CHECKING:

    from vidpipe.config import Config

log = logging.getLogger("vidpipe")



class AudioError(Exception):
    """Audio that cannot be read (one-line message)."""


class AudioReader:
    """A file's first audio stream as 16 kHz mono int16, read forward in time ranges.

    `read(start_s, end_s)` returns the samples of [start_s, end_s) on the presentation
    timeline (seconds after the container start): sample i is heard at start_s + i/16000.
    Ranges asked for in time order cost one decode of the stream; a range behind what was
    read, or more than `seek_gap_s` ahead of it, is reached by seeking. Where there is no
    sound (before the stream starts, after it ends, no audio stream) the samples are 0.
    """

    def __init__(self, path: str | os.PathLike[str], start_time_s: float | None = None, seek_gap_s: float = 10.0) -> None:
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise AudioError(f"{self.path.name}: cannot open: {e.strerror or e}") from None
        self._stream = self._container.streams.audio[0] if self._container.streams.audio else None
        # Time 0 of the presentation timeline: VideoInfo.start_time_s when the caller has it,
        # else as `probe` finds it (the earliest stream's start).
        starts = [float(st.start_time * st.time_base) for st in (*self._container.streams.video, *self._container.streams.audio)
                  if st.start_time is not None and st.time_base]
        self.start_time_s = start_time_s if start_time_s is not None else min(starts, default=0.0)
        self._gap = int(seek_gap_s * SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []  # decoded samples not yet consumed, contiguous
        self._held_from = 0  # timeline index of the first held sample
        self._decoded_to = 0  # timeline index after the last decoded sample
        self._valid_from = -math.inf  # samples before this are unknown in the current decode run
        self._placed = True  # False right after a seek: the next chunk sets the position
        self._eof = False
        self._source: Iterator[tuple[int | None, np.ndarray]] | None = self._decode() if self._stream else None

    @property
    def has_audio(self) -> bool:
        return self._stream is not None

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self._container.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, start_s: float, end_s: float | None = None) -> np.ndarray:
        """int16 samples of [start_s, end_s) (to the end of the stream when end_s is None)."""
        a = round(start_s * SAMPLE_RATE)
        b = math.inf if end_s is None else round(end_s * SAMPLE_RATE)
        if self._source is None:
            return np.zeros(0 if end_s is None else max(0, b - a), np.int16)
        if a < max(self._held_from, self._valid_from) or a > self._decoded_to + self._gap:
            self._seek(a)
        self._drop_before(a)
        while self._decoded_to < b and not self._eof:
            self._pull()
        end = self._decoded_to if end_s is None else b
        out = np.zeros(max(0, end - a), np.int16)
        held = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        lo, hi = max(a, self._held_from), min(end, self._held_from + len(held))
        if hi > lo:
            out[lo - a : hi - a] = held[lo - self._held_from : hi - self._held_from]
        return out

    # -- internals -----------------------------------------------------------------------
    def _decode(self) -> Iterator[tuple[int | None, np.ndarray]]:
        """(timeline index of the first sample or None, int16 samples), in stream order."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        offset = round(self.start_time_s * SAMPLE_RATE)

        def out(frames) -> Iterator[tuple[int | None, np.ndarray]]:
            for f in frames:
                yield (None if f.pts is None else f.pts - offset), f.to_ndarray().reshape(-1)

        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # a damaged container: what was read stays
                log.warning("%s: audio demuxing stopped: %s", self.path.name, e.strerror or e)
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # one undecodable packet is a few ms of silence
            for frame in frames:
                yield from out(resampler.resample(frame))
        yield from out(resampler.resample(None))

    def _pull(self) -> None:
        try:
            start, samples = next(self._source)
        except StopIteration:
            self._eof = True
            return
        if not self._placed:  # the first chunk after a seek says where decoding landed
            self._placed = True
            self._held_from = self._decoded_to = self._valid_from if start is None else start
        elif start is None or abs(start - self._decoded_to) <= 32:  # contiguous, up to rounding
            start = self._decoded_to
        if start > self._decoded_to:  # a hole in the stream: silence
            self._chunks.append(np.zeros(start - self._decoded_to, np.int16))
        self._chunks.append(samples[max(0, self._decoded_to - start) :])  # an overlap keeps what was there
        self._decoded_to = max(self._decoded_to, start + len(samples))

    def _drop_before(self, a: int) -> None:
        while self._chunks and self._held_from + len(self._chunks[0]) <= a:
            self._held_from += len(self._chunks.pop(0))
        if self._chunks and self._held_from < a:
            self._chunks[0] = self._chunks[0][a - self._held_from :]
            self._held_from = a

    def _seek(self, a: int) -> None:
        target = max(0, a - SAMPLE_RATE // 10)  # 0.1 s early: the decoder settles after a seek
        self._source.close()
        self._chunks, self._eof = [], False
        try:
            pts = int((target / SAMPLE_RATE + self.start_time_s) / self._stream.time_base)
            self._container.seek(pts, stream=self._stream, backward=True)
            self._placed, self._valid_from = False, target
            self._held_from = self._decoded_to = target
        except av.error.FFmpegError:  # not seekable: decode again from the start
            self._container.seek(0)
            self._placed, self._valid_from = True, -math.inf
            self._held_from = self._decoded_to = 0
        self._source = self._decode()


def load_audio(path: str | os.PathLike[str], start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """A file's audio (any FFmpeg format) as 16 kHz mono int16, on its presentation timeline."""
    with AudioReader(path) as reader:
        if not reader.has_audio:
            raise AudioError(f"{Path(path).name}: no audio stream")
        return reader.read(start_s, end_s)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono samples at `rate` as 16 kHz int16, through FFmpeg's resampler."""
    x = to_float(np.asarray(samples).reshape(-1))
    if rate == SAMPLE_RATE:
        return np.clip(np.round(x * INT16_SCALE), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out) if out else np.zeros(0, np.int16)


# ---------------------------------------------------------------- the paper's front end

def bridge(ranges: np.ndarray, max_gap: int) -> np.ndarray:
    """Sample ranges with the gaps shorter than `max_gap` samples filled: the pauses of
    natural speech, which speaker encoders are trained with (GE2E on LibriSpeech: EER 1.8%
    over VAD-spliced speech, 0.4% with pauses < 0.5 s kept)."""
    out: list[list[int]] = []
    for a, b in np.asarray(ranges, np.int64).reshape(-1, 2):
        if out and a - out[-1][1] < max_gap:
            out[-1][1] = max(out[-1][1], int(b))
        else:
            out.append([int(a), int(b)])
    return np.array(out, np.int64).reshape(-1, 2)


# ---------------------------------------------------------------- Python API

def _as_samples(item, sample_rate: int | None) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        return load_audio(item)
    if sample_rate is None:
        raise ValueError("an audio array needs its sample_rate")
    return resample(np.asarray(item), sample_rate)


def embed_speech(audio, sample_rate: int | None = None, config: "Config | None" = None,
                 speech_only: bool = True) -> np.ndarray:
    """Speaker embedding(s) of audio files or arrays, as `vidpipe run` computes them.

    `audio`: a path, a mono array (give its `sample_rate`), or a list of them (embedded in
    one batch; returns (N, dim), a single input returns (dim,)). With `speech_only` the
    voice activity detector keeps the speech and its short pauses (audio without speech
    gives a NaN row). Backends and options come from `config` (sections `speech`, `audio`).
    """
    from vidpipe.config import Config
    from vidpipe.pipeline.runner import config_backends

    single = not isinstance(audio, (list, tuple))
    items = [audio] if single else list(audio)
    cfg = config or Config()
    backends = config_backends(cfg)
    clips = [_as_samples(item, sample_rate) for item in items]
    if speech_only:
        vad, gap = backends.get("vad"), round(cfg.section("audio").max_pause_s * SAMPLE_RATE)
        clips = [c[mask_of(bridge(vad.speech(c), gap), len(c))] for c in clips]
    embeddings = backends.get("speaker_embedder").embed(clips)
    return embeddings[0] if single else embeddings
