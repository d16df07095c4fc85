"""Speech: each kept clip's audio (16 kHz mono 16-bit, the sound heard with its frames) and
where the speech is in it.

The paper fed all of a clip's audio to its speaker model (§6.4: "we did not use a voice
detection module to filter out non-speaking clips"); here a voice activity detector marks
the speech, `speech_ratio` says how much of the clip it fills, and the clip's audio goes on
to the active-speaker and speaker-embedding stages as a `ClipAudio` record. A clip with no
audio stream or a silent one records speech_ratio = 0 and hands nothing on.

The audio is read by a reader that keeps the video open and goes forward clip by clip
(clips come in time order), so no more than a clip's audio is held; the run's video decode
is left alone (`benchmarks/bench_audio.py` compares the two designs).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from vidpipe.audio import AudioReader, ClipAudio
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, register_stage


@dataclass
class SpeechConfig:
    vad: str = "auto"  # vad backend: auto | silero
    vad_threshold: float = 0.5  # speech probability above which a 32 ms window is speech (silero's default)


@register_stage
class SpeechStage(Stage):
    name = "speech"
    config = SpeechConfig
    order = 50.0
    provides = ("speech",)  # the clip's 16 kHz audio and where the speech is (ClipAudio)
    backends = {"vad": "vad"}
    clip_columns = (pa.field("speech_ratio", pa.float32()),)  # fraction of the clip that is speech

    def __init__(self, cfg, backends) -> None:
        super().__init__(cfg, backends)
        self._reader: AudioReader | None = None

    def reader(self, ctx: ClipContext) -> AudioReader:
        """The open reader of this clip's video (a new video closes the last one's)."""
        if self._reader is None or self._reader.path != ctx.video.path:
            if self._reader is not None:
                self._reader.close()
            self._reader = AudioReader(ctx.video.path, ctx.video.start_time_s)
        return self._reader

    def process(self, ctx: ClipContext) -> StageResult:
        if not ctx.video.has_audio:
            return StageResult(fields={"speech_ratio": 0.0})
        samples = self.reader(ctx).read(ctx.clip.start_s, ctx.clip.end_s)
        if not samples.any():  # digital silence: nothing to look for
            return StageResult(fields={"speech_ratio": 0.0})
        audio = ClipAudio(samples, ctx.clip.start_s, self.models["vad"].speech(samples))
        return StageResult(fields={"speech_ratio": audio.speech_ratio},
                           record=audio if len(audio.speech) else None)
