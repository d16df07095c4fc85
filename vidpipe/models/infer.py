"""Prediction: loading a model directory (fusion model or prototype baseline), per-clip
identity scores (an ensemble sums its members' distributions, iQIYI §6.4), and the outputs:
``OUT/predictions/``, ``OUT/identities/``, ``OUT/retrieval/`` and the iQIYI submission file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidpipe.eval import iqiyi_io
from vidpipe.models import prototype
from vidpipe.models.config import ModelConfig
from vidpipe.models.data import ClipSet, DataError
from vidpipe.models.net import FusionNet
from vidpipe.models.runtime import probabilities, select_device
from vidpipe.models.train import FORMAT


@dataclass
class FusionModel:
    """A trained model directory: one or more members sharing one config."""

    cfg: ModelConfig
    members: list[FusionNet]
    device: torch.device

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> "FusionModel":
        model_dir = Path(model_dir)
        meta = _manifest(model_dir)
        if meta.get("format") != FORMAT:
            raise DataError(f"{model_dir / 'model.json'}: unknown model format {meta.get('format')!r}")
        dev = select_device(device)
        members = []
        for name in meta["members"]:
            path = model_dir / name / "model.pt"
            if not path.is_file():
                raise DataError(f"{path} missing: the training did not finish (resume it with --resume)")
            state = torch.load(path, map_location=dev, weights_only=True)
            cfg = ModelConfig.from_dict(state["model_config"])
            net = FusionNet(cfg).to(dev)
            net.load_state_dict(state["model"])
            members.append(net.eval())
        return cls(members[0].cfg, members, dev)

    @property
    def classes(self) -> list[str]:
        return self.cfg.classes

    def predict_proba(self, data: ClipSet, frames: int = 32, batch_size: int = 1024) -> np.ndarray:
        """(clips, classes) probabilities: the members' distributions summed, divided by their
        number (the ranking is the sum's; the scale stays a probability)."""
        return probabilities(self.members, self.cfg.modalities, data.to(self.device), self.device, frames, batch_size)

    scores = predict_proba


def _manifest(model_dir: Path) -> dict:
    manifest = model_dir / "model.json"
    if not manifest.is_file():
        raise DataError(f"{model_dir} is not a model directory (no model.json); train one with 'vidpipe train'")
    return json.loads(manifest.read_text())


def load_model(model_dir: str | Path, device: str = "auto") -> FusionModel | prototype.PrototypeModel:
    """A fusion model or a prototype baseline, by what ``model_dir`` holds; both answer
    ``classes`` and ``scores(data, frames, batch_size)``."""
    model_dir = Path(model_dir)
    if _manifest(model_dir).get("format") == prototype.FORMAT:
        return prototype.PrototypeModel.load(model_dir)
    return FusionModel.load(model_dir, device)


def _write_parquet(table, directory: Path, name: str) -> Path:
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_predictions(
    out: str | Path, clip_ids: list[str], scores: np.ndarray, classes: list[str],
    lists: dict[str, list[tuple[str, float]]], source: str = "model", per_clip: int = 5,
) -> None:
    """Three tables under ``out`` (file ``predictions.parquet`` in each):

    * ``predictions/``: clip_id, identity, probability, rank — each clip's ``per_clip`` most
      likely classes ("0" = noise), rank 0 first (the prototype writes its cosines);
    * ``identities/predictions.parquet``: each clip's best class in the identities table's
      schema (source 'model'), where `vidpipe tag`'s rows meet it;
    * ``retrieval/``: identity, rank, clip_id, score — each identity's top clips.
    """
    import pyarrow as pa

    from vidpipe.identities.table import write_identities

    out = Path(out)
    k = min(per_clip, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    _write_parquet(pa.table({
        "clip_id": pa.array(np.repeat(np.asarray(clip_ids, dtype=object), k), pa.string()),
        "identity": pa.array(np.asarray(classes, dtype=object)[top.ravel()], pa.string()),
        "probability": pa.array(np.take_along_axis(scores, top, 1).ravel().astype(np.float32), pa.float32()),
        "rank": pa.array(np.tile(np.arange(k, dtype=np.int32), len(clip_ids)), pa.int32()),
    }), out / "predictions", "predictions.parquet")
    best = top[:, 0] if k else np.zeros(0, np.int64)
    write_identities(out, "predictions", pa.table({  # the table `vidpipe tag` writes beside it
        "clip_id": pa.array(clip_ids, pa.string()),
        "identity": pa.array([classes[i] for i in best], pa.string()),
        "score": pa.array(scores[np.arange(len(best)), best].astype(np.float32), pa.float32()),
        "source": pa.array([source] * len(best), pa.string()),
    }).append_column("track", pa.nulls(len(best), pa.int32()))
      .append_column("start_s", pa.nulls(len(best), pa.float64()))
      .append_column("end_s", pa.nulls(len(best), pa.float64())))
    rows = [(identity, r, clip, s) for identity, ranked in lists.items() for r, (clip, s) in enumerate(ranked)]
    _write_parquet(pa.table({
        "identity": pa.array([r[0] for r in rows], pa.string()),
        "rank": pa.array([r[1] for r in rows], pa.int32()),
        "clip_id": pa.array([r[2] for r in rows], pa.string()),
        "score": pa.array([r[3] for r in rows], pa.float32()),
    }), out / "retrieval", "predictions.parquet")


def write_submission(path: str | Path, lists: dict[str, list[tuple[str, float]]]) -> None:
    """The iQIYI submission: ``ID v1.mp4 … v100.mp4`` per identity."""
    iqiyi_io.write_id_lists(path, {identity: [c for c, _ in ranked] for identity, ranked in lists.items()})
