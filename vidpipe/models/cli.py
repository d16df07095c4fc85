"""Click commands ``train``, ``predict`` and ``eval`` (registered on the ``vidpipe`` group).

Torch and the models are imported inside the commands so that ``vidpipe --help`` stays fast.
Bad input ends in one line (click.ClickException), never a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_dir = click.Path(file_okay=False, path_type=Path)
_file = click.Path(dir_okay=False, path_type=Path)


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the data/format errors of the model code into a one-line ClickException."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vidpipe.eval.iqiyi_io import IqiyiFormatError
        from vidpipe.eval.official import StrictEvalError
        from vidpipe.models.data import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, IqiyiFormatError, StrictEvalError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    return wrapper


def _passive_threads() -> None:
    """Idle OpenMP threads sleep instead of spinning: on cores shared with other work, spinning
    made training 10× slower here. Takes effect only before torch loads, hence in the commands."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _modalities(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _load_data(iqiyi: Path | None, split: str, features: Path | None, labels: Path | None,
               modalities: list[str] | None, max_frames: int | None, store_cache: Path | None, quiet: bool):
    from vidpipe.models.data import DataError, load_iqiyi, load_store, read_labels

    if (iqiyi is None) == (features is None):
        raise DataError("give exactly one of --iqiyi DIR or --features OUT")
    if iqiyi is not None:
        if not iqiyi.is_dir():
            raise DataError(f"--iqiyi {iqiyi}: no such directory")
        log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
        return load_iqiyi(iqiyi, split, modalities, max_frames, cache=store_cache, log=log, progress=not quiet)
    lab = read_labels(labels) if labels is not None else None
    return load_store(features, lab, modalities, max_frames)


_store_cache = click.option("--store-cache", type=_dir,
                            help="With --iqiyi: where the converted store goes [default: DIR/vidpipe_store, "
                                 "or the user cache when DIR is read-only].")


@click.command("train")
@click.option("--iqiyi", type=_dir, help="An iQIYI-VID-2019 directory (face_train_v2.pickle, train_gt.txt, …).")
@click.option("--features", type=_dir, help="A vidpipe feature store (OUT/faces, heads, bodies, audio).")
@click.option("--labels", type=_file, help="With --features: CSV 'clip_id,identity' (0 or empty = noise).")
@click.option("--out", "out_dir", type=_dir, required=True, help="Model directory to write.")
@click.option("--arch", default="famf", show_default=True,
              help="prototype (no training), iqiyi (NetVLAD+MMA), famf (AttentionVLAD+MLMA), famf-mf, famf-fa, "
                   "ghostvlad, nextvlad, avg, or AGG+FUSION.")
@click.option("--recipe", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="default: generalises from a few hundred clips; paper: FAMF §4.3 as printed.")
@click.option("--modalities", help="Comma list among face,head,body,audio [default: all present; prototype: face].")
@click.option("--epochs", type=click.IntRange(1), help="At most this many epochs [default 60; paper 70].")
@click.option("--patience", type=click.IntRange(0),
              help="Stop after this many epochs without a better val mAP; 0 = never [default 25; paper 0].")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5),
              help="Share of each identity's clips held out for validation [default 0.15].")
@click.option("--schedule", type=click.Choice(["cosine", "step"]), help="Learning-rate schedule [default cosine; paper step].")
@click.option("--decay-start", type=click.IntRange(0), help="step: rates fall ÷10 after this epoch … [50]")
@click.option("--decay-every", type=click.IntRange(1), help="… and every this many epochs after [10].")
@click.option("--lr", type=float, help="Rate of every parameter but the face aggregator's [default 0.001; paper 0.004].")
@click.option("--lr-aggregation", type=float,
              help="Rate of the face aggregator [default: --lr; paper: 0.04 for AttentionVLAD only].")
@click.option("--weight-decay", type=float, help="AdamW weight decay [default 0.05; paper 0].")
@click.option("--dropout", type=click.FloatRange(0, 0.95), help="After each hidden layer [default 0.5; paper 0].")
@click.option("--modality-dropout", type=click.FloatRange(0, 0.95),
              help="Chance to hide a modality from a training clip [default 0.3; paper 0].")
