"""Frame sampling (FAMF §4.3), frame banks, the feature-store reader and the labels file."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vidpipe.models import data as data_module
from vidpipe.models.data import (DataError, FrameBank, build_classes, frame_positions, gather_frames, load_store,
                                 read_labels, stratified_split)


def test_training_sampling_without_repetition_when_enough():
    g = torch.Generator().manual_seed(0)
    pos = frame_positions(torch.tensor([30, 24, 100]), 24, g)
    for row, count in zip(pos, (30, 24, 100)):
        assert len(set(row.tolist())) == 24 and row.max() < count


def test_training_sampling_repeats_when_fewer_but_uses_every_frame():
    g = torch.Generator().manual_seed(1)
    pos = frame_positions(torch.tensor([5, 1]), 24, g)
    assert set(pos[0].tolist()) == set(range(5))
    assert pos[1].tolist() == [0] * 24


def test_training_sampling_is_random_and_seeded():
    a = frame_positions(torch.tensor([40]), 24, torch.Generator().manual_seed(3))
    b = frame_positions(torch.tensor([40]), 24, torch.Generator().manual_seed(3))
    c = frame_positions(torch.tensor([40]), 24, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_test_time_sampling_is_deterministic_best_first():
    pos = frame_positions(torch.tensor([40, 3, 0]), 8, None)
    assert pos[0].tolist() == list(range(8))  # the 8 best frames
    assert pos[1].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]  # tiled evenly
    assert pos[2].tolist() == [0] * 8


def test_frame_bank_caps_and_orders():
    clip_index = np.array([1, 0, 1, 1, 1])
    feats = np.arange(5, dtype=np.float16)[:, None].repeat(2, 1)
    bank = FrameBank.from_rows(clip_index, feats, num_clips=3, max_frames=3)
    assert bank.count.tolist() == [1, 3, 0] and bank.present.tolist() == [True, True, False]
    s = int(bank.start[1])
    assert bank.frames[s : s + 3, 0].tolist() == [0.0, 2.0, 3.0]  # first three rows of clip 1, order kept


def _write(table: dict, path):
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path / "video1.parquet")


def make_store(root, dim=8, rng=None):
    """A tiny store: clips c0..c3 (c3 rejected), faces for c0,c1 (c2 is face-less), audio for c1,c2."""
    rng = rng or np.random.default_rng(0)
    _write({"clip_id": ["c0", "c1", "c2", "c3"], "video_id": ["v"] * 4,
            "status": ["ok", "ok", "ok", "rejected"], "reason": [None, None, None, "no major head"]}, root / "clips")
    rows = [("c0", r) for r in (2, 0, 1)] + [("c1", r) for r in range(40)] + [("c3", 0)]
    emb = rng.standard_normal((len(rows), dim)).astype(np.float32)
    emb[:, 0] = [r for _, r in rows]  # first component = rank, to check the order
    _write({"clip_id": [c for c, _ in rows], "rank": pa.array([r for _, r in rows], pa.int32()),
            "frame_index": pa.array(range(len(rows)), pa.int32()),
            "embedding": pa.array(list(emb), pa.list_(pa.float32()))}, root / "faces")
    _write({"clip_id": ["c1", "c2"], "embedding": pa.array(list(rng.standard_normal((2, 4)).astype(np.float32)),
                                                            pa.list_(pa.float32(), 4))}, root / "audio")


@pytest.mark.parametrize("in_memory_bytes", [256 << 20, 0])  # 0: every bank memory-mapped
def test_load_store(tmp_path, monkeypatch, in_memory_bytes):
    monkeypatch.setattr(data_module, "_IN_MEMORY_BYTES", in_memory_bytes)
    monkeypatch.setattr(data_module, "_BATCH_ROWS", 7)  # several streamed batches
    make_store(tmp_path)
    (tmp_path / "labels.csv").write_text("clip_id,identity\nc0,alice\nc1,\nc2,bob\n")
    data = load_store(tmp_path, read_labels(tmp_path / "labels.csv"), max_frames=32)
    assert data.clip_ids == ["c0", "c1", "c2"]  # the rejected clip is not classified
    assert data.labels == ["alice", "0", "bob"]  # empty identity = noise
    assert list(data.banks) == ["face", "audio"]
    face = data.banks["face"]
    assert face.count.tolist() == [3, 32, 0]  # top 32 kept, c2 face-less
    assert face.frames[int(face.start[0]) : int(face.start[0]) + 3, 0].tolist() == [0, 1, 2]  # by rank
    s1 = int(face.start[1])
    assert face.frames[s1 : s1 + 32, 0].tolist() == list(range(32))
    assert data.banks["audio"].count.tolist() == [0, 1, 1] and data.banks["audio"].dim == 4
    feats, present = data.batch(torch.arange(3), 5, None, data.specs)
    assert feats["face"].shape == (3, 5, 8) and feats["audio"].shape == (3, 1, 4)
    assert present["face"].tolist() == [True, True, False] and torch.all(feats["face"][2] == 0)


def test_store_and_labels_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_store(tmp_path / "nope")
    (tmp_path / "bad.csv").write_text("clip,who\nc0,a\n")
    with pytest.raises(DataError, match="clip_id,identity"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="none of the tables"):
        load_store(tmp_path / "empty")


def test_store_keeps_every_face_unless_capped(tmp_path):
    """Training draws from all of a clip's faces (AttentionVLAD learns to down-weight the poor
    ones); the cap is an option."""
    make_store(tmp_path)
    assert load_store(tmp_path).banks["face"].count.tolist() == [3, 40, 0]
    assert load_store(tmp_path, max_frames=32).banks["face"].count.tolist() == [3, 32, 0]


def test_training_draws_frames_beyond_the_best_32():
    bank = FrameBank.from_rows(np.zeros(40, np.int64), np.arange(40, dtype=np.float16)[:, None], 1, 10**6)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([gather_frames(bank, torch.tensor([0]), 24, g)[0, :, 0] for _ in range(20)])
    assert drawn.max() >= 32 and len(set(drawn.tolist())) == 40  # every face gets drawn
    capped = torch.cat([gather_frames(bank, torch.tensor([0]), 24, g, max_frames=32)[0, :, 0] for _ in range(20)])
    assert capped.max() == 31
    best = gather_frames(bank, torch.tensor([0]), 32, None)[0, :, 0]  # prediction: the 32 best
    assert best.tolist() == list(range(32))


def test_stratified_split_holds_out_every_identity():
    labels = ["a"] * 15 + ["b"] * 7 + ["c"] * 2 + ["0"] * 20
    train, val = stratified_split(labels, 0.15, seed=0)
    held = [labels[i] for i in val]
    assert sorted(set(held)) == ["0", "a", "b"]  # c has too few clips to spare one
    assert held.count("a") == 2 and held.count("b") == 1 and held.count("0") == 3
    assert sorted(np.concatenate([train, val])) == list(range(len(labels)))
    again = stratified_split(labels, 0.15, seed=0)
    assert np.array_equal(again[1], val) and not np.array_equal(stratified_split(labels, 0.15, seed=1)[1], val)


def test_classes_put_noise_first_and_numbers_in_order():
    assert build_classes(["10", "2", "0", None, "2"]) == ["0", "2", "10"]
    assert build_classes(["bob", "alice", "0"]) == ["0", "alice", "bob"]
