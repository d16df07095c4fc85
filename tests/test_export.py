"""Dataset export on a synthetic store (real video file, tables as `vidpipe run` + `tag`
write them): selection, the stratified split, the iQIYI-VID-2019 files read back by the
fusion model's reader and by plain `pickle` as the challenge's research code does, the
fusion model training on them, Parquet, atomicity, the report."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from review_store import synthetic_store
from vidpipe.cli import main
from vidpipe.eval import iqiyi_io
from vidpipe.export import ExportError, ExportOptions, export_dataset
from vidpipe.export.dataset import split_counts
from vidpipe.review import ReviewDB, review_db_path

PEOPLE = {"ada": 10, "bob": 7, "cy": 5, "dee": 3, "eve": 2, "fay": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out, db = synthetic_store(root, PEOPLE, unknown=6)
    clips = pd.read_parquet(out / "identities" / "tags.parquet").set_index("clip_id")
    with ReviewDB(review_db_path(db)) as review:  # some reviewed: accepted, reassigned, rejected, noise
        ada = clips.index[clips.identity == "ada"]
        review.decide(ada[0], 1, "accept", "r1", "ada", 0.5)
        review.decide(ada[1], 1, "reject", "r1", "ada", 0.5)  # out of the dataset
        review.decide(ada[2], 1, "assign", "r1", "ada", 0.5, identity="bob")  # now bob's
        review.decide(ada[3], 1, "noise", "r1", "ada", 0.5)  # a distractor
    return out, db, clips


@pytest.fixture(scope="module")
def iqiyi(store, tmp_path_factory):
    out, db, _ = store
    return export_dataset(out, db, tmp_path_factory.mktemp("ds") / "iqiyi", ExportOptions(min_score=0.0, seed=7))


def test_split_counts_keep_every_identity_of_three_in_every_split():
    assert [split_counts(n) for n in (1, 2, 3, 4, 5, 10)] == [
        [1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 1, 1], [2, 2, 1], [4, 3, 3]]
    for n in range(3, 200):
        counts = split_counts(n)
        assert sum(counts) == n and min(counts) >= 1 and abs(counts[0] - 0.4 * n) <= 1.0


def test_split_is_stratified_reviewed_and_reproducible(store, iqiyi, tmp_path):
    out, db, clips = store
    data = iqiyi.dataset.clips.set_index("clip_id")
    ada = clips.index[clips.identity == "ada"]
    assert ada[1] not in data.index  # rejected
    assert data.identity[ada[2]] == "bob" and data.label_source[ada[2]] == "review"
    assert data.identity[ada[3]] == "0" and data.split[ada[3]] in ("val", "test")  # noise: a distractor
    per = data[data.identity != "0"].groupby("identity").split.value_counts().unstack(fill_value=0)
    for identity, row in per.iterrows():
        if row.sum() >= 3:
            assert (row[["train", "val", "test"]] >= 1).all(), identity
    assert per.loc["bob"].sum() == 8 and per.loc["fay"].tolist() == [0, 1, 0]  # test, train, val columns
    distractors = data[data.identity == "0"]
    assert len(distractors) == 7 and set(distractors.split) == {"val", "test"}  # 6 clustered unknowns + the noise
    again = export_dataset(out, db, tmp_path / "again", ExportOptions(min_score=0.0, seed=7)).dataset.clips
    other = export_dataset(out, db, tmp_path / "other", ExportOptions(min_score=0.0, seed=8)).dataset.clips
    assert again.equals(iqiyi.dataset.clips)
    assert not other[["clip_id", "split"]].equals(again[["clip_id", "split"]])


def test_only_reviewed_or_confident_clips(store, tmp_path):
    out, db, clips = store
    confident = export_dataset(out, db, tmp_path / "a", ExportOptions(min_score=0.8)).dataset.clips
    automatic = confident[confident.label_source != "review"]
    assert len(automatic) and (automatic[automatic.identity != "0"].score >= 0.8).all()
    reviewed = export_dataset(out, db, tmp_path / "b", ExportOptions(min_score=None, unknown_distractors=False)).dataset.clips
    assert sorted(reviewed.identity) == ["0", "ada", "bob"]


def test_iqiyi_files_read_by_the_fusion_reader_and_by_plain_pickle(store, iqiyi):
    out, _, _ = store
    root, data = iqiyi.path, iqiyi.dataset.clips
    for split in ("train", "val", "test"):
        names = set(data["name"][data.split == split])
        faces = iqiyi_io.read_modality_pickle(root / f"face_{split}_v2.pickle", "face")
        assert set(faces) == names
        assert all(v.feats.dtype == np.float16 and v.feats.shape == (4, 128) for v in faces.values())
        for modality in ("head", "body", "audio"):
            assert set(iqiyi_io.read_modality_pickle(root / f"{modality}_{split}.pickle", modality)) == names
        with open(root / f"face_{split}_v2.pickle", "rb") as f:  # as the challenge's research code loads it
            raw = pickle.load(f, encoding="bytes")
        for name, frames in raw.items():
            assert isinstance(name, bytes) and not name.endswith(b".mp4")
            numbers = [int(fr[0]) for fr in frames]
            assert numbers == sorted(numbers)
            for frame_str, bbox, det_score, quality, feat in frames:
                x1, y1, x2, y2 = bbox
                assert 0 <= x1 <= x2 and 0 <= y1 <= y2
                assert type(det_score) is float and type(quality) is float
                assert feat.dtype == np.float16 and np.linalg.norm(feat.astype(np.float32)) == pytest.approx(quality, rel=1e-2)
    train = iqiyi_io.read_train_gt(root / "train_gt.txt")
    labelled = data[data.identity != "0"]
    ids = dict(zip(labelled["name"], labelled.identity_id.astype(str)))
    assert train == {n: ids[n] for n in data["name"][data.split == "train"]}
    for split in ("val", "test"):
        truth = iqiyi_io.id_lists_to_labels(iqiyi_io.read_id_lists(root / f"{split}_gt.txt"))
        assert truth == {n: ids[n] for n in labelled["name"][labelled.split == split]}  # distractors: in no gt
    names = pd.read_csv(root / "identities.csv")
    assert names.identity.tolist() == sorted(PEOPLE) and names.identity_id.tolist() == list(range(1, 7))
    assert json.loads((root / "dataset.json").read_text())["clips"] == len(data)


def test_vidpipe_train_runs_on_the_export(iqiyi, tmp_path):
    """The export is read by the fusion trainer (the `_v2` face files, float16 features)."""
    result = CliRunner().invoke(main, ["train", "--iqiyi", str(iqiyi.path), "--out", str(tmp_path / "model"),
                                       "--arch", "avg", "--epochs", "2", "--hidden", "32", "--batch-size", "8",
                                       "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "model.json").is_file()


def test_parquet_with_a_split_column(store, tmp_path):
    out, db, _ = store
    result = export_dataset(out, db, tmp_path / "pq", ExportOptions(fmt="parquet", min_score=0.0, seed=7))
    clips = pd.read_parquet(tmp_path / "pq" / "clips.parquet")
    faces = pd.read_parquet(tmp_path / "pq" / "faces.parquet")
    assert set(clips.split) == {"train", "val", "test"} and len(clips) == len(result.dataset.clips)
    assert faces.groupby("clip_id").split.first().to_dict() == dict(zip(clips.clip_id, clips.split))
    assert {"bodies.parquet", "heads.parquet", "audio.parquet", "report.html"} <= {p.name for p in (tmp_path / "pq").iterdir()}


def test_without_an_audio_table(tmp_path):
    out, db = synthetic_store(tmp_path / "s", {"ada": 3, "bob": 3}, audio=False)
    result = export_dataset(out, db, tmp_path / "ds", ExportOptions(min_score=0.0))
    names = {p.name for p in result.path.iterdir()}
    assert "face_train_v2.pickle" in names and "body_val.pickle" in names and not any(n.startswith("audio") for n in names)


def test_an_interrupted_export_leaves_nothing(store, tmp_path, monkeypatch):
    import vidpipe.export.report as report

    out, db, _ = store
    dest = tmp_path / "ds"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", boom)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(out, db, dest, ExportOptions(min_score=0.0))
    assert list(tmp_path.iterdir()) == []  # no dataset, no hidden partial folder
    monkeypatch.undo()
    export_dataset(out, db, dest, ExportOptions(min_score=0.0))
    before = sorted(p.name for p in dest.iterdir())
    monkeypatch.setattr(report, "write_report", boom)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(out, db, dest, ExportOptions(min_score=0.0, overwrite=True))
    assert sorted(p.name for p in dest.iterdir()) == before and [p.name for p in tmp_path.iterdir()] == ["ds"]


KILL_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
real = os.replace
def replace(src, dst, *a, **k):  # the export's second rename: the new dataset into place
    if Path(src).name.startswith(".ds.partial-"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
from vidpipe.export import ExportOptions, export_dataset
export_dataset(sys.argv[1], sys.argv[2], sys.argv[3], ExportOptions(min_score=0.0, overwrite=True, seed=5))
"""


