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


def _face_row(frame, quality, seed, dim=512):
    feat = np.random.default_rng(seed).standard_normal(dim).astype(np.float16)
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


def _faces(n_videos=5, rows=3, seed=0, dim=8):
    return {b"IQIYI_VID_TRAIN_%07d" % v: [_face_row(r, 10.0 * (r + 1), seed + 10 * v + r, dim) for r in range(rows)]
            for v in range(n_videos)}


def test_v2_face_file_is_preferred_and_named(tmp_path):
    assert iqiyi_io.modality_file(tmp_path, "face", "train") is None
    iqiyi_io.write_py2_pickle(tmp_path / "face_train.pickle", _faces(2))
    assert iqiyi_io.modality_file(tmp_path, "face", "train").name == "face_train.pickle"
    iqiyi_io.write_py2_pickle(tmp_path / "face_train_v2.pickle", _faces(3))
    assert iqiyi_io.modality_file(tmp_path, "face", "train").name == "face_train_v2.pickle"
    iqiyi_io.write_py2_pickle(tmp_path / "face_test.pickle", _faces(1))  # the test split as released
    assert iqiyi_io.modality_file(tmp_path, "face", "test").name == "face_test.pickle"
    assert iqiyi_io.modality_file(tmp_path, "head", "train") is None
    iqiyi_io.write_py2_pickle(tmp_path / "head_train.pickle", {b"v": [[b"0001", [0, 0, 1, 1], 0.9,
                                                                       np.ones(4, np.float16)]]})
    assert iqiyi_io.modality_file(tmp_path, "head", "train").name == "head_train.pickle"


def _streamed(path, modality, level=0):
    out = {}
    n = iqiyi_io.stream_modality_pickle(path, modality, lambda c, v: out.__setitem__(c, v), level=level)
    assert n == len(out)
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k].feats, b[k].feats)
        np.testing.assert_array_equal(a[k].quality, b[k].quality)
        np.testing.assert_array_equal(a[k].frames, b[k].frames)


@pytest.mark.parametrize("writer", ["py2", "protocol0", "protocol4"])
def test_streaming_reader_matches_the_whole_file_reader(tmp_path, writer):
    faces = _faces(1205, rows=2)  # more than one SETITEMS batch of 1,000
    path = tmp_path / "face_train.pickle"
    if writer == "py2":
        iqiyi_io.write_py2_pickle(path, faces)
    else:  # Python 2's default protocol 0, and a modern protocol with MEMOIZE and frames
        path.write_bytes(pickle.dumps(faces, protocol=0 if writer == "protocol0" else 4))
    whole = iqiyi_io.read_modality_pickle(path, "face")
    for level in iqiyi_io.FORGET_LEVELS:
        try:
            _same(_streamed(path, "face", level), whole)
            break
        except iqiyi_io.PickleBackReference:  # numpy's protocol-0 pickles share a tuple between arrays
            assert writer == "protocol0" and level < 2


def test_streaming_reader_forgets_what_it_handed_over(tmp_path):
    path = tmp_path / "face_train.pickle"
    iqiyi_io.write_py2_pickle(path, _faces(1500, rows=2))
    seen = []

    def on_item(name, entry):
        seen.append(name)

    with open(path, "rb") as f:
        u = iqiyi_io._StreamingUnpickler(f, on_item)
        top = u.load()
    assert len(seen) == 1500 and top == {}  # nothing stored in the top-level dict
    assert len(u.memo) < 20  # the classes and dtype a pickle refers back to, nothing of any video
    assert not any(isinstance(v, (list, tuple, np.ndarray)) for v in u.memo.values())


def test_streaming_reader_keeps_more_for_a_pickle_that_refers_back(tmp_path):
    shared = _face_row(1, 50.0, 0, dim=8)  # the same row object in two videos, 1,000 videos apart
    faces = {b"a": [shared], **_faces(1000, rows=1), b"b": [shared, _face_row(2, 10.0, 1, dim=8)]}
    path = tmp_path / "face_train.pickle"
    path.write_bytes(pickle.dumps(faces, protocol=2))
    for level in (0, 1):
        with pytest.raises(iqiyi_io.PickleBackReference):
            _streamed(path, "face", level)
    _same(_streamed(path, "face", 2), iqiyi_io.read_modality_pickle(path, "face"))


