"""Clip datasets for the fusion model, held as pre-built tensors so that loading never waits.

Every modality is a :class:`FrameBank`: all frames of all clips in one (F, D) float16 tensor,
best quality first within a clip, capped at ``max_frames`` (iQIYI keeps the top 32 faces),
with per-clip ``start``/``count``. A batch is then a couple of index ops, not a Python loop
per clip. Audio is a bank with at most one "frame" per clip.

Sources: the official iQIYI-VID-2019 files (:func:`load_iqiyi`) and the vidpipe feature store
(:func:`load_store`) plus a labels CSV (:func:`read_labels`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidpipe.eval import iqiyi_io
from vidpipe.models.config import ModalitySpec

MODALITIES = ("face", "head", "body", "audio")  # face first: it gets the architecture's aggregator
STORE_TABLES = {"face": "faces", "head": "heads", "body": "bodies", "audio": "audio"}
NOISE = iqiyi_io.NOISE_ID


class DataError(ValueError):
    """Input data that cannot be used (missing files, wrong shapes, bad labels)."""


@dataclass
class FrameBank:
    """The frames of one modality for a set of clips."""

    frames: torch.Tensor  # (F, D) float16, frames of clip c at start[c] : start[c] + count[c]
    start: torch.Tensor  # (C,) int64
    count: torch.Tensor  # (C,) int64

    @property
    def dim(self) -> int:
        return int(self.frames.shape[1])

    @property
    def present(self) -> torch.Tensor:
        return self.count > 0

    def subset(self, idx: torch.Tensor) -> "FrameBank":
        return FrameBank(self.frames, self.start[idx], self.count[idx])

    def to(self, device: torch.device | str) -> "FrameBank":
        """Moves the frames; the per-clip index stays on the CPU where batches are planned."""
        return FrameBank(self.frames.to(device), self.start, self.count)

    @classmethod
    def from_rows(
        cls, clip_index: np.ndarray, feats: np.ndarray, num_clips: int, max_frames: int
    ) -> "FrameBank":
        """Rows already ordered best-first within each clip; keeps the first ``max_frames``."""
        order = np.argsort(clip_index, kind="stable")
        clip_index, feats = clip_index[order], feats[order]
        counts = np.bincount(clip_index, minlength=num_clips)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        keep = (np.arange(len(clip_index)) - starts[clip_index]) < max_frames
        clip_index, feats = clip_index[keep], feats[keep]
        counts = np.bincount(clip_index, minlength=num_clips)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(
            torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float16)),
            torch.from_numpy(starts.astype(np.int64)),
            torch.from_numpy(counts.astype(np.int64)),
        )


def frame_positions(count: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, n) frame positions inside each clip.

    Training (a generator): FAMF's sampling — n distinct frames at random when the clip has at
    least n, otherwise every frame once plus random repeats. Testing (None): the n best frames,
    tiled in order when there are fewer (each frame appears ⌊n/c⌋ or ⌈n/c⌉ times).
    """
    b = count.shape[0]
    c = count.clamp(min=1).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    if generator is None:
        return j % c
    width = max(int(count.max()) if b else 1, n, 1)
    keys = torch.rand(b, width, generator=generator)
    keys = keys.masked_fill(torch.arange(width).unsqueeze(0) >= c, 2.0)
    perm = keys.argsort(dim=1)[:, :n]
    extra = (torch.rand(b, n, generator=generator) * c).long()
    return torch.where(j < c, perm, extra)


