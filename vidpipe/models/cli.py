"""Click commands ``train``, ``predict`` and ``eval`` (registered on the ``vidpipe`` group).

Torch and the models are imported inside the commands so that ``vidpipe --help`` stays fast.
Bad input ends in one line (click.ClickException), never a traceback.
"""

from __future__ import annotations

import functools
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
        from vidpipe.models.data import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, IqiyiFormatError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    return wrapper


def _load_data(iqiyi: Path | None, split: str, features: Path | None, labels: Path | None,
               modalities: str | None, max_frames: int):
    from vidpipe.models.data import DataError, load_iqiyi, load_store, read_labels

    if (iqiyi is None) == (features is None):
        raise DataError("give exactly one of --iqiyi DIR or --features OUT")
    mods = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    if iqiyi is not None:
        if not iqiyi.is_dir():
            raise DataError(f"--iqiyi {iqiyi}: no such directory")
        return load_iqiyi(iqiyi, split, mods, max_frames)
    lab = read_labels(labels) if labels is not None else None
    return load_store(features, lab, mods, max_frames)


@click.command("train")
@click.option("--iqiyi", type=_dir, help="Directory of the iQIYI-VID-2019 files (face_train.pickle, train_gt.txt, …).")
@click.option("--features", type=_dir, help="A vidpipe feature store (OUT/faces, heads, bodies, audio).")
@click.option("--labels", type=_file, help="With --features: CSV 'clip_id,identity' (0 or empty = noise).")
@click.option("--out", "out_dir", type=_dir, required=True, help="Model directory to write.")
@click.option("--arch", default="famf", show_default=True,
              help="iqiyi (NetVLAD+MMA), famf (AttentionVLAD+MLMA), famf-mf, famf-fa, ghostvlad, nextvlad, avg, or AGG+FUSION.")
