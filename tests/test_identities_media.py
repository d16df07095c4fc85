"""Identities on real media (../shared): enrolment and identification of the shared face
photos, calibration, unknown-people clustering, the Hamilton clip tagged and searched,
library mode on a two-shot, naming unknown people, propagation on a real video.

Slow parts (runs, enrolments) are module-scoped fixtures shared by the tests."""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import vidpipe
from vidpipe.cli import main
from vidpipe.config import Config
from vidpipe.identities import Gallery, enroll, identify, read_identities, search, tag, timeline, unknown_people
from vidpipe.identities.calibration import CALIBRATION_SETS, DEFAULTS, calibrate
from vidpipe.identities.cluster import cluster_faces
from vidpipe.identities.encoder import FaceEncoder, dominant
from vidpipe.store import known_schemas, tables

FACES = "media/faces"
HAMILTON = "media/videos/short_hamilton_clip.mp4"
LIN = "Lin-Manuel Miranda"


@pytest.fixture(scope="module")
def cfg(shared) -> Config:
    cfg = Config()
    cfg.run.weights_dir = str(shared / "weights")
    cfg.run.device = "cpu"
    cfg.faces.detector, cfg.faces.embedder = "scrfd", "arcface"
    return cfg


@pytest.fixture(scope="module")
def encoder(cfg) -> FaceEncoder:
    return FaceEncoder(cfg)


def with_stages(cfg: Config, *stages: str, library: bool = False) -> Config:
    """`cfg` running only `stages` (the suite stays fast), in library mode or not."""
    cfg = copy.deepcopy(cfg)
    cfg.pipeline.stages = stages
    cfg.clips.require_major_character = not library
    return cfg


def write_video(path: Path, frames, fps: int = 10, size: tuple[int, int] = (640, 480)) -> Path:
    """Frames (BGR images of any size, letterboxed into `size`) as an H.264 file."""
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for n, img in enumerate(frames):
            scale = min(w / img.shape[1], h / img.shape[0])
            small = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((h, w, 3), np.uint8)
            y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def slideshow(path: Path, images: list[np.ndarray], seconds: float = 1.5, fps: int = 10) -> Path:
    """One shot per image, hard cuts between them."""
    return write_video(path, (img for img in images for _ in range(round(seconds * fps))), fps)


def video_frames(path: Path, start_s: float, end_s: float):
    """Frames of `path` shown between start_s and end_s (presentation timeline)."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.pts * frame.time_base)
            if start_s <= t < end_s:
                yield frame.to_ndarray(format="bgr24")
            elif t >= end_s:
                break


def photo(shared: Path, rel: str) -> np.ndarray:
    img = cv2.imread(str(shared / FACES / rel))
    assert img is not None, rel
    return img


def link_folder(target: Path, sources: list[Path]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for s in sources:
        (target / s.name).symlink_to(s)
    return target


# ---------------------------------------------------------------- enrolment and identification


@pytest.fixture(scope="module")
def celebrities(shared, cfg, tmp_path_factory):
    """celebrity5_train and face_recognition_knn/train, one folder per person, plus a photo
    of two people put into obama's folder."""
    root = tmp_path_factory.mktemp("gallery") / "people"
    for base in ("celebrity5_train", "face_recognition_knn/train"):
        for person in sorted((shared / FACES / base).iterdir()):
            link_folder(root / person.name, sorted(person.iterdir()))
    two = shared / FACES / "face_recognition_misc/two_people.jpg"
    (root / "obama" / "obama_with_biden.jpg").symlink_to(two)
    db = root.parent / "celebrities.db"
    return root, db, enroll(root, db, cfg)


# The biggest faces of each test photo, left to right.
KNN_TEST = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"], "johnsnow_test1.jpg": ["kit_harington"], "obama1.jpg": ["obama"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"], "obama_and_biden.jpg": ["biden", "obama"],
}