def gather_frames(bank: FrameBank, idx: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, n, D) float32 frames of clips ``idx``; zeros for clips without this modality."""
    idx_cpu = idx.cpu()
    count = bank.count[idx_cpu]
    pos = frame_positions(count, n, generator)
    rows = (bank.start[idx_cpu].unsqueeze(1) + pos).clamp(max=max(len(bank.frames) - 1, 0))
    device = bank.frames.device
    if len(bank.frames) == 0:
        return torch.zeros(len(idx_cpu), n, bank.dim, device=device)
    x = torch.index_select(bank.frames, 0, rows.flatten().to(device)).view(len(idx_cpu), n, bank.dim).float()
    absent = count == 0
    if bool(absent.any()):
        x[absent.to(device)] = 0.0
    return x


@dataclass
class ClipSet:
    """Clips with their modality banks and (optionally) identity labels ("0" = noise)."""

    clip_ids: list[str]
    banks: dict[str, FrameBank]
    labels: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def specs(self) -> list[ModalitySpec]:
        return [ModalitySpec(name, bank.dim, per_frame=name != "audio") for name, bank in self.banks.items()]

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ClipSet":
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return ClipSet(
            [self.clip_ids[i] for i in idx],
            {k: b.subset(t) for k, b in self.banks.items()},
            None if self.labels is None else [self.labels[i] for i in idx],
        )

    def select_modalities(self, names: Sequence[str]) -> "ClipSet":
        missing = [n for n in names if n not in self.banks]
        if missing:
            raise DataError(f"modalities not in the data: {', '.join(missing)}")
        return ClipSet(self.clip_ids, {n: self.banks[n] for n in names}, self.labels)

    def to(self, device: torch.device | str) -> "ClipSet":
        return ClipSet(self.clip_ids, {k: b.to(device) for k, b in self.banks.items()}, self.labels)

    def batch(
        self,
        idx: torch.Tensor,
        frames: int,
        generator: torch.Generator | None = None,
        specs: Sequence[ModalitySpec] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Features and presence of clips ``idx`` for the model's modalities (``specs``).

        A modality the model knows but this set lacks is absent for every clip.
        """
        feats, present = {}, {}
        for spec in specs or self.specs:
            n = frames if spec.per_frame else 1
            bank = self.banks.get(spec.name)
            if bank is None:
                device = next(iter(self.banks.values())).frames.device
                feats[spec.name] = torch.zeros(len(idx), n, spec.dim, device=device)
                present[spec.name] = torch.zeros(len(idx), dtype=torch.bool, device=device)
                continue
            if bank.dim != spec.dim:
                raise DataError(f"{spec.name} features are {bank.dim}-d but the model expects {spec.dim}-d")
            feats[spec.name] = gather_frames(bank, idx, n, generator)
            present[spec.name] = bank.present[idx.cpu()].to(bank.frames.device)
        return feats, present


def _bank_from_videos(videos: Mapping[str, iqiyi_io.VideoFeatures], index: Mapping[str, int],
                      max_frames: int, what: str) -> FrameBank:
    dims = {v.feats.shape[1] for v in videos.values() if len(v.feats)}
    if len(dims) > 1:
        raise DataError(f"{what}: features of different widths {sorted(dims)}")
    dim = dims.pop() if dims else 0
    if dim == 0:
        raise DataError(f"{what}: no features at all")
    parts = [(index[name], v.feats) for name, v in videos.items() if len(v.feats) and name in index]
    clip_index = np.concatenate([np.full(len(f), i, np.int64) for i, f in parts]) if parts else np.zeros(0, np.int64)
    feats = np.concatenate([f for _, f in parts]) if parts else np.zeros((0, dim), np.float16)
    return FrameBank.from_rows(clip_index, feats, len(index), max_frames)


def load_iqiyi(
    root: str | Path,
    split: str,
    modalities: Sequence[str] | None = None,
    max_frames: int = 32,
) -> ClipSet:
    """``face_{split}.pickle`` (+ head/body/audio when present) and ``{split}_gt.txt``.

    Clips are the union of the videos in the loaded pickles; a video missing from the gt file
    is labelled noise "0" (the iQIYI-VID-2019 convention); no gt file → unlabelled.
    """
    root = Path(root)
    wanted = list(modalities or MODALITIES)
    if not (root / f"face_{split}.pickle").is_file() and "face" in wanted:
        raise DataError(f"{root / f'face_{split}.pickle'} not found (an iQIYI-VID-2019 directory holds it)")
    videos: dict[str, dict[str, iqiyi_io.VideoFeatures]] = {}
    for m in MODALITIES:
        path = root / f"{m}_{split}.pickle"
        if m in wanted and path.is_file():
            videos[m] = iqiyi_io.read_modality_pickle(path, m)
        elif modalities is not None and m in wanted:
            raise DataError(f"{path} not found")
    names = sorted(set().union(*(v.keys() for v in videos.values())))
    index = {n: i for i, n in enumerate(names)}
    banks = {m: _bank_from_videos(v, index, max_frames, f"{m}_{split}.pickle") for m, v in videos.items()}
    labels = None
    gt_path = root / f"{split}_gt.txt"
    if gt_path.is_file():
        gt = iqiyi_io.read_gt(gt_path)
        labels = [gt.get(n, NOISE) for n in names]
    return ClipSet(names, banks, labels)


