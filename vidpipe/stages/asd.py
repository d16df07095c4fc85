"""Active speaker: does the major character speak the clip's speech?

The major character's face (the faces stage's `major` rows when the major-character rule
ran, else the largest face of each sampled frame) is followed through the clip at 25 fps
between its 4 fps detections, cropped from one decode of the clip's range, and scored
against the clip's audio by the active-speaker backend (Light-ASD). `major_speaking` is the
fraction of the clip's speech frames (40 ms, at least half speech) where the major
character speaks (followed, logit > 0); `voice_is_major` is major_speaking >=
`voice_is_major_min` (0.5: the voice is the major character's for most of the speech).
Measured on the shared media: the singing performer's medium shot gives 1.00; the shot
before it, a man in profile while the song goes on, 0.42; a still photo under someone
else's speech 0.00 (70 of 71 photos read as silent). Only frames within `context_s` of
speech are scored. Clips without speech or without a major face record nulls and run no
network. The per-frame scores go on to the audio stage (`SpeakingScores` record).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.ndimage import binary_dilation

from vidpipe.active_speaker import crop_tracks, follow, grid_times, score_tracks
from vidpipe.audio import SAMPLE_RATE, ClipAudio
from vidpipe.backends.base import FACE, HEAD
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, register_stage


@dataclass
class AsdConfig:
    model: str = "auto"  # active_speaker backend: auto | light_asd
    weights: str = "light_asd_talkset"  # light_asd_talkset (TalkSet fine-tuned) | light_asd_ava
    max_gap_s: float = 1.0  # the face is not followed across detection gaps longer than this
    smooth_frames: int = 13  # median over this many 25 fps boxes (0.5 s, upstream Light-ASD's): steady crops
    voice_is_major_min: float = 0.5  # major_speaking at or above this: the voice is the major character's
    context_s: float = 0.5  # frames this close to speech are scored too (the model's temporal context)


def major_face(ctx: ClipContext) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, boxes in source pixels) of the major character's face in the sampled frames:
    the faces stage's `major` rows when the major-character rule ran, else the largest face
    of each frame; None without faces."""
    faces = ctx.found.of_kind(FACE)
    if HEAD in ctx.searched and "major" in faces.data:
        faces = faces[faces.data["major"].astype(bool)]
    else:
        order = np.lexsort((-faces.area, faces.frame))  # by frame, largest first
        faces = faces[order[np.unique(faces.frame[order], return_index=True)[1]]]
    if not len(faces):
        return None
    times = np.array([ctx.frames[f].time_s for f in faces.frame])
    scale = np.array([ctx.frames[f].scale for f in faces.frame], np.float32)
    return times, faces.scaled(scale)


def speech_frames(audio: ClipAudio, n: int, fps: float) -> np.ndarray:
    """(n,) bool: frames of 1/fps s whose samples are at least half speech."""
    per = SAMPLE_RATE / fps
    mask = audio.speech_mask()
    edges = np.minimum(np.round(np.arange(n + 1) * per).astype(int), len(mask))
    counts = np.add.reduceat(np.r_[mask, False].astype(np.int32), edges[:-1]) if n else np.zeros(0)
    counts = np.where(edges[1:] > edges[:-1], counts, 0)
    return counts >= per / 2


@register_stage
class AsdStage(Stage):
    name = "asd"
    config = AsdConfig
    order = 55.0
    provides = ("asd",)  # per-frame speaking scores (SpeakingScores)
    requires = ("speech",)
    uses = ("faces",)  # the major character's face: none without a stage that finds faces
    backends = {"model": "active_speaker"}
    clip_columns = (
        pa.field("major_speaking", pa.float32()),  # fraction of speech frames where the major character speaks
        pa.field("voice_is_major", pa.bool_()),  # major_speaking >= asd.voice_is_major_min
    )

    def process(self, ctx: ClipContext) -> StageResult:
        nothing = StageResult(fields=self.empty_fields())
        audio: ClipAudio | None = ctx.records.get("speech")
        face = major_face(ctx)
        if audio is None or face is None:
            return nothing
        scorer, o = self.models["model"], self.options
        grid = grid_times(ctx.clip.start_s, ctx.clip.end_s, scorer.fps)
        period = 1.0 / self.settings.sampling.fps
        speech = speech_frames(audio, len(grid), scorer.fps)
        track = follow(*face, grid, o.max_gap_s, period, o.smooth_frames)
        # Only speech frames count; frames far from any are not scored (or even cropped).
        near = binary_dilation(speech, iterations=max(1, round(o.context_s * scorer.fps))) if speech.any() else speech
        track.boxes[~near] = np.nan
        if not track.followed.any():
            return nothing
        crops = crop_tracks(ctx.video, [track], scorer, self.settings.run.threads)
        scores = score_tracks(scorer, audio.samples, [track], crops)[0]
        major = float(scores.speaking[speech].mean())
        return StageResult(fields={"major_speaking": major, "voice_is_major": major >= o.voice_is_major_min},
                           record=scores)
