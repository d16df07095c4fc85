"""Training on small adversarial synthetic sets: generalisation against the prototype baseline,
recipes, learning-rate groups and schedule, modality dropout, early stopping, resume,
ensembles, face-less clips, and the train/predict/eval commands."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from vidpipe.eval import iqiyi_io
from vidpipe.eval.metrics import evaluate_retrieval, rank_clips, scores_map
from vidpipe.identities.table import IDENTITY_SCHEMA
from vidpipe.models.cli import evaluate, predict, train
from vidpipe.models.config import ModelConfig, TrainConfig, recipe_configs
from vidpipe.models.data import ClipSet, FrameBank, load_iqiyi
from vidpipe.models.infer import FusionModel, load_model
from vidpipe.models.prototype import PrototypeModel
from vidpipe.models.synthetic import SyntheticSpec, write_synthetic_iqiyi
from vidpipe.models.train import Trainer, hide_modalities
from vidpipe.models.train import train as run_train

from test_models_data import make_store

SMALL = dict(hidden=128, fusion_dim=32)
FAST = dict(batch_size=64, frames=8, test_frames=16, patience=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The adversarial generator at a toy size: 16 identities × 12 clips, distractors in val,
    bodies unique per clip, half the voices someone else's, 15 % face-less clips."""
    root = tmp_path_factory.mktemp("synthetic_iqiyi")
    spec = SyntheticSpec(identities=16, train_clips=12, val_clips=4, val_noise_clips=24, distractor_people=30,
                         dim=64, max_faces=40, max_other_frames=4, nuisance_rank=8, seed=1)
    return write_synthetic_iqiyi(root, spec)


def _map(model_dir, root, frames=16):
    model = load_model(model_dir, "cpu")
    val = load_iqiyi(root, "val")
    return scores_map(model.scores(val, frames), val.clip_ids, model.classes, val.labels)


def test_default_training_beats_the_prototype_on_unseen_clips(synth, tmp_path):
    data = load_iqiyi(synth, "train")
    assert "SYNTHETIC" in (synth / "SYNTHETIC.txt").read_text()
    model_kw, train_kw = recipe_configs("default", "attentionvlad", SMALL, dict(test_frames=16, epochs=30, patience=6))
    result = run_train(data, ModelConfig(aggregation="attentionvlad", fusion="mlma", **model_kw),
                       TrainConfig(**train_kw), tmp_path / "m", progress=False)
    history = result.history[0]
    assert history[-1].loss < history[0].loss
    assert result.val_map is not None and result.prototype_val_map is not None and result.val_clips > 0
    meta = json.loads((tmp_path / "m/model.json").read_text())
    assert meta["validation"]["map"] == pytest.approx(result.val_map)
    kept = result.best_epochs[0]
    assert history[kept - 1].val_map == max(h.val_map for h in history)  # the best epoch is the one kept …
    assert all(h.val_map < history[kept - 1].val_map for h in history[kept:])  # … the last of the best
    score = _map(tmp_path / "m", synth)
    proto = PrototypeModel.fit(data)
    val = load_iqiyi(synth, "val")
    baseline = scores_map(proto.scores(val), val.clip_ids, proto.classes, val.labels)
    print(f"synthetic val mAP: trained {score:.3f}, prototype {baseline:.3f}")
    assert score >= baseline + 0.05, (score, baseline)


def test_paper_recipe_is_famf_as_printed():
    model_kw, train_kw = recipe_configs("paper", "attentionvlad")
    assert model_kw == dict(hidden=4096, fusion_dim=512, dropout=0.0)
    cfg = TrainConfig(**train_kw)
    assert (cfg.epochs, cfg.schedule, cfg.decay_start, cfg.decay_every, cfg.batch_size) == (70, "step", 50, 10, 4096)
    assert (cfg.lr, cfg.lr_aggregation, cfg.weight_decay, cfg.modality_dropout, cfg.patience) == (0.004, 0.04, 0, 0, 0)
    assert recipe_configs("paper", "netvlad")[1].get("lr_aggregation") is None  # 0.04 is AttentionVLAD's
    assert recipe_configs("paper", "attentionvlad", train=dict(lr_aggregation=0.01))[1]["lr_aggregation"] == 0.01
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_configs("fast", "avg")


def _tiny_trainer(aggregation, recipe, **train):
    model_kw, train_kw = recipe_configs(recipe, aggregation, dict(hidden=8, fusion_dim=4), train)
    cfg = ModelConfig(aggregation=aggregation, fusion="concat", classes=["0", "1", "2"], **model_kw)
    from vidpipe.models.config import ModalitySpec

    cfg.modalities = [ModalitySpec("face", 6)]
    return Trainer(cfg, TrainConfig(**train_kw), torch.device("cpu"), seed=0)