def read_labels(path: str | Path) -> dict[str, str]:
    """Labels CSV: header ``clip_id,identity``; identity "0" or empty = noise/distractor."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"clip_id", "identity"} <= set(reader.fieldnames):
                raise DataError(f"{path}: expected a CSV header with columns clip_id,identity")
            out = {}
            for row in reader:
                clip = (row["clip_id"] or "").strip()
                if clip:
                    out[clip] = (row["identity"] or "").strip() or NOISE
            return out
    except OSError as e:
        raise DataError(f"cannot read labels file {path}: {e.strerror}") from None


def _read_table(path: Path, columns: Sequence[str]):
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    names = set(dataset.schema.names)
    missing = [c for c in ("clip_id", "embedding") if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return dataset.to_table(columns=[c for c in columns if c in names])


def _embeddings(table, what: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column("embedding").combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.float32)
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    else:
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        if (lengths != lengths[0]).any():
            raise DataError(f"{what}: embeddings of different lengths")
        dim = int(lengths[0])
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def load_store(
    out: str | Path,
    labels: Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    max_frames: int = 32,
) -> ClipSet:
    """The vidpipe feature store: ``clips`` (status ok only) and whichever of
    ``faces/heads/bodies/audio`` exist; faces ordered by ``rank`` (0 = best quality)."""
    import pyarrow.compute as pc

    out = Path(out)
    if not out.is_dir():
        raise DataError(f"feature store {out} not found")
    tables = {}
    for m in modalities or MODALITIES:
        path = out / STORE_TABLES[m]
        if path.exists():
            tables[m] = _read_table(path, ["clip_id", "rank", "det_score", "frame_index", "embedding"])
        elif modalities is not None:
            raise DataError(f"{path} not found")
    if not tables:
        raise DataError(f"{out} holds none of the tables {', '.join(STORE_TABLES.values())}")
    if (out / "clips").exists():
        import pyarrow.dataset as ds

        clips = ds.dataset(out / "clips", format="parquet").to_table(columns=["clip_id", "status"])
        names = sorted(set(clips.filter(pc.equal(clips["status"], "ok"))["clip_id"].to_pylist()))
    else:
        names = sorted(set().union(*(set(t["clip_id"].to_pylist()) for t in tables.values())))
    index = {n: i for i, n in enumerate(names)}
    banks = {}
    for m, table in tables.items():
        ids = table["clip_id"].to_pylist()
        keep = np.array([c in index for c in ids], dtype=bool)
        if "rank" in table.column_names:
            key = -table["rank"].to_numpy(zero_copy_only=False).astype(np.float64)
        elif "det_score" in table.column_names:
            key = table["det_score"].to_numpy(zero_copy_only=False).astype(np.float64)
        elif "frame_index" in table.column_names:
            key = -table["frame_index"].to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            key = np.zeros(len(ids))
        emb = _embeddings(table, f"{out / STORE_TABLES[m]}")
        clip_index = np.array([index.get(c, -1) for c in ids], dtype=np.int64)
        order = np.argsort(-key[keep], kind="stable")  # best first
        if keep.any():
            banks[m] = FrameBank.from_rows(clip_index[keep][order], emb[keep][order], len(names), max_frames)
    if "face" in tables and "face" not in banks:
        raise DataError(f"{out / 'faces'}: no face of any ok clip")
    # face first (it gets the architecture's aggregator)
    banks = {m: banks[m] for m in MODALITIES if m in banks}
    lab = None if labels is None else [labels.get(n) for n in names]
    return ClipSet(names, banks, lab)
