"""The speech, asd and audio stages through `vidpipe.run` on real media: the performer of
short_hamilton_clip.mp4 speaks his medium shot; a still photo under someone else's speech
is not the voice; files without audio, or with a silent track, give no speech and no error."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

import vidpipe
from vidpipe.audio import SAMPLE_RATE, embed_speech, load_audio
from vidpipe.config import Config

MEDIUM_SHOT_S = 3.58  # the performer, 3.58-7.88 s on the presentation timeline
AUDIENCE_SHOT_S = 7.88  # the audience, 7.88-10.02 s
SPEECH = "media/audio/librispeech_speakers/1688/1688-142285-0000.flac"


def still_video(path, image: np.ndarray, samples: np.ndarray, seconds: float = 5.0, fps: int = 25):
    """A video of one still picture (h264) over 16 kHz samples (AAC)."""
    h, w = image.shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.options = w, h, "yuv420p", {"preset": "ultrafast"}
        astream = out.add_stream("aac", rate=SAMPLE_RATE)
        picture = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        for i in range(int(seconds * fps)):
            picture.pts, picture.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(picture))
        out.mux(vs.encode(None))
        x = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
        x[: min(len(x), len(samples))] = samples[: len(x)] / 32768.0
        for s in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[s : s + 1024].reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, s
            out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
    return path


@pytest.fixture(scope="module")
def inputs(shared, tmp_path_factory):
    d = tmp_path_factory.mktemp("audio_inputs")
    # A photo framed as a video shot: 240 px high in a 640x360 picture. Over the 71 shared
    # photos framed so, Light-ASD found 1 "speaking" (70 not; mean logit -1.6).
    photo = sorted((shared / "media/faces/celebrity5_train/jerry_seinfeld").glob("*.jpg"))[0]
    face = cv2.imread(str(photo))
    face = cv2.resize(face, (min(640, round(face.shape[1] * 240 / face.shape[0])), 240))
    image = np.full((360, 640, 3), 60, np.uint8)
    x0 = (640 - face.shape[1]) // 2
    image[60:300, x0 : x0 + face.shape[1]] = face
    speech = load_audio(shared / SPEECH)
    return {
        "hamilton": shared / "media/videos/short_hamilton_clip.mp4",
        "still_talk": still_video(d / "still_talk.mp4", image, speech),
        "still_silent": still_video(d / "still_silent.mp4", image, np.zeros(0, np.int16)),
        "no_audio": shared / "media/videos/pyscenedetect/testvideo.mp4",
    }


def run(shared, tmp_path_factory, paths, stages):
    cfg = Config()
    cfg.set("run.weights_dir", str(shared / "weights"))
    cfg.set("run.executor", "serial")
    cfg.set("clips.require_major_character", False)
    cfg.set("pipeline.stages", stages)
    out = tmp_path_factory.mktemp("audio_store")
    report = vidpipe.run(paths, out, cfg)
    assert [o.status for o in report.outcomes] == ["ok"] * len(paths), [o.error for o in report.outcomes]
    videos = vidpipe.read_table(out, "videos").set_index("path")
    clips = vidpipe.read_table(out, "clips").merge(videos[["video_id"]].reset_index(), on="video_id")
    return clips, vidpipe.read_table(out, "audio"), report


@pytest.fixture(scope="module")
def with_faces(shared, tmp_path_factory, inputs):
    paths = [inputs[k] for k in ("hamilton", "still_talk", "still_silent")]
    # Every clip kept, so the rule's verdict shows in the columns rather than as a rejection.
    return run(shared, tmp_path_factory, paths, ["major_character", "faces", "speech", "asd", "audio"])


def clip_at(clips, path, start_s):
    rows = clips[(clips.path == str(path)) & ((clips.start_s - start_s).abs() < 0.05)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_the_performer_speaks_his_medium_shot(with_faces, inputs):
    """The medium shot has one major character (the performer) and he sings; the audience
    shot has none (the rule finds no major head), so there is no verdict, and its speech is
    embedded as it is."""
    clips, audio, _ = with_faces
    medium = clip_at(clips, inputs["hamilton"], MEDIUM_SHOT_S)
    audience = clip_at(clips, inputs["hamilton"], AUDIENCE_SHOT_S)
    print(f"\nmedium shot: speech {medium.speech_ratio:.2f}, major speaking {medium.major_speaking:.2f}")
    assert medium.valid_frame_ratio > 0.9
    assert medium.speech_ratio > 0.5 and medium.major_speaking >= 0.9 and medium.voice_is_major
    assert audience.valid_frame_ratio < 0.3 and audience.speech_ratio > 0.5
    assert np.isnan(audience.major_speaking) and audience.voice_is_major is None
    rows = audio.set_index("clip_id")
    assert rows.loc[medium.clip_id, "embedded_over"] == "major_speech"
    assert rows.loc[audience.clip_id, "embedded_over"] == "speech"
    assert rows.loc[medium.clip_id, "backend"] == "resemblyzer"
    assert len(rows.loc[medium.clip_id, "embedding"]) == 256
    assert rows.loc[medium.clip_id, "speech_s"] >= 0.9 * medium.major_speaking * medium.speech_ratio * medium.duration_s


def test_a_still_photo_under_someone_elses_speech_is_not_the_voice(with_faces, inputs, shared):
    clips, audio, _ = with_faces
    clip = clip_at(clips, inputs["still_talk"], 0.0)
    assert clip.n_faces > 0 and clip.speech_ratio > 0.4
    assert clip.major_speaking < 0.2 and not clip.voice_is_major
    row = audio.set_index("clip_id").loc[clip.clip_id]
    assert row.embedded_over == "speech"
    # The clip's voice is the utterance laid under the photo.
    same = np.dot(row.embedding, embed_speech(shared / SPEECH))
    other = np.dot(row.embedding, embed_speech(shared / "media/audio/librispeech_speakers/2414/2414-128291-0000.flac"))
    assert same > 0.9 and same > other + 0.2


def test_a_silent_track_gives_no_speech_and_no_audio_row(with_faces, inputs):
    clips, audio, report = with_faces
    clip = clip_at(clips, inputs["still_silent"], 0.0)
    assert clip.status == "ok" and clip.speech_ratio == 0.0
    assert np.isnan(clip.major_speaking) and clip.voice_is_major is None
    assert clip.clip_id not in set(audio.clip_id)
    assert (clips[clips.status == "rejected"].speech_ratio.isna()).all()  # rejected clips were not listened to


def test_no_audio_track_and_no_faces_stage_run_without_error(shared, tmp_path_factory, inputs):
    """testvideo.mp4 has no audio track; without the faces stage there is no major face,
    so the still photo's speech is embedded without the active speaker's verdict."""
    clips, audio, report = run(shared, tmp_path_factory, [inputs["no_audio"], inputs["still_talk"]],
                               ["speech", "asd", "audio"])
    silent = clips[(clips.path == str(inputs["no_audio"])) & (clips.status == "ok")]
    assert len(silent) >= 3 and (silent.speech_ratio == 0).all() and silent.major_speaking.isna().all()
    talk = clip_at(clips, inputs["still_talk"], 0.0)
    assert talk.speech_ratio > 0.4 and np.isnan(talk.major_speaking) and talk.voice_is_major is None
    assert list(audio.clip_id) == [talk.clip_id] and audio.embedded_over.iloc[0] == "speech"
    calls = {o.path: o.model_calls for o in report.outcomes}
    assert calls[str(inputs["no_audio"].absolute())].get("vad", 0) == 0  # nothing to listen to
    assert calls[str(inputs["still_talk"].absolute())].get("active_speaker", 0) == 0  # no face, no network