@click.option("--label-smoothing", type=click.FloatRange(0, 0.5), help="[default 0.1; paper 0]")
@click.option("--batch-size", type=click.IntRange(0), help="0 = about 16 steps per epoch, 32 to 512 [default 0; paper 4096].")
@click.option("--frames", type=click.IntRange(1), help="Frames sampled per clip and step (N) [24].")
@click.option("--max-frames", type=click.IntRange(1), help="Sample only from a clip's best this many [default: all].")
@click.option("--clusters", type=click.IntRange(1), default=8, show_default=True, help="VLAD clusters K.")
@click.option("--hidden", type=click.IntRange(1), help="Classifier width [default 1024; paper 4096].")
@click.option("--fusion-dim", type=click.IntRange(1), help="Token width [default 256; paper 512].")
@click.option("--mlma-softmax", type=click.Choice(["output", "input"]), default="output", show_default=True,
              help="MLMA eq. 5: normalise over outputs (as printed) or over inputs (as MMA).")
@click.option("--ensemble", type=click.IntRange(1), default=1, show_default=True, help="Members on different partitions.")
@click.option("--drop-noise", is_flag=True, help="Leave the noise clips (label 0) out of training, as FAMF.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the training found in --out.")
@_store_cache
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@_one_line_errors
def train(iqiyi, features, labels, out_dir, arch, recipe, modalities, epochs, patience, val_fraction, schedule,
          decay_start, decay_every, lr, lr_aggregation, weight_decay, dropout, modality_dropout, label_smoothing,
          batch_size, frames, max_frames, clusters, hidden, fusion_dim, mlma_softmax, ensemble, drop_noise, seed,
          device, resume, store_cache, quiet) -> None:
    """Train the fusion model (aggregation → fusion → MLP), or the prototype baseline, on
    labelled clips; prints both on held-out clips."""
    _passive_threads()
    from vidpipe.models.config import (PROTOTYPE, AggregationConfig, FusionConfig, ModelConfig, TrainConfig,
                                       recipe_configs)

    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    if features is not None and labels is None:
        raise click.ClickException("--features needs --labels FILE (CSV clip_id,identity)")
    mods = _modalities(modalities)
    if arch.strip().lower() == PROTOTYPE:
        data = _load_data(iqiyi, "train", features, labels, mods or ["face"], None, store_cache, quiet)
        _train_prototype(data, mods or ["face"], out_dir, val_fraction if val_fraction is not None else 0.15,
                         seed, log)
        return
    from vidpipe.models.net import resolve_arch
    from vidpipe.models.train import train as run_train

    agg, fus = resolve_arch(arch)
    model_kw, train_kw = recipe_configs(
        recipe, agg,
        dict(hidden=hidden, fusion_dim=fusion_dim, dropout=dropout),
        dict(epochs=epochs, patience=patience, val_fraction=val_fraction, schedule=schedule, decay_start=decay_start,
             decay_every=decay_every, lr=lr, lr_aggregation=lr_aggregation, weight_decay=weight_decay,
             modality_dropout=modality_dropout, label_smoothing=label_smoothing, batch_size=batch_size,
             frames=frames, max_frames=max_frames),
    )
    model_cfg = ModelConfig(arch=arch, aggregation=agg, fusion=fus, agg=AggregationConfig(clusters=clusters),
                            fus=FusionConfig(mlma_softmax_over=mlma_softmax), **model_kw)
    train_cfg = TrainConfig(seed=seed, drop_noise=drop_noise, ensemble=ensemble, device=device, **train_kw)
    data = _load_data(iqiyi, "train", features, labels, mods, None, store_cache, quiet)
    log(f"training {arch} ({agg} + {fus}, recipe {recipe}) on {len(data)} clips, modalities {', '.join(data.banks)}")
    result = run_train(data, model_cfg, train_cfg, out_dir, resume=resume, progress=not quiet, log=log)
    click.echo(f"model written to {result.model_dir} ({len(result.members)} member(s))")
    if result.val_map is not None:
        proto = "–" if result.prototype_val_map is None else f"{result.prototype_val_map:.4f}"
        click.echo(f"val mAP@100 on {result.val_clips} held-out clips: prototype (face) {proto} · {arch} "
                   f"{result.val_map:.4f} (kept epoch {', '.join(map(str, result.best_epochs))})")
        if result.prototype_val_map is not None and result.val_map < result.prototype_val_map:
            click.echo("training did not beat the prototype baseline on these clips: consider --arch prototype",
                       err=True)