def test_streaming_reader_refuses_code_execution(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "face_train.pickle"
    path.write_bytes(pickle.dumps({b"v": _Evil(target)}, protocol=2))
    with pytest.raises(iqiyi_io.IqiyiFormatError, match="refusing to load global"):
        _streamed(path, "face")
    assert not target.exists()


def _eval(tmp_path, gt, sub, *flags):
    (tmp_path / "gt.txt").write_text(gt)
    (tmp_path / "sub.txt").write_text(sub)
    return CliRunner().invoke(
        evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(tmp_path / "gt.txt"), *flags])


def test_strict_eval_is_the_official_script(tmp_path):
    gt = "1 a.mp4 b.mp4\n2 c.mp4\n3 d.mp4\n"
    # id1: (1 + 2/3)/2, id2: 1/2, id3 missing: 0; divided by the 3 gt lines
    r = _eval(tmp_path, gt, "1 a.mp4 z.mp4 b.mp4 a.mp4\n2 z.mp4 c.mp4\n99 d.mp4\n", "--strict")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"mAP={((1 + 2 / 3) / 2 + 1 / 2) / 3:.6f}")
    # names must match as written: without .mp4 nothing matches in strict mode …
    r = _eval(tmp_path, gt, "1 a b\n2 c\n", "--strict")
    assert r.stdout.startswith("mAP=0.000000")
    # … while the default mode matches them, and says that it was lenient
    r = _eval(tmp_path, gt, "1 a b\n2 c\n")
    assert r.stdout.startswith(f"mAP={(1 + 1) / 3:.6f}") and "lenient: 3 clip name(s) without .mp4" in r.stderr


def test_strict_eval_refuses_what_the_official_script_asserts(tmp_path):
    gt = "1 " + " ".join(f"p{i}.mp4" for i in range(150)) + "\n2 q.mp4\n"
    long = "1 " + " ".join(f"p{i}.mp4" for i in range(101)) + "\n"
    r = _eval(tmp_path, gt, long, "--strict")
    assert r.exit_code == 1 and "more than 100" in r.stderr and "Traceback" not in r.output
    r = _eval(tmp_path, gt, long)  # lenient: cut to 100, AP 100/150 (divided by all 150), said so
    assert r.exit_code == 0 and r.stdout.startswith(f"mAP={(100 / 150) / 2:.6f}") and "cut to 100" in r.stderr
    r = _eval(tmp_path, gt, "1 p0.mp4\n2 q.mp4\n1 p1.mp4\n", "--strict")
    assert r.exit_code == 1 and "more than the 2" in r.stderr  # more lines than identities
    r = _eval(tmp_path, gt, "1 p0.mp4\n1 p1.mp4\n", "--strict")
    assert r.exit_code == 1 and "second line" in r.stderr
    # 100 distinct clips after dropping repeats is fine, as in the official script
    r = _eval(tmp_path, gt, "1 " + " ".join(f"p{i % 100}.mp4" for i in range(130)) + "\n", "--strict")
    assert r.exit_code == 0 and r.stdout.startswith(f"mAP={(100 / 150) / 2:.6f}")


def test_conversion_retries_a_pickle_that_refers_back(tmp_path):
    """Python 3's protocol-2 pickles refer back to one 'latin1' string from every video: the
    converter forgets less and goes on, and the store holds every row."""
    from vidpipe.models.data import load_iqiyi

    faces = _faces(1100, rows=2)
    (tmp_path / "face_train.pickle").write_bytes(pickle.dumps(faces, protocol=2))
    logs = []
    data = load_iqiyi(tmp_path, "train", log=logs.append)
    assert any("refers back" in line for line in logs) and "face_train.pickle" in logs[-1]
    assert len(data) == 1100 and data.banks["face"].count.tolist() == [2] * 1100
    whole = iqiyi_io.read_modality_pickle(tmp_path / "face_train.pickle", "face")
    first = data.clip_ids.index("IQIYI_VID_TRAIN_0000007")
    start = int(data.banks["face"].start[first])
    np.testing.assert_array_equal(data.banks["face"].frames[start : start + 2].numpy(),
                                  whole["IQIYI_VID_TRAIN_0000007"].feats)
