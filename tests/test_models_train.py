"""Training runs on small synthetic sets: learning, resume, ensembles, face-less clips, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from vidpipe.eval import iqiyi_io
from vidpipe.eval.metrics import evaluate_retrieval
from vidpipe.models.cli import evaluate, predict, train
from vidpipe.models.config import ModelConfig, TrainConfig
from vidpipe.models.data import ClipSet, FrameBank, load_iqiyi
from vidpipe.models.infer import FusionModel, retrieval_lists
from vidpipe.models.synthetic import SyntheticSpec, write_synthetic_iqiyi
from vidpipe.models.train import train as run_train

from test_models_data import make_store

SMALL = dict(hidden=128, fusion_dim=32)
FAST = dict(batch_size=64, frames=8, test_frames=16, decay_start=100)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_iqiyi")
    spec = SyntheticSpec(identities=24, train_clips=6, val_clips=3, distractor_people=8, train_noise_clips=12,
                         val_noise_clips=24, dim=64, max_face_frames=12, max_other_frames=4, seed=1)
    return write_synthetic_iqiyi(root, spec)


def _map(model_dir, root):
    model = FusionModel.load(model_dir, "cpu")
    val = load_iqiyi(root, "val")
    lists = retrieval_lists(model.predict_proba(val, frames=16), val.clip_ids, model.classes)
    gt = iqiyi_io.read_id_lists(root / "val_gt.txt")
    return evaluate_retrieval({k: [c for c, _ in v] for k, v in lists.items()}, gt).map


def test_small_training_run_beats_chance_widely(synth, tmp_path):
    data = load_iqiyi(synth, "train")
    assert "SYNTHETIC" in (synth / "SYNTHETIC.txt").read_text()
    result = run_train(data, ModelConfig(aggregation="attentionvlad", fusion="mlma", **SMALL),
                       TrainConfig(epochs=12, **FAST), tmp_path / "m", progress=False)
    assert result.history[0][-1].loss < result.history[0][0].loss
    score = _map(tmp_path / "m", synth)
    # chance: 3 positives among ~100 clips ranked at random gives mAP ≈ 0.05
    print("synthetic mAP", score)
    assert score > 0.5, score


def test_resume_gives_identical_results(synth, tmp_path):
    data = load_iqiyi(synth, "train", modalities=["face", "audio"])
    mcfg = dict(aggregation="netvlad", fusion="mma", **SMALL)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, seed=7, **FAST), tmp_path / "straight", progress=False)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=2, seed=7, **FAST), tmp_path / "resumed", progress=False)
    with pytest.raises(ValueError, match="already holds a model"):
        run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, seed=7, **FAST), tmp_path / "resumed", progress=False)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, seed=7, **FAST), tmp_path / "resumed",
              resume=True, progress=False)
    a = torch.load(tmp_path / "straight/member_0/model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed/member_0/model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ensemble_members_sum_probabilities(synth, tmp_path):
    data = load_iqiyi(synth, "train", modalities=["face"])
    run_train(data, ModelConfig(aggregation="avg", fusion="concat", **SMALL),
              TrainConfig(epochs=2, ensemble=3, **FAST), tmp_path / "ens", progress=False)
    meta = json.loads((tmp_path / "ens/model.json").read_text())
    assert meta["members"] == ["member_0", "member_1", "member_2"] and meta["complete"]
    model = FusionModel.load(tmp_path / "ens", "cpu")
    val = load_iqiyi(synth, "val", modalities=["face"])
    p = model.predict_proba(val, frames=8)
    parts = []
    for net in model.members:  # each member alone
        single = FusionModel(model.cfg, [net], model.device)
        parts.append(single.predict_proba(val, frames=8))
    np.testing.assert_allclose(p, sum(parts) / 3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def _toy_world(rng, identities=6, dim=16):
    return rng.standard_normal((identities, dim)), rng.standard_normal((identities, dim))


def _toy_set(rng, face, head, people, faceless):
    """Face frames near the face prototype, one head frame near the head prototype."""
    f_rows, f_idx, h_rows = [], [], []
    for c, (p, no_face) in enumerate(zip(people, faceless)):
        if not no_face:
            f_rows.append(face[p] + 0.3 * rng.standard_normal((5, face.shape[1])))
            f_idx += [c] * 5
        h_rows.append(head[p] + 0.3 * rng.standard_normal(head.shape[1]))
    n = len(people)
    banks = {
        "face": FrameBank.from_rows(np.array(f_idx, dtype=np.int64),
                                    np.concatenate(f_rows or [np.zeros((0, face.shape[1]))]).astype(np.float16), n, 32),
        "head": FrameBank.from_rows(np.arange(n), np.stack(h_rows).astype(np.float16), n, 32),
    }
    return ClipSet([f"c{i}" for i in range(n)], banks, [str(p + 1) for p in people])


def test_faceless_clips_are_ranked_by_their_other_modalities(tmp_path):
    rng = np.random.default_rng(0)
    face, head = _toy_world(rng)
    people = np.repeat(np.arange(6), 12)
    train_set = _toy_set(rng, face, head, people, rng.random(len(people)) < 0.3)
    run_train(train_set, ModelConfig(aggregation="netvlad", fusion="mma", hidden=64, fusion_dim=16),
              TrainConfig(epochs=15, batch_size=32, frames=5, decay_start=100), tmp_path / "m", progress=False)
    model = FusionModel.load(tmp_path / "m", "cpu")
    test_people = np.repeat(np.arange(6), 4)
    test = _toy_set(rng, face, head, test_people, np.ones(len(test_people), bool))  # no face at all
    probs = model.predict_proba(test, frames=5)
    assert np.isfinite(probs).all()
    predicted = np.array(model.classes)[probs.argmax(1)]
    print("faceless acc", (predicted == np.array(test.labels)).mean())
    assert (predicted == np.array(test.labels)).mean() >= 0.8  # chance is 1/7
    # per identity, the face-less clips of that identity come first
    lists = retrieval_lists(probs, test.clip_ids, model.classes, top_k=4)
    hits = [sum(test.labels[int(c[1:])] == ident for c, _ in ranked) for ident, ranked in lists.items()]
    assert np.mean(hits) >= 3


def test_cli_iqiyi_train_predict_eval(synth, tmp_path):
    runner = CliRunner()
    args = ["--iqiyi", str(synth), "--out", str(tmp_path / "m"), "--arch", "iqiyi", "--epochs", "3", "--seed", "3",
            "--hidden", "64", "--fusion-dim", "16", "--batch-size", "64", "--frames", "6", "--quiet"]
    r = runner.invoke(train, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(predict, ["--iqiyi", str(synth), "--split", "val", "--model", str(tmp_path / "m"),
                                "--submission", str(tmp_path / "sub.txt"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert len(lines) == 24 and all(t.endswith(".mp4") for t in lines[0].split()[1:])
    assert len(lines[0].split()) == 1 + min(100, len(load_iqiyi(synth, "val").clip_ids))
    table = pd.read_parquet(tmp_path / "out/identities")
    assert list(table.columns) == ["clip_id", "identity", "score"]
    r = runner.invoke(evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(synth / "val_gt.txt"),
                                 "--identities", str(tmp_path / "out/identities")])
    assert r.exit_code == 0 and r.output.startswith("mAP=") and "clip_acc=" in r.output
    # the same run again into the same directory: refused in one line
    r = runner.invoke(train, args)
    assert r.exit_code == 1 and "already holds a model" in r.output and "Traceback" not in r.output


def test_cli_feature_store_route(tmp_path):
    make_store(tmp_path / "OUT")
    (tmp_path / "labels.csv").write_text("clip_id,identity\nc0,alice\nc1,bob\nc2,bob\n")
    runner = CliRunner()
    r = runner.invoke(train, ["--features", str(tmp_path / "OUT"), "--labels", str(tmp_path / "labels.csv"),
                              "--out", str(tmp_path / "m"), "--epochs", "2", "--hidden", "16", "--fusion-dim", "8",
                              "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(predict, ["--features", str(tmp_path / "OUT"), "--model", str(tmp_path / "m"),
                                "--submission", str(tmp_path / "sub.txt")])
    assert r.exit_code == 0, r.output
    table = pd.read_parquet(tmp_path / "OUT/identities")
    assert sorted(table["clip_id"]) == ["c0", "c1", "c2"] and set(table["identity"]) <= {"0", "alice", "bob"}
    assert {ln.split()[0] for ln in (tmp_path / "sub.txt").read_text().splitlines()} == {"alice", "bob"}


@pytest.mark.parametrize("args, message", [
    (["--out", "M"], "exactly one of --iqiyi"),
    (["--iqiyi", "NOPE", "--out", "M"], "no such directory"),
    (["--iqiyi", ".", "--out", "M", "--arch", "bogus"], "unknown architecture"),
    (["--features", ".", "--out", "M"], "--labels"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    r = CliRunner().invoke(train, args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_cli_predict_without_model(tmp_path):
    r = CliRunner().invoke(predict, ["--iqiyi", str(tmp_path), "--model", str(tmp_path), "--submission", "s.txt"])
    assert r.exit_code == 1 and "not a model directory" in r.output