def test_enrolment_reports_two_people_photos_and_identifies_the_test_photos(shared, encoder, celebrities):
    root, db, report = celebrities
    assert [(Path(p.path).name, "2 faces" in p.reason) for p in report.problems] == [("obama_with_biden.jpg", True)]
    assert len(report.added) == 80 and report.people == 10
    with Gallery.open(db) as g:
        assert {p.name: p.n_faces for p in g.people()}["obama"] == 2  # the two-people photo is not used
    hits = total = accepted = 0
    for name, expected in KNN_TEST.items():
        faces = identify(shared / FACES / "face_recognition_knn/test" / name, db, encoder=encoder)
        biggest = sorted(faces[: len(expected)], key=lambda f: f.bbox[0])
        total += len(expected)
        hits += sum(f.best == e for f, e in zip(biggest, expected))
        accepted += sum(f.identity == e for f, e in zip(biggest, expected))
    print(f"\nface_recognition_knn/test: rank-1 {hits}/{total}, accepted at the calibrated threshold {accepted}/{total}")
    assert hits == total == 7
    assert accepted >= 6


def test_enrolment_is_incremental(shared, cfg, celebrities, tmp_path):
    root, db, _ = celebrities
    again = enroll(root, db, cfg)
    assert (again.added, again.unchanged, again.removed, again.problems) == ([], 81, [], [])
    new = root / "obama" / "obama3.jpg"
    new.symlink_to(shared / FACES / "face_recognition_misc/obama3.jpg")
    try:
        assert enroll(root, db, cfg).added == [str(new)]
    finally:
        new.unlink()
    assert enroll(root, db, cfg).removed == [str(new)]


def test_enrolment_from_a_video_clip(shared, cfg, encoder, tmp_path):
    clip = write_video(tmp_path / LIN / "medium_shot.mp4", video_frames(shared / HAMILTON, 3.7, 7.8), fps=25,
                       size=(640, 360))
    report = enroll(tmp_path, tmp_path / "g.db", cfg)
    assert report.added == [str(clip)] and report.faces_added >= 10
    [face] = identify(shared / FACES / "face_recognition_misc/lin-manuel-miranda.png", tmp_path / "g.db", encoder=encoder)
    assert face.identity == LIN