def _train_prototype(data, modalities: list[str], out_dir: Path, val_fraction: float, seed: int, log) -> None:
    from vidpipe.eval.metrics import scores_map
    from vidpipe.models.data import NOISE, DataError, stratified_split
    from vidpipe.models.prototype import PrototypeModel

    if data.labels is None:
        raise DataError("the training clips have no labels")
    if (out_dir / "model.json").exists():
        raise DataError(f"{out_dir} already holds a model; choose a new --out")
    data = data.subset([i for i, label in enumerate(data.labels) if label is not None])
    train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
    if len(val_idx):
        val = data.subset(val_idx)
        held = PrototypeModel.fit(data.subset(train_idx), modalities)
        score = scores_map(held.scores(val), val.clip_ids, held.classes, val.labels)
        click.echo(f"val mAP@100 on {len(val_idx)} held-out clips: prototype ({'+'.join(modalities)}) {score:.4f}")
    model = PrototypeModel.fit(data, modalities)  # the kept model uses every labelled clip
    model.save(out_dir)
    n_ids = len([c for c in model.classes if c != NOISE])
    click.echo(f"prototypes of {n_ids} identities written to {out_dir}")


@click.command("predict")
@click.option("--iqiyi", type=_dir, help="Directory of the iQIYI-VID-2019 files.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--features", type=_dir, help="A vidpipe feature store; predictions are written into it.")
@click.option("--model", "model_dir", type=_dir, required=True)
@click.option("--submission", type=_file, help="Write the iQIYI submission file (ID v1.mp4 … v100.mp4).")
@click.option("--out", "out_dir", type=_dir, help="Where to write predictions/, identities/ and retrieval/ "
                                                   "(default: --features).")
@click.option("--frames", type=click.IntRange(1), default=32, show_default=True,
              help="A clip's best frames the fusion model sees (the prototype uses all).")
@click.option("--top-k", type=click.IntRange(1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@_store_cache
@_one_line_errors
def predict(iqiyi, split, features, model_dir, submission, out_dir, frames, top_k, batch_size, device,
            store_cache) -> None:
    """Per-clip identity scores and per-identity top-k clip rankings."""
    _passive_threads()
    from vidpipe.eval.metrics import rank_clips
    from vidpipe.models.infer import FusionModel, load_model, write_predictions, write_submission

    model = load_model(model_dir, device)
    out_dir = out_dir or features
    if submission is None and out_dir is None:
        raise click.ClickException("nothing to write: give --submission FILE and/or --out DIR")
    cap = frames if isinstance(model, FusionModel) else None
    data = _load_data(iqiyi, split, features, None, None, cap, store_cache, False)
    scores = model.scores(data, frames, batch_size)
    lists = rank_clips(scores, data.clip_ids, model.classes, top_k)
    if out_dir is not None:
        write_predictions(out_dir, data.clip_ids, scores, model.classes, lists)
        click.echo(f"predictions for {len(data)} clips written to {Path(out_dir) / 'predictions'}")
    if submission is not None:
        write_submission(submission, lists)
        click.echo(f"submission for {len(lists)} identities written to {submission}")


@click.command("eval")
@click.option("--submission", type=_file, required=True, help="ID v1.mp4 … per line.")
@click.option("--gt", type=_file, required=True, help="val_gt.txt layout (ID v1.mp4 …) or train_gt.txt layout.")
@click.option("--strict", is_flag=True,
              help="Exactly the challenge's evaluation_map.py: names with .mp4, at most 100 per line, one line "
                   "per identity, at most as many lines as the ground truth; errors instead of fixing.")
@click.option("--identities", type=_dir, help="OUT/identities of 'vidpipe predict': adds per-clip accuracy.")
@click.option("--top-k", type=click.IntRange(1), default=100, show_default=True)
@_one_line_errors
def evaluate(submission, gt, strict, identities, top_k) -> None:
    """mAP@100 as the iQIYI-VID evaluation, and rank-1."""
    from vidpipe.eval import iqiyi_io
    from vidpipe.eval.metrics import clip_accuracy, evaluate_retrieval

    for path in (submission, gt):
        if not path.is_file():
            raise click.ClickException(f"{path}: no such file")
    if strict:
        from vidpipe.eval.official import strict_map

        click.echo(f"mAP={strict_map(submission, gt):.6f} (strict: evaluation_map.py)")
        return
    truth = iqiyi_io.labels_to_id_lists(iqiyi_io.read_gt(gt))
    lists = iqiyi_io.read_id_lists(submission)
    scores = evaluate_retrieval(lists, truth, top_k)
    line = f"mAP={scores.map:.6f} rank1={scores.rank1:.6f} identities={scores.num_identities}"
    if identities is not None:
        import pandas as pd

        table = pd.read_parquet(identities, columns=["clip_id", "identity"])
        predicted = dict(zip(table["clip_id"], table["identity"]))
        labels = {c: i for i, clips in truth.items() for c in clips}
        line += f" clip_acc={clip_accuracy(predicted, labels):.6f}"
    click.echo(line)
    for note in iqiyi_io.lenient_notes(submission, truth, top_k):
        click.echo(f"lenient: {note} (--strict refuses this)", err=True)
