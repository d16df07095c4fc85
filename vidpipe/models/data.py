"""Clip datasets for the fusion model, held as pre-built tensors so that loading never waits.

Every modality is a :class:`FrameBank`: all frames of all clips in one (F, D) float16 tensor,
best quality first within a clip, with per-clip ``start``/``count``. Training draws its N
frames from all of a clip's frames (``max_frames`` caps them, e.g. at iQIYI's 32 best);
prediction takes the best. A batch is a couple of index ops, not a Python loop per clip.
Audio is a bank with at most one "frame" per clip.

Sources: the vidpipe feature store (:func:`load_store`, read in streamed batches, large
banks memory-mapped) plus a labels CSV (:func:`read_labels`), and the official
iQIYI-VID-2019 files (:func:`load_iqiyi`), converted once into a store.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vidpipe.eval import iqiyi_io
from vidpipe.models.config import ModalitySpec
from vidpipe.store import iter_batches

MODALITIES = ("face", "head", "body", "audio")  # face first: it gets the architecture's aggregator
STORE_TABLES = {"face": "faces", "head": "heads", "body": "bodies", "audio": "audio"}
NOISE = iqiyi_io.NOISE_ID
_BATCH_ROWS = 16_384  # rows per streamed Parquet batch
_IN_MEMORY_BYTES = 256 << 20  # larger banks are memory-mapped


class DataError(ValueError):
    """Input data that cannot be used (missing files, wrong shapes, bad labels)."""


def build_classes(labels: Sequence[str | None]) -> list[str]:
    """["0", identities…]: noise first, then numeric identities in numeric order, then names."""
    ids = {label for label in labels if label is not None and label != NOISE}
    return [NOISE, *sorted(ids, key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))]


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: ``fraction`` of each label's clips held out, rounded, and
    none from a label with fewer than 3 clips (it needs two to learn from)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=object)
    held = []
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        k = min(int(round(fraction * len(idx))), len(idx) - 2) if len(idx) >= 3 else 0
        if fraction > 0 and len(idx) >= 3:
            k = max(k, 1)
        held.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), val), val


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


def gather_frames(bank: FrameBank, idx: torch.Tensor, n: int, generator: torch.Generator | None,
                  max_frames: int | None = None) -> torch.Tensor:
    """(B, n, D) float32 frames of clips ``idx``, drawn from each clip's ``max_frames`` best
    (None = all); zeros for clips without this modality."""
    idx_cpu = idx.cpu()
    count = bank.count[idx_cpu]
    if max_frames is not None:
        count = count.clamp(max=max_frames)
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
        max_frames: int | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Features and presence of clips ``idx`` for the model's modalities (``specs``),
        ``frames`` per clip drawn from its ``max_frames`` best (None = all).

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
            feats[spec.name] = gather_frames(bank, idx, n, generator, max_frames)
            present[spec.name] = bank.present[idx.cpu()].to(bank.frames.device)
        return feats, present


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


def _embeddings(column: pa.Array, what: str) -> np.ndarray:
    """(n, D) float16 from a list<float> or fixed_size_list<float> column."""
    if len(column) == 0:
        return np.zeros((0, 0), np.float16)
    if column.null_count:
        raise DataError(f"{what}: rows without an embedding")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    else:
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if (lengths != lengths[0]).any():
            raise DataError(f"{what}: embeddings of different lengths")
        dim = int(lengths[0])
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False).reshape(-1, dim)


def _frame_array(rows: int, dim: int) -> np.ndarray:
    """Room for a bank's frames: in memory when small, else in an unlinked temporary file that
    the OS pages in and out (training then holds ~1 KB per 512-d face row at most)."""
    if rows * dim * 2 <= _IN_MEMORY_BYTES:
        return np.empty((rows, dim), np.float16)
    return np.memmap(tempfile.TemporaryFile(prefix="vidpipe-frames-"), dtype=np.float16, mode="w+",
                     shape=(rows, dim))


def _store_bank(out: Path, modality: str, clip_names: pa.Array, max_frames: int | None) -> FrameBank | None:
    """One modality table → a bank over ``clip_names``, in two streamed passes: the small
    columns first (which row goes where, best frame first), then the embeddings."""
    table = STORE_TABLES[modality]
    what = str(out / table)
    clip_index, keys = [], []
    for batch in iter_batches(out, table, ["clip_id", *_ORDER_KEYS], _BATCH_ROWS):
        if "clip_id" not in batch.schema.names:
            raise DataError(f"{what}: missing column clip_id")
        idx = pc.index_in(batch.column("clip_id"), value_set=clip_names).fill_null(-1)
        clip_index.append(idx.to_numpy(zero_copy_only=False).astype(np.int64))
        keys.append(_order_key(batch))
    clip_index_all = np.concatenate(clip_index) if clip_index else np.zeros(0, np.int64)
    key = np.concatenate(keys) if keys else np.zeros(0)
    del clip_index, keys
    kept = np.flatnonzero(clip_index_all >= 0)
    if len(kept) == 0:
        return None
    num_clips = len(clip_names)
    order = kept[np.lexsort((key[kept], clip_index_all[kept]))]  # by clip, best first
    counts = np.bincount(clip_index_all[order], minlength=num_clips)
    position = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    if max_frames is not None:
        order = order[position < max_frames]
        counts = np.minimum(counts, max_frames)
    dest = np.full(len(clip_index_all), -1, np.int64)
    dest[order] = np.arange(len(order))
    del clip_index_all, key, kept, position, order
    frames, offset = None, 0
    for batch in iter_batches(out, table, ["embedding"], _BATCH_ROWS):
        if "embedding" not in batch.schema.names:
            raise DataError(f"{what}: missing column embedding")
        emb = _embeddings(batch.column("embedding"), what)
        d = dest[offset : offset + len(emb)]
        offset += len(emb)
        if not len(emb):
            continue
        if frames is None:
            frames = _frame_array(int(counts.sum()), emb.shape[1])
        elif emb.shape[1] != frames.shape[1]:
            raise DataError(f"{what}: embeddings of different lengths")
        frames[d[d >= 0]] = emb[d >= 0]
    starts = np.cumsum(counts) - counts
    return FrameBank(torch.from_numpy(frames), torch.from_numpy(starts.astype(np.int64)),
                     torch.from_numpy(counts.astype(np.int64)))


_ORDER_KEYS = ("rank", "det_score", "frame_index")


def _order_key(batch: pa.RecordBatch) -> np.ndarray:
    """Smaller is better: faces by rank (0 = best quality), heads by detection score, others
    by time."""
    names = batch.schema.names
    if "rank" in names:
        return batch.column("rank").to_numpy(zero_copy_only=False).astype(np.float64)
    if "det_score" in names:
        return -batch.column("det_score").to_numpy(zero_copy_only=False).astype(np.float64)
    if "frame_index" in names:
        return batch.column("frame_index").to_numpy(zero_copy_only=False).astype(np.float64)
    return np.zeros(batch.num_rows)


def _store_clips(out: Path, tables: Sequence[str]) -> list[str]:
    """Clip ids to classify: the ``clips`` table's kept clips (status ok), or, in a store
    without one, every clip that has a row in ``tables``."""
    names: set[str] = set()
    if (out / "clips").exists():
        for batch in iter_batches(out, "clips", ["clip_id", "status"]):
            ok = pc.equal(batch.column("status"), "ok") if "status" in batch.schema.names else None
            ids = batch.column("clip_id") if ok is None else batch.column("clip_id").filter(ok)
            names.update(ids.to_pylist())
        return sorted(names)
    for table in tables:
        for batch in iter_batches(out, table, ["clip_id"]):
            names.update(pc.unique(batch.column("clip_id")).to_pylist())
    return sorted(names)


def load_store(
    out: str | Path,
    labels: Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    max_frames: int | None = None,
) -> ClipSet:
    """The vidpipe feature store: ``clips`` (status ok only) and whichever of
    ``faces/heads/bodies/audio`` exist; faces ordered by ``rank`` (0 = best quality), each
    clip keeping its ``max_frames`` best (None = all). Read in streamed batches; large banks
    live in a memory-mapped temporary file."""
    out = Path(out)
    if not out.is_dir():
        raise DataError(f"feature store {out} not found")
    present = []
    for m in modalities or MODALITIES:
        if (out / STORE_TABLES[m]).exists():
            present.append(m)
        elif modalities is not None:
            raise DataError(f"{out / STORE_TABLES[m]} not found")
    if not present:
        raise DataError(f"{out} holds none of the tables {', '.join(STORE_TABLES.values())}")
    names = _store_clips(out, [STORE_TABLES[m] for m in present])
    clip_names = pa.array(names, pa.string())
    banks = {}
    for m in present:
        bank = _store_bank(out, m, clip_names, max_frames)
        if bank is not None:
            banks[m] = bank
        elif m == "face":
            raise DataError(f"{out / 'faces'}: no face of any ok clip")
    lab = None if labels is None else [labels.get(n) for n in names]
    return ClipSet(names, banks, lab)


def load_iqiyi(
    root: str | Path,
    split: str,
    modalities: Sequence[str] | None = None,
    max_frames: int | None = None,
    cache: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> ClipSet:
    """One split of an iQIYI-VID-2019 directory, through its converted store (made once, in
    bounded memory: see :mod:`vidpipe.models.iqiyi_store`), labelled from ``{split}_gt.txt``:
    a video missing from the gt file is noise "0" (the release's convention); no gt file →
    unlabelled."""
    from vidpipe.models.iqiyi_store import iqiyi_store

    root = Path(root)
    store = iqiyi_store(root, split, modalities, cache=cache, log=log, progress=progress)
    data = load_store(store, None, [m for m in (modalities or MODALITIES) if (store / STORE_TABLES[m]).exists()],
                      max_frames)
    gt_path = root / f"{split}_gt.txt"
    if gt_path.is_file():
        gt = iqiyi_io.read_gt(gt_path)
        data.labels = [gt.get(n, NOISE) for n in data.clip_ids]
    return data