def test_a_folder_of_non_images_writes_nothing(tmp_path, shared):
    folder = tmp_path / "people" / "someone"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"not a jpeg at all" * 50)
    (folder / "b.png").write_text("neither")
    db = tmp_path / "g.db"
    result = CliRunner().invoke(main, ["enroll", str(tmp_path / "people"), "--db", str(db),
                                       "--weights", str(shared / "weights"), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line] == [
        f"vidpipe: error: no usable face in any of 2 file(s); nothing enrolled (e.g. {folder / 'a.jpg'}: "
        "cannot be decoded as an image)"]
    assert not db.exists()


# ---------------------------------------------------------------- calibration and clustering


@pytest.fixture(scope="module")
def shared_photos(encoder, shared, celebrities):
    """Embeddings and person of every usable photo of CALIBRATION_SETS: the enrolled
    celebrities (same folders, same faces) plus deepface_ids."""
    assert CALIBRATION_SETS == ("faces/celebrity5_train", "faces/face_recognition_knn/train", "faces/deepface_ids")
    with Gallery.open(celebrities[1]) as g:
        embeddings, labels = g.face_embeddings()
    embeddings = list(embeddings)
    for path in sorted((shared / FACES / "deepface_ids").glob("*/*")):
        face = dominant(encoder.photo_faces(path) or [])
        if face is not None:
            embeddings.append(face.embedding)
            labels.append(path.parent.name)
    return np.stack(embeddings), labels


def test_shipped_thresholds_are_the_calibration_on_the_shared_photos(encoder, shared_photos):
    result = calibrate(*shared_photos)
    print("\ncalibration:", result.summary())
    shipped = DEFAULTS[encoder.fingerprint.embedder_key]
    assert result.thresholds.threshold == pytest.approx(shipped.threshold, abs=0.005)
    assert result.thresholds.margin == pytest.approx(shipped.margin, abs=0.005)
    assert result.fpir <= 0.01 and result.tpir >= 0.95 and result.n_people == 16


def test_unknown_faces_cluster_one_per_person(encoder, shared_photos):
    embeddings, labels = shared_photos
    keep = [i for i, lab in enumerate(labels) if lab.startswith("id0") or lab in (
        "ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")]  # 11 people, 5-20 photos each
    x, y = embeddings[keep], np.asarray(labels)[keep]
    clusters = cluster_faces(x, link=DEFAULTS[encoder.fingerprint.embedder_key].threshold)
    inside = clusters >= 0
    purity = sum(np.unique(y[clusters == c], return_counts=True)[1].max() for c in np.unique(clusters[inside])) / inside.sum()
    completeness = np.mean([np.bincount(clusters[(y == p) & inside]).max() / (y == p).sum() if ((y == p) & inside).any()
                            else 0.0 for p in np.unique(y)])
    print(f"\nunknown clustering: {len(np.unique(clusters[inside]))} clusters for {len(np.unique(y))} people, "
          f"purity {purity:.3f}, completeness {completeness:.3f}, {np.sum(~inside)} of {len(y)} faces unclustered")
    assert len(np.unique(clusters[inside])) == 11 and purity == 1.0 and completeness >= 0.95


# ---------------------------------------------------------------- the Hamilton clip


@pytest.fixture(scope="module")
def store(shared, cfg, tmp_path_factory):
    """The Hamilton clip (dataset mode, the major-character rule on); Lin-Manuel Miranda
    enrolled from his one photo."""
    out = tmp_path_factory.mktemp("store")
    assert vidpipe.run(shared / HAMILTON, out, with_stages(cfg, "major_character", "faces")).exit_code == 0
    db = out.parent / "lin.db"
    enroll([shared / FACES / "face_recognition_misc/lin-manuel-miranda.png"], db, cfg, name=LIN)
    return out, db, tag(out, db)


@pytest.fixture(scope="module")
def library_store(shared, cfg, tmp_path_factory):
    """Library mode (every face kept): the Hamilton clip and a Bond trailer (other people)."""
    out = tmp_path_factory.mktemp("library_store")
    videos = [shared / HAMILTON, shared / "media/videos/pyscenedetect/goldeneye-vfr-drop3.mp4"]
    assert vidpipe.run(videos, out, with_stages(cfg, "faces", library=True)).exit_code == 0
    return out


def test_hamilton_medium_shot_is_him_and_the_audience_is_not(store):
    out, db, report = store
    clips = vidpipe.read_table(out, "clips").set_index("clip_id")
    rows = read_identities(out).merge(clips[["start_s", "end_s"]], left_on="clip_id", right_index=True,
                                      suffixes=("", "_clip"))
    his = rows[rows.identity == LIN]
    assert len(his) == 1 and his.source.item() == "gallery" and his.score.item() > 0.6
    assert his.start_s_clip.item() == pytest.approx(3.58, abs=0.05) and his.end_s_clip.item() == pytest.approx(7.88, abs=0.05)
    # The audience shot: kept without the major-character rule (then tagged, not as him),
    # rejected with it (then not tagged at all).
    audience = clips[(clips.start_s > 7.8) & (clips.video_id == "0b5ff4c55a4cd69f")]
    assert len(audience) == 1
    assert LIN not in set(rows[rows.clip_id.isin(audience.index)].identity)
    assert report.named == 1 and report.mode == "dataset"


def test_timeline_times_are_where_a_player_shows_him(encoder, shared, store):
    """Checked by eye on frames cut with `ffmpeg -ss T`: another shot at 3.54 s, him at
    3.62 s and 7.84 s, the audience at 7.92 s. Here: every face inside the range matches his
    photo, no face outside it does."""
    out, db, _ = store
    [video] = timeline(out, "short_hamilton_clip.mp4")
    [person] = video.people
    [appearance] = person.appearances
    assert person.identity == LIN and (appearance.start_s, appearance.end_s) == pytest.approx((3.58, 7.884), abs=0.01)
    faces = vidpipe.read_table(out, "faces").query("video_id == @video.video_id")
    his = np.stack(faces.embedding.to_numpy()) @ dominant(encoder.photo_faces(
        shared / FACES / "face_recognition_misc/lin-manuel-miranda.png")).embedding
    inside = faces.time_s.between(appearance.start_s, appearance.end_s).to_numpy()
    threshold = DEFAULTS[encoder.fingerprint.embedder_key].threshold
    assert inside.sum() >= 15 and his[inside].min() > threshold > his[~inside].max()
    assert (out / "timeline.csv").read_text().count(LIN) == 1


def test_search_by_photo_ranks_the_right_clips_first(shared, library_store):
    out = library_store
    lin = search(shared / FACES / "face_recognition_misc/lin-manuel-miranda.png", out)
    assert [h.clip_id for h in lin.hits] == ["0b5ff4c55a4cd69f-0003"]  # nothing of the trailer
    assert lin.hits[0].first_s >= 3.58 and lin.hits[0].last_s <= 7.89 and lin.faces_searched > 100
    obama = search(shared / FACES / "face_recognition_knn/test/obama1.jpg", out)
    assert [h.clip_id for h in obama.hits] == ["0b5ff4c55a4cd69f-0004"]  # he is in the audience
    result = CliRunner().invoke(main, ["search", str(shared / FACES / "face_recognition_misc/lin-manuel-miranda.png"),
                                       str(out), "--weights", str(shared / "weights")])
    assert result.exit_code == 0 and "1. 0.7" in result.output and "short_hamilton_clip.mp4" in result.output


def test_library_mode_tags_the_performer_and_the_audience(shared, cfg, library_store, tmp_path):
    out = library_store
    people = tmp_path / "people"
    link_folder(people / LIN, [shared / FACES / "face_recognition_misc/lin-manuel-miranda.png"])
    link_folder(people / "Barack Obama", sorted((shared / FACES / "face_recognition_knn/train/obama").iterdir()))
    enroll(people, tmp_path / "g.db", cfg)
    report = tag(out, tmp_path / "g.db")
    rows = read_identities(out).query("identity != 'unknown'").sort_values("clip_id")
    assert rows[["clip_id", "identity"]].values.tolist() == [["0b5ff4c55a4cd69f-0003", LIN],
                                                             ["0b5ff4c55a4cd69f-0004", "Barack Obama"]]
    # his range snaps to the shot's start: his first sampled face is within one period of it
    assert rows.iloc[0][["start_s", "end_s"]].tolist() == pytest.approx([3.58, 7.884], abs=0.01)
    assert report.mode == "library" and report.clusters >= 1  # the trailer's people, and the audience


# ---------------------------------------------------------------- library mode, unknown people


@pytest.fixture(scope="module")
def library(shared, cfg, tmp_path_factory):
    """Library mode: the couple photo as a still clip, then a slideshow of six photos of two
    people nobody enrolled. Angelina Jolie is enrolled from deepface_ids/id01, Brad Pitt from
    his face cut out of the selfie (the only other photo of him)."""
    root = tmp_path_factory.mktemp("library")
    write_video(root / "videos" / "couple.mp4", [photo(shared, "multi_face/couple.jpg")] * 20)
    strangers = [photo(shared, f"deepface_ids/{p}") for p in (
        "id02/img26.jpg", "id05/img13.jpg", "id02/img27.jpg", "id05/img14.jpg", "id02/img28.jpg", "id05/img15.jpg")]
    slideshow(root / "videos" / "strangers.mp4", strangers)
    out = root / "store"
    assert vidpipe.run(root / "videos", out, with_stages(cfg, "faces", library=True)).exit_code == 0
    people = root / "people"
    link_folder(people / "Angelina Jolie", sorted((shared / FACES / "deepface_ids/id01").iterdir()))
    (people / "Brad Pitt").mkdir()
    cv2.imwrite(str(people / "Brad Pitt" / "from_selfie.png"), photo(shared, "multi_face/selfie-many-people.jpg")[60:330, 320:515])
    db = root / "g.db"
    assert enroll(people, db, cfg).people == 2
    return out, db, tag(out, db)


def test_library_mode_lists_both_people_of_a_two_shot(library):
    out, db, report = library
    clips = vidpipe.read_table(out, "clips")
    rows = read_identities(out)
    couple = rows[rows.clip_id.isin(clips[clips.video_id == _video_id(out, "couple.mp4")].clip_id)]
    assert sorted(couple.identity) == ["Angelina Jolie", "Brad Pitt"]
    assert couple.track.nunique() == 2 and (couple.source == "gallery").all()
    assert report.mode == "library"


def _video_id(out: Path, name: str) -> str:
    videos = vidpipe.read_table(out, "videos")
    return videos[videos.path.str.endswith(name)].video_id.item()


def test_unknown_people_listed_with_crops_and_named(shared, encoder, library, tmp_path):
    out, db, report = library
    clips = vidpipe.read_table(out, "clips")
    clips = clips[(clips.video_id == _video_id(out, "strangers.mp4")) & (clips.status == "ok")].clip_id.tolist()
    assert len(clips) == 6
    people = unknown_people(out)
    assert sorted(p.clip_ids for p in people) == [clips[0::2], clips[1::2]] and report.clusters == 2
    katy, zuck = (dominant(encoder.faces([photo(shared, f"deepface_ids/{p}")])[0]).embedding
                  for p in ("id02/img44.jpg", "id05/img57.jpg"))  # photos not in the slideshow
    for p in people:
        crop = cv2.imread(str(p.crop))
        assert crop is not None and 40 <= max(crop.shape[:2]) <= 160
        face = dominant(encoder.faces([crop])[0])  # the crop shows the cluster's person
        assert face is not None and (face.embedding @ katy > face.embedding @ zuck) == (p.clip_ids == clips[0::2])
    listing = CliRunner().invoke(main, ["people", "unknown", "-o", str(out)])
    assert listing.exit_code == 0 and all(str(p.crop) in listing.output for p in people)
    katy = next(p for p in people if p.clip_ids == clips[0::2])
    named = CliRunner().invoke(main, ["people", "name", str(katy.cluster_id), "Katy Perry", "-o", str(out), "--db", str(db)])
    assert named.exit_code == 0, named.output
    rows = read_identities(out).set_index("clip_id")
    assert [rows.identity[c] for c in clips] == ["Katy Perry", "unknown"] * 3
    assert [p.clip_ids for p in unknown_people(out)] == [clips[1::2]]
    with Gallery.open(db) as g:
        assert {p.name for p in g.people()} == {"Angelina Jolie", "Brad Pitt", "Katy Perry"}


# ---------------------------------------------------------------- propagation on a real video


def test_propagation_names_the_dancer_when_she_turns_away(shared, cfg, tmp_path):
    """mgt_dancer: her face is seen at 0-4 s and 40-46 s, hardly at 6-10 s (arms over her
    face) and not at 50-56 s (turned away): 2 s of each. Shots of both kinds, separated by the Hamilton
    audience, make one video; she is enrolled from one frame at 22 s. Measured on the
    heads/bodies branch: the turned-away shot inherits her name (score 0.92, her clips'
    bodies 0.82-0.96 cosine apart)."""
    if "bodies" not in known_schemas():
        pytest.skip("no bodies stage in this build: propagation needs the store's bodies table")
    dancer = shared / "media/videos/mgt_dancer.avi"
    audience = list(video_frames(shared / HAMILTON, 8.2, 9.4))
    frames = []
    for a, b in [(1.0, 3.0), (7.0, 9.0), (41.0, 43.0), (51.0, 53.0)]:
        frames += list(video_frames(dancer, a, b)) + audience
    write_video(tmp_path / "cut.mp4", frames, fps=25)
    out = tmp_path / "store"
    run_cfg = with_stages(cfg, "major_character", "faces", "bodies")
    run_cfg.sampling.fps = 2.0
    assert vidpipe.run(tmp_path / "cut.mp4", out, run_cfg).exit_code == 0
    assert "bodies" in tables(out)
    (tmp_path / "people" / "dancer").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "people" / "dancer" / "frame22.png"), next(video_frames(dancer, 22.0, 22.1)))
    enroll(tmp_path / "people", tmp_path / "g.db", cfg)
    tag(out, tmp_path / "g.db")
    clips = vidpipe.read_table(out, "clips").query("status == 'ok'").set_index("clip_id")
    shots = clips[clips.shot_index % 2 == 0]  # the dancer's; the audience between them is odd
    assert len(shots) == 4
    rows = read_identities(out).set_index("clip_id")
    assert [rows.identity[c] for c in shots.index] == ["dancer"] * 4
    faceless = shots.index[shots.n_faces == 0]
    assert len(faceless) >= 1 and [rows.source[c] for c in faceless] == ["propagated"] * len(faceless)
