"""iQIYI-VID-2019 files: restricted unpickling, the Python-2 layout, gt and submission files."""

import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from vidpipe.eval import iqiyi_io
from vidpipe.models.cli import evaluate


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "face_train.pickle"
    path.write_bytes(pickle.dumps({b"v": _Evil(target)}, protocol=2))
    with pytest.raises(iqiyi_io.IqiyiFormatError, match="refusing to load global"):
        iqiyi_io.read_modality_pickle(path, "face")
    assert not target.exists()
    # the same bytes do run code through the plain unpickler: the test is not vacuous
    pickle.loads(path.read_bytes())
    assert target.exists()


def test_restricted_unpickler_refuses_builtins_eval():
    payload = b"c__builtin__\neval\n(S'1+1'\ntR."
    with pytest.raises(iqiyi_io.IqiyiFormatError):
        iqiyi_io.safe_load_pickle(payload)


def _face_row(frame, quality, seed):
    feat = np.random.default_rng(seed).standard_normal(512).astype(np.float16)
    return [b"%04d" % frame, np.array([1, 2, 30, 40], np.float32), 0.99, float(quality), feat]


def test_python2_layout_round_trip(tmp_path):
    faces = {b"IQIYI_VID_TRAIN_0000001": [_face_row(3, 10.0, 0), _face_row(5, 50.0, 1)],
             b"IQIYI_VID_TRAIN_0000002": [_face_row(1, 20.0, 2)]}
    iqiyi_io.write_py2_pickle(tmp_path / "face_train.pickle", faces)
    raw = (tmp_path / "face_train.pickle").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"U\x17IQIYI_VID_TRAIN_0000001" in raw  # py2 str opcode
    # keys come back as bytes under Python 3's encoding='bytes', as the release does
    assert isinstance(next(iter(pickle.loads(raw, encoding="bytes"))), bytes)
    videos = iqiyi_io.read_modality_pickle(tmp_path / "face_train.pickle", "face")
    v = videos["IQIYI_VID_TRAIN_0000001"]
    assert v.feats.shape == (2, 512) and v.feats.dtype == np.float16
    assert list(v.quality) == [50.0, 10.0] and list(v.frames) == [5, 3]  # best quality first
    np.testing.assert_array_equal(v.feats[0], faces[b"IQIYI_VID_TRAIN_0000001"][1][4])

    heads = {b"v1": [[b"0001", [0, 0, 5, 5], 0.5, np.ones(512, np.float16)],
                     [b"0002", [0, 0, 5, 5], 0.9, np.zeros(512, np.float16)]]}
    bodies = {b"v1": [[b"0001", [0, 0, 5, 5], np.ones(512, np.float16)]]}
    audio = {b"v1": np.full(512, 0.5, np.float16)}
    for name, obj in (("head", heads), ("body", bodies), ("audio", audio)):
        iqiyi_io.write_py2_pickle(tmp_path / f"{name}_train.pickle", obj)
    h = iqiyi_io.read_modality_pickle(tmp_path / "head_train.pickle", "head")["v1"]
    assert list(h.quality) == pytest.approx([0.9, 0.5]) and h.feats[0].sum() == 0
    assert iqiyi_io.read_modality_pickle(tmp_path / "body_train.pickle", "body")["v1"].feats.shape == (1, 512)
    a = iqiyi_io.read_modality_pickle(tmp_path / "audio_train.pickle", "audio")["v1"]
    assert a.feats.shape == (1, 512) and float(a.feats[0, 0]) == 0.5


def test_wrong_entry_shape_is_a_format_error(tmp_path):
    iqiyi_io.write_py2_pickle(tmp_path / "x.pickle", {b"v": [[b"0001", [0, 0, 1, 1], np.ones(4, np.float16)]]})
    with pytest.raises(iqiyi_io.IqiyiFormatError, match="3 fields, expected 5"):
        iqiyi_io.read_modality_pickle(tmp_path / "x.pickle", "face")


def test_gt_files(tmp_path):
    (tmp_path / "train_gt.txt").write_text("IQIYI_VID_TRAIN_0000001.mp4 7\nIQIYI_VID_TRAIN_0000002.mp4 0\n")
    (tmp_path / "val_gt.txt").write_text("7 a.mp4 b.mp4\n9 c.mp4\n")
    assert iqiyi_io.read_gt(tmp_path / "train_gt.txt") == {"IQIYI_VID_TRAIN_0000001": "7", "IQIYI_VID_TRAIN_0000002": "0"}
    assert iqiyi_io.read_gt(tmp_path / "val_gt.txt") == {"a": "7", "b": "7", "c": "9"}
    iqiyi_io.write_id_lists(tmp_path / "sub.txt", {"7": ["a", "b"]})
    assert (tmp_path / "sub.txt").read_text() == "7 a.mp4 b.mp4\n"


def test_eval_command(tmp_path):
    (tmp_path / "gt.txt").write_text("1 a.mp4 b.mp4\n2 c.mp4\n")
    (tmp_path / "sub.txt").write_text("1 a.mp4 z.mp4 b.mp4\n")
    result = CliRunner().invoke(evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(tmp_path / "gt.txt")])
    assert result.exit_code == 0, result.output
    # id1: (1 + 2/3)/2, id2 missing → 0
    assert result.output.startswith(f"mAP={((1 + 2 / 3) / 2) / 2:.6f} rank1=0.500000")


def test_eval_command_bad_input_is_one_line(tmp_path):
    result = CliRunner().invoke(evaluate, ["--submission", str(tmp_path / "nope.txt"), "--gt", str(tmp_path / "nope.txt")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no such file" in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "gt.txt").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "sub.txt").write_text("1 a.mp4\n")
    result = CliRunner().invoke(evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(tmp_path / "gt.txt")])
    assert result.exit_code == 1 and "UTF-8" in result.output
