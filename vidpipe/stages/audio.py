"""Audio: a speaker embedding of each clip with speech (table `audio`).

Over the frames where the major character speaks (the asd stage) when they add up to
`min_major_speech_s`, otherwise over all the clip's speech; `embedded_over` says which.
Pauses shorter than `max_pause_s` stay in (speaker encoders are trained on natural speech).
The embedder is the configured `speaker_embedder`: GE2E (resemblyzer) by default, or a
spectrogram model of the user's (`embedder = "spectrogram"`, `embedder_model = FILE`) fed
the paper's front end (iQIYI-VID §5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vidpipe.active_speaker import SpeakingScores
from vidpipe.audio import SAMPLE_RATE, ClipAudio, bridge, mask_of
from vidpipe.pipeline.stage import F32_LIST, ClipContext, Stage, StageResult, register_stage


@dataclass
class AudioConfig:
    embedder: str = "auto"  # speaker_embedder backend: auto | resemblyzer | spectrogram
    embedder_model: str | None = None  # ONNX or TorchScript file for the spectrogram embedder
    spectrogram_onesided: bool = False  # spectrogram embedder: 257 bins instead of VoxCeleb's 512
    batch_size: int = 64  # partial utterances / segments per embedder call
    max_pause_s: float = 0.5  # pauses shorter than this stay in the embedded speech
    min_major_speech_s: float = 1.0  # embed over the major character's speech when there is this much


def speaking_samples(scores: SpeakingScores, audio: ClipAudio) -> np.ndarray:
    """(n_samples,) bool: the samples heard during frames where the face speaks."""
    t = audio.start_s + np.arange(len(audio.samples)) / SAMPLE_RATE
    frame = np.searchsorted(scores.track.times, t + 1e-9, side="right") - 1
    return scores.speaking[np.clip(frame, 0, len(scores.logits) - 1)]


@register_stage
class AudioStage(Stage):
    name = "audio"
    config = AudioConfig
    order = 60.0
    requires = ("speech",)
    uses = ("asd",)  # embeds over the major character's speech when asd ran
    backends = {"embedder": "speaker_embedder"}
    tables = {
        "audio": pa.schema([
            pa.field("clip_id", pa.string()),
            pa.field("video_id", pa.string()),
            pa.field("speech_ratio", pa.float32()),
            pa.field("major_speaking", pa.float32()),  # null without the asd stage or a major face
            pa.field("voice_is_major", pa.bool_()),
            pa.field("embedding", F32_LIST),  # L2-normalised
            pa.field("embedded_over", pa.string()),  # 'major_speech' | 'speech'
            pa.field("speech_s", pa.float32()),  # seconds of audio embedded
            pa.field("backend", pa.string()),
        ])
    }

    def process(self, ctx: ClipContext) -> StageResult:
        audio: ClipAudio | None = ctx.records.get("speech")
        if audio is None or not len(audio.speech):
            return StageResult()
        n, o = len(audio.samples), self.options
        speech = mask_of(bridge(audio.speech, round(o.max_pause_s * SAMPLE_RATE)), n)
        chosen, over = speech, "speech"
        scores: SpeakingScores | None = ctx.records.get("asd")
        if scores is not None and len(scores.logits):
            major = speech & speaking_samples(scores, audio)
            if major.sum() >= o.min_major_speech_s * SAMPLE_RATE:
                chosen, over = major, "major_speech"
        embedder = self.models["embedder"]
        embedding = embedder.embed([audio.samples[chosen]])[0]
        row = {
            "clip_id": ctx.clip.clip_id,
            "video_id": ctx.clip.video_id,
            "speech_ratio": audio.speech_ratio,
            "major_speaking": ctx.fields.get("major_speaking"),
            "voice_is_major": ctx.fields.get("voice_is_major"),
            "embedding": embedding.tolist(),
            "embedded_over": over,
            "speech_s": chosen.sum() / SAMPLE_RATE,
            "backend": embedder.name,
        }
        return StageResult(rows={"audio": [row]})
