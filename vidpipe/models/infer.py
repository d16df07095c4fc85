"""Prediction and retrieval: per-clip identity probabilities (an ensemble sums its members'
distributions, iQIYI §6.4), per-identity rankings of clips (top 100), and their outputs:
``OUT/identities/`` (clip_id, identity, score: each clip's best class, "0" = noise),
``OUT/retrieval/`` (identity, rank, clip_id, score) and the iQIYI submission file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidpipe.eval import iqiyi_io
from vidpipe.eval.metrics import TOP_K
from vidpipe.models.config import ModelConfig
from vidpipe.models.data import NOISE, ClipSet, DataError
from vidpipe.models.net import FusionNet
from vidpipe.models.train import FORMAT, autocast, select_device


@dataclass
class FusionModel:
    """A trained model directory: one or more members sharing one config."""

    cfg: ModelConfig
    members: list[FusionNet]
    device: torch.device

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> "FusionModel":
        model_dir = Path(model_dir)
        manifest = model_dir / "model.json"
        if not manifest.is_file():
            raise DataError(f"{model_dir} is not a model directory (no model.json); train one with 'vidpipe train'")
        meta = json.loads(manifest.read_text())
        if meta.get("format") != FORMAT:
            raise DataError(f"{manifest}: unknown model format {meta.get('format')!r}")
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

    @torch.inference_mode()
    def predict_proba(self, data: ClipSet, frames: int = 32, batch_size: int = 4096) -> np.ndarray:
        """(clips, classes) probabilities: the members' distributions summed, divided by their
        number (the ranking is the sum's; the scale stays a probability)."""
        data = data.to(self.device)
        known = {s.name for s in self.cfg.modalities}
        if not known & set(data.banks):
            raise DataError(
                f"the data hold none of the model's modalities ({', '.join(sorted(known))})"
            )
        out = np.zeros((len(data), self.cfg.num_classes), dtype=np.float32)
        order = torch.arange(len(data))
        for idx in order.split(batch_size):
            feats, present = data.batch(idx, frames, None, self.cfg.modalities)
            total = None
            with autocast(self.device):
                for net in self.members:
                    p = torch.softmax(net(feats, present).float(), dim=1)
                    total = p if total is None else total + p
            out[idx.numpy()] = (total / len(self.members)).cpu().numpy()
        return out


def retrieval_lists(
    probs: np.ndarray, clip_ids: list[str], classes: list[str], top_k: int = TOP_K
) -> dict[str, list[tuple[str, float]]]:
    """Per identity (noise excluded): the clips ranked by that identity's probability."""
    p = torch.from_numpy(probs)
    k = min(top_k, p.shape[0])
    scores, idx = torch.topk(p.T.contiguous(), k, dim=1)
    out = {}
    for c, identity in enumerate(classes):
        if identity == NOISE:
            continue
        out[identity] = [(clip_ids[i], float(s)) for i, s in zip(idx[c].tolist(), scores[c].tolist())]
    return out


def best_identity(probs: np.ndarray, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Each clip's most probable class ("0" = noise) and its probability."""
    best = probs.argmax(axis=1)
    return [classes[i] for i in best], probs[np.arange(len(best)), best]


def _write_parquet(table, directory: Path, name: str) -> Path:
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_predictions(
    out: str | Path, clip_ids: list[str], probs: np.ndarray, classes: list[str],
    lists: dict[str, list[tuple[str, float]]],
) -> None:
    """``OUT/identities/predictions.parquet`` and ``OUT/retrieval/predictions.parquet``."""
    import pyarrow as pa

    out = Path(out)
    ident, score = best_identity(probs, classes)
    _write_parquet(
        pa.table({"clip_id": pa.array(clip_ids, pa.string()), "identity": pa.array(ident, pa.string()),
                  "score": pa.array(score.astype(np.float32), pa.float32())}),
        out / "identities", "predictions.parquet",
    )
    rows = [(identity, r, clip, s) for identity, ranked in lists.items() for r, (clip, s) in enumerate(ranked)]
    _write_parquet(
        pa.table({
            "identity": pa.array([r[0] for r in rows], pa.string()),
            "rank": pa.array([r[1] for r in rows], pa.int32()),
            "clip_id": pa.array([r[2] for r in rows], pa.string()),
            "score": pa.array([r[3] for r in rows], pa.float32()),
        }),
        out / "retrieval", "predictions.parquet",
    )


def write_submission(path: str | Path, lists: dict[str, list[tuple[str, float]]]) -> None:
    """The iQIYI submission: ``ID v1.mp4 … v100.mp4`` per identity."""
    iqiyi_io.write_id_lists(path, {identity: [c for c, _ in ranked] for identity, ranked in lists.items()})