def test_an_export_killed_between_its_renames_is_recovered(store, tmp_path):
    """SIGKILL after the old dataset was moved aside and before the new one took its place
    left no dataset and a `.ds.old-PID` nobody swept; the next export puts the old one back
    (then replaces it, with --overwrite) and leaves nothing hidden behind."""
    import subprocess
    import sys

    out, db, _ = store
    dest = tmp_path / "ds"
    export_dataset(out, db, dest, ExportOptions(min_score=0.0, seed=1))
    first = (dest / "dataset.json").read_text()
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(out), str(db), str(dest)])
    assert killed.returncode == -9
    assert not dest.exists() and sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [".ds.old", ".ds.partial"]
    with pytest.raises(ExportError, match="exists"):  # a later export first restores the old copy
        export_dataset(out, db, dest, ExportOptions(min_score=0.0, seed=2))
    assert (dest / "dataset.json").read_text() == first and [p.name for p in tmp_path.iterdir()] == ["ds"]
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(out), str(db), str(dest)])
    assert killed.returncode == -9 and not dest.exists()
    export_dataset(out, db, dest, ExportOptions(min_score=0.0, seed=2, overwrite=True))
    assert json.loads((dest / "dataset.json").read_text())["options"]["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_report_and_summary(store, iqiyi):
    html = (iqiyi.path / "report.html").read_text()
    per_identity = iqiyi.dataset.clips.identity.value_counts()  # up to 4 faces each, one per clip
    assert all(name in html for name in PEOPLE) and html.count("data:image/jpeg;base64,") == per_identity.clip(upper=4).sum()
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched: it opens offline
    out, db, _ = store
    result = CliRunner().invoke(main, ["export", str(out), "--db", str(db), "--out", str(iqiyi.path.parent / "cli"),
                                       "--min-score", "0", "--seed", "7"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{len(iqiyi.dataset.clips)} clips") and len(lines) < 40
    assert any(line.split()[:2] == ["bob", "8"] for line in lines)


def test_bad_input_is_one_line(store, tmp_path):
    out, db, _ = store
    runner = CliRunner()
    (tmp_path / "taken").mkdir()
    for args, message in [
        (["--out", str(tmp_path / "taken")], "exists: give --overwrite"),
        (["--out", str(tmp_path / "x"), "--reviewed-only", "--review-db", str(tmp_path / "empty.db")], "nothing to export"),
    ]:
        result = runner.invoke(main, ["export", str(out), "--db", str(db), *args])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.count("\n") == 1 and message in result.output, result.output
    with pytest.raises(ExportError, match="unknown format"):
        export_dataset(out, db, tmp_path / "y", ExportOptions(fmt="csv"))