@pytest.mark.parametrize("aggregation, recipe, rates", [
    ("attentionvlad", "paper", {"rest": 0.004, "aggregation": 0.04}),
    ("netvlad", "paper", {"rest": 0.004, "aggregation": 0.004}),
    ("ghostvlad", "paper", {"rest": 0.004, "aggregation": 0.004}),
    ("attentionvlad", "default", {"rest": 0.001, "aggregation": 0.001}),
])
def test_learning_rate_groups(aggregation, recipe, rates):
    trainer = _tiny_trainer(aggregation, recipe)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert {name: g["lr"] for name, g in groups.items()} == rates
    agg_params = {id(p) for p in trainer.model.encoders["face"].aggregator.parameters()}
    assert {id(p) for p in groups["aggregation"]["params"]} == agg_params
    assert not agg_params & {id(p) for p in groups["rest"]["params"]}
    assert len(groups["aggregation"]["params"]) + len(groups["rest"]["params"]) == len(list(trainer.model.parameters()))


def test_paper_schedule_steps_and_is_applied_to_every_group():
    cfg = TrainConfig(**recipe_configs("paper", "attentionvlad")[1])
    assert [cfg.lr_factor(e) for e in (0, 49, 50, 59, 60, 69)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = TrainConfig(epochs=10)
    assert cos.lr_factor(0) == 1 and cos.lr_factor(5) == pytest.approx(0.5) and cos.lr_factor(10) == pytest.approx(0)
    trainer = _tiny_trainer("attentionvlad", "paper", decay_start=1, decay_every=1, batch_size=4)
    data = ClipSet([f"c{i}" for i in range(8)], {"face": FrameBank.from_rows(
        np.repeat(np.arange(8), 3), np.random.default_rng(0).standard_normal((24, 6)).astype(np.float16), 8, 32)})
    targets = torch.tensor([1, 2] * 4)
    for factor in [1, 0.1, 0.01]:
        trainer.run_epoch(data, targets)
        assert {g["name"]: g["lr"] for g in trainer.optimizer.param_groups} == pytest.approx(
            {"rest": 0.004 * factor, "aggregation": 0.04 * factor})


def test_modality_dropout_hides_modalities_but_never_all():
    g = torch.Generator().manual_seed(0)
    present = {"face": torch.tensor([True] * 2000 + [False] * 1000), "audio": torch.ones(3000, dtype=torch.bool)}
    out = hide_modalities(present, 0.3, g)
    both = torch.stack(list(out.values()), 1)
    assert both.any(1).all()  # every clip keeps something
    assert not (out["face"] & ~present["face"]).any()  # nothing appears that was absent
    hidden_face = 1 - out["face"][:2000].float().mean()
    assert 0.2 < hidden_face < 0.3  # 0.3, less the clips that would have lost both
    assert out["audio"][2000:].all()  # a face-less clip keeps its only modality
    assert hide_modalities(present, 0.0, g) is present


def test_early_stopping_keeps_the_best_epoch(synth, tmp_path):
    data = load_iqiyi(synth, "train", modalities=["face"])
    result = run_train(data, ModelConfig(aggregation="avg", fusion="concat", **SMALL),
                       TrainConfig(epochs=30, patience=2, lr=0.05, batch_size=64, frames=8, test_frames=16),
                       tmp_path / "m", progress=False)
    history = result.history[0]
    best = max(range(len(history)), key=lambda i: (history[i].val_map, i))  # ties: the later epoch
    assert result.best_epochs == [best + 1] and len(history) <= best + 1 + 2  # stopped 2 epochs after the best
    kept = torch.load(tmp_path / "m/member_0/model.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "m/member_0/checkpoint.pt", weights_only=True)
    assert torch.equal(last["best"]["model"]["classifier.0.weight"], kept["classifier.0.weight"])


def test_resume_gives_identical_results(synth, tmp_path):
    data = load_iqiyi(synth, "train", modalities=["face", "audio"])
    mcfg = dict(aggregation="netvlad", fusion="mma", dropout=0.5, **SMALL)
    tcfg = dict(seed=7, modality_dropout=0.3, schedule="step", decay_start=1, decay_every=1, **FAST)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, **tcfg), tmp_path / "straight", progress=False)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=2, **tcfg), tmp_path / "resumed", progress=False)
    with pytest.raises(ValueError, match="already holds a model"):
        run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, **tcfg), tmp_path / "resumed", progress=False)
    run_train(data, ModelConfig(**mcfg), TrainConfig(epochs=4, **tcfg), tmp_path / "resumed", resume=True,
              progress=False)
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
    parts = [FusionModel(model.cfg, [net], model.device).predict_proba(val, frames=8) for net in model.members]
    np.testing.assert_allclose(p, sum(parts) / 3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_prototype_is_the_mean_of_normalised_clip_means(synth):
    data = load_iqiyi(synth, "train", modalities=["face", "audio"])
    proto = PrototypeModel.fit(data)
    bank = data.banks["face"]
    first = data.labels.index(proto.classes[1])
    frames = bank.frames[int(bank.start[first]) : int(bank.start[first] + bank.count[first])].float().numpy()
    clip = (frames / np.linalg.norm(frames, axis=1, keepdims=True)).mean(0)
    clip /= np.linalg.norm(clip)
    scores = proto.scores(data.subset([first]))
    assert scores[0, 0] == proto.threshold  # the noise column: the open-set threshold
    np.testing.assert_allclose(scores[0, 1:], proto.prototypes @ clip, rtol=1e-4, atol=1e-5)
    assert np.linalg.norm(proto.prototypes, axis=1) == pytest.approx(1)
    both = PrototypeModel.fit(data, ["face", "audio"])
    assert both.prototypes.shape[1] == 2 * bank.dim


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
              TrainConfig(epochs=30, batch_size=32, frames=5, patience=0), tmp_path / "m", progress=False)
    model = FusionModel.load(tmp_path / "m", "cpu")
    test_people = np.repeat(np.arange(6), 4)
    test = _toy_set(rng, face, head, test_people, np.ones(len(test_people), bool))  # no face at all
    probs = model.predict_proba(test, frames=5)
    assert np.isfinite(probs).all()
    predicted = np.array(model.classes)[probs.argmax(1)]
    assert (predicted == np.array(test.labels)).mean() >= 0.8  # chance is 1/7
    # per identity, the face-less clips of that identity come first
    lists = rank_clips(probs, test.clip_ids, model.classes, top_k=4)
    hits = [sum(test.labels[int(c[1:])] == ident for c, _ in ranked) for ident, ranked in lists.items()]
    assert np.mean(hits) >= 3


