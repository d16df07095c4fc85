"""Head embeddings of the major character (iQIYI-VID §5.1 "Head"): one row per valid frame.

The major head of each valid frame (marked by the major_character stage) is cropped with a
margin and embedded, all of a clip's crops in batches. Without the major_character stage
there is no major head, and so no rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vidpipe.backends.base import HEAD, crop
from vidpipe.pipeline.stage import DETECTION_FIELDS, F32_LIST, ClipContext, Stage, StageResult, register_stage


@dataclass
class HeadsConfig:
    embedder: str = "auto"  # head_embedder: auto (= osnet) | osnet | onnx
    model_path: str | None = None  # onnx: your ArcFace-style head model
    mean: float = 0.5  # onnx: input normalisation, (x / 255 - mean) / std
    std: float = 0.5
    pad: float = 0.1  # crop margin, x the head box's size on each side
    batch_size: int = 64  # crops per embedder call (bigger on GPU)


def major_rows(ctx: ClipContext, kind: int):
    """The clip's rows of `kind` that the major_character stage marked major."""
    rows = ctx.found.of_kind(kind)
    return rows[rows.data["major"]] if "major" in rows.data else rows[np.zeros(len(rows), bool)]


def l2_normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@register_stage
class HeadStage(Stage):
    name = "heads"
    config = HeadsConfig
    order = 30.0
    uses = ("major",)  # without the rule there is no major head, and so no rows
    backends = {"embedder": "head_embedder"}
    tables = {"heads": pa.schema([*DETECTION_FIELDS, pa.field("embedding", F32_LIST)])}  # L2-normalised

    def process(self, ctx: ClipContext) -> StageResult:
        heads = major_rows(ctx, HEAD)
        crops = [crop(ctx.frames[f].image, box, self.options.pad) for f, box in zip(heads.frame, heads.xyxy)]
        emb = self.models["embedder"].embed(crops) if crops else np.zeros((0, 0), np.float32)
        columns = ctx.detection_columns(heads)
        columns["embedding"] = list(l2_normalised(emb))
        return StageResult(rows={"heads": columns})