@click.option("--epochs", type=click.IntRange(1), default=70, show_default=True)
@click.option("--decay-start", type=click.IntRange(0), default=50, show_default=True, help="Epoch after which rates fall ÷10 …")
@click.option("--decay-every", type=click.IntRange(1), default=10, show_default=True, help="… every this many epochs.")
@click.option("--lr-aggregation", type=float, default=0.04, show_default=True)
@click.option("--lr", "lr_rest", type=float, default=0.004, show_default=True, help="Rate of every non-aggregation parameter.")
@click.option("--batch-size", type=click.IntRange(2), default=4096, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=24, show_default=True, help="Frames sampled per clip (N).")
@click.option("--clusters", type=click.IntRange(1), default=8, show_default=True, help="VLAD clusters K.")
@click.option("--hidden", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--fusion-dim", type=click.IntRange(1), default=512, show_default=True)
@click.option("--modalities", help="Comma list among face,head,body,audio (default: all present).")
@click.option("--ensemble", type=click.IntRange(1), default=1, show_default=True, help="Members on different partitions.")
@click.option("--drop-noise", is_flag=True, help="Leave the noise clips (label 0) out of training, as FAMF.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the training found in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@_one_line_errors
def train(iqiyi, features, labels, out_dir, arch, epochs, decay_start, decay_every, lr_aggregation, lr_rest,
          batch_size, frames, clusters, hidden, fusion_dim, modalities, ensemble, drop_noise, seed, device,
          resume, quiet) -> None:
    """Train the fusion model (aggregation → fusion → MLP) on labelled clips."""
    from vidpipe.models.config import AggregationConfig, ModelConfig, TrainConfig, resolve_arch
    from vidpipe.models.train import train as run_train

    agg, fus = resolve_arch(arch)
    if features is not None and labels is None:
        raise click.ClickException("--features needs --labels FILE (CSV clip_id,identity)")
    data = _load_data(iqiyi, "train", features, labels, modalities, 32)
    model_cfg = ModelConfig(arch=arch, aggregation=agg, fusion=fus, fusion_dim=fusion_dim, hidden=hidden,
                            agg=AggregationConfig(clusters=clusters))
    train_cfg = TrainConfig(epochs=epochs, decay_start=decay_start, decay_every=decay_every,
                            lr_aggregation=lr_aggregation, lr_rest=lr_rest, batch_size=batch_size, frames=frames,
                            seed=seed, drop_noise=drop_noise, ensemble=ensemble, device=device)
    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    log(f"training {arch} ({agg} + {fus}) on {len(data)} clips, modalities {', '.join(data.banks)}")
    result = run_train(data, model_cfg, train_cfg, out_dir, resume=resume, progress=not quiet, log=log)
    click.echo(f"model written to {result.model_dir} ({len(result.members)} member(s))")


@click.command("predict")
@click.option("--iqiyi", type=_dir, help="Directory of the iQIYI-VID-2019 files.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--features", type=_dir, help="A vidpipe feature store; identities are written into it.")
@click.option("--model", "model_dir", type=_dir, required=True)
@click.option("--submission", type=_file, help="Write the iQIYI submission file (ID v1.mp4 … v100.mp4).")
@click.option("--out", "out_dir", type=_dir, help="Where to write identities/ and retrieval/ (default: --features).")
@click.option("--frames", type=click.IntRange(1), default=32, show_default=True, help="Frames per clip at test time.")
@click.option("--top-k", type=click.IntRange(1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@_one_line_errors
def predict(iqiyi, split, features, model_dir, submission, out_dir, frames, top_k, batch_size, device) -> None:
    """Per-clip identity probabilities and per-identity top-k clip rankings."""
    from vidpipe.models.infer import FusionModel, retrieval_lists, write_predictions, write_submission

    model = FusionModel.load(model_dir, device)
    data = _load_data(iqiyi, split, features, None, None, max(frames, 32))
    out_dir = out_dir or features
    if submission is None and out_dir is None:
        raise click.ClickException("nothing to write: give --submission FILE and/or --out DIR")
    probs = model.predict_proba(data, frames=frames, batch_size=batch_size)
    lists = retrieval_lists(probs, data.clip_ids, model.classes, top_k)
    if out_dir is not None:
        write_predictions(out_dir, data.clip_ids, probs, model.classes, lists)
        click.echo(f"identities of {len(data)} clips written to {Path(out_dir) / 'identities'}")
    if submission is not None:
        write_submission(submission, lists)
        click.echo(f"submission for {len(lists)} identities written to {submission}")


@click.command("eval")
@click.option("--submission", type=_file, required=True, help="ID v1.mp4 … per line.")
@click.option("--gt", type=_file, required=True, help="val_gt.txt layout (ID v1.mp4 …) or train_gt.txt layout.")
@click.option("--identities", type=_dir, help="OUT/identities of 'vidpipe predict': adds per-clip accuracy.")
@click.option("--top-k", type=click.IntRange(1), default=100, show_default=True)
@_one_line_errors
def evaluate(submission, gt, identities, top_k) -> None:
    """mAP@100 exactly as the iQIYI-VID evaluation, and rank-1."""
    from vidpipe.eval import iqiyi_io
    from vidpipe.eval.metrics import clip_accuracy, evaluate_retrieval

    for path in (submission, gt):
        if not path.is_file():
            raise click.ClickException(f"{path}: no such file")
    truth = iqiyi_io.labels_to_id_lists(iqiyi_io.read_gt(gt))
    scores = evaluate_retrieval(iqiyi_io.read_id_lists(submission), truth, top_k)
    line = f"mAP={scores.map:.6f} rank1={scores.rank1:.6f} identities={scores.num_identities}"
    if identities is not None:
        import pandas as pd

        table = pd.read_parquet(identities, columns=["clip_id", "identity"])
        predicted = dict(zip(table["clip_id"], table["identity"]))
        labels = {c: i for i, clips in truth.items() for c in clips}
        line += f" clip_acc={clip_accuracy(predicted, labels):.6f}"
    click.echo(line)