TINY = ["--hidden", "64", "--fusion-dim", "16", "--frames", "6", "--quiet"]


def test_cli_iqiyi_train_predict_eval(synth, tmp_path):
    runner = CliRunner()
    args = ["--iqiyi", str(synth), "--out", str(tmp_path / "m"), "--arch", "iqiyi", "--epochs", "3", "--seed", "3",
            "--mlma-softmax", "input", "--store-cache", str(tmp_path / "cache"), *TINY]
    r = runner.invoke(train, args)
    assert r.exit_code == 0, r.output
    assert "val mAP@100 on" in r.output and "prototype (face)" in r.output
    meta = json.loads((tmp_path / "m/model.json").read_text())
    assert meta["model_config"]["fus"]["mlma_softmax_over"] == "input"
    assert (tmp_path / "cache/train/faces").is_dir()  # the converted store
    r = runner.invoke(predict, ["--iqiyi", str(synth), "--split", "val", "--model", str(tmp_path / "m"),
                                "--submission", str(tmp_path / "sub.txt"), "--out", str(tmp_path / "out"),
                                "--store-cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    val_clips = len(load_iqiyi(synth, "val", cache=tmp_path / "cache").clip_ids)
    assert len(lines) == 16 and all(t.endswith(".mp4") for t in lines[0].split()[1:])
    assert len(lines[0].split()) == 1 + min(100, val_clips)
    table = pd.read_parquet(tmp_path / "out/identities")
    assert list(table.columns) == IDENTITY_SCHEMA.names and set(table["source"]) == {"model"}  # `vidpipe tag`'s table
    preds = pd.read_parquet(tmp_path / "out/predictions")
    assert list(preds.columns) == ["clip_id", "identity", "probability", "rank"] and len(preds) == 5 * val_clips
    r = runner.invoke(evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(synth / "val_gt.txt"),
                                 "--identities", str(tmp_path / "out/identities")])
    assert r.exit_code == 0 and r.output.startswith("mAP=") and "clip_acc=" in r.output
    r = runner.invoke(evaluate, ["--submission", str(tmp_path / "sub.txt"), "--gt", str(synth / "val_gt.txt"),
                                 "--strict"])
    assert r.exit_code == 0 and r.output.startswith("mAP=")
    # the same run again into the same directory: refused in one line
    r = runner.invoke(train, args)
    assert r.exit_code == 1 and "already holds a model" in r.output and "Traceback" not in r.output


def test_cli_prototype_route(synth, tmp_path):
    runner = CliRunner()
    r = runner.invoke(train, ["--iqiyi", str(synth), "--out", str(tmp_path / "p"), "--arch", "prototype"])
    assert r.exit_code == 0, r.output
    assert "prototype (face)" in r.output and "prototypes of 16 identities" in r.output
    r = runner.invoke(predict, ["--iqiyi", str(synth), "--model", str(tmp_path / "p"), "--submission",
                                str(tmp_path / "sub.txt")])
    assert r.exit_code == 0, r.output
    val = load_iqiyi(synth, "val", modalities=["face"])
    proto = PrototypeModel.fit(load_iqiyi(synth, "train", modalities=["face"]))
    expected = rank_clips(proto.scores(val), val.clip_ids, proto.classes)
    got = iqiyi_io.read_id_lists(tmp_path / "sub.txt")
    assert got == {k: [c for c, _ in v] for k, v in expected.items()}
    truth = iqiyi_io.read_id_lists(synth / "val_gt.txt")
    assert evaluate_retrieval(got, truth).map == pytest.approx(scores_map(proto.scores(val), val.clip_ids,
                                                                          proto.classes, val.labels))


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
