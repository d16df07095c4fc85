"""Body embeddings of the major character (iQIYI-VID §3.3, §5.1 "Body"): one row per valid
frame whose major head has a body.

People are detected on the frames that have a major head (or taken from an earlier stage
that ran the same person detector on every frame, as the person_face head detector does).
The major head is paired with a person box by relative position (§3.3 pairs faces and
clothes so): among the boxes that contain the head's centre, the one whose top is nearest
the head's top (in head heights) and whose centre line is nearest the head's centre (in
half box widths), if near enough (`max_pair_cost`). Not by size: arms held out or raised
make a person box 3x wider or taller than the head predicts (measured on mgt_dancer).
The paired box is cropped and embedded with OSNet, in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vidpipe.backends.base import HEAD, PERSON, Detections, crop
from vidpipe.pipeline.stage import DETECTION_FIELDS, F32_LIST, ClipContext, Stage, StageResult, register_stage
from vidpipe.stages.heads import l2_normalised, major_rows


@dataclass
class BodiesConfig:
    detector: str = "auto"  # person_detector: auto (yolox, else scrfd_person, else hog) | yolox | scrfd_person | hog
    embedder: str = "auto"  # reid_embedder: auto (= osnet) | osnet
    det_threshold: float = 0.4  # person score threshold
    max_side: int = 640  # scrfd_person input: frames shrunk to this long side
    max_pair_cost: float = 2.5  # head-to-body pairing: |top offset| / head height + |centre offset| / (box width / 2)
    batch_size: int = 64  # frames per detector call, crops per embedder call


def pair_cost(head: np.ndarray, people: np.ndarray) -> np.ndarray:
    """How badly each person box fits `head` as its owner (inf: head centre outside the box).
    On mgt_dancer the owner's cost stays below 2 (arms raised: the box top 1.7 heads above)."""
    centre = (head[:2] + head[2:]) / 2
    top = np.abs(head[1] - people[:, 1]) / max(float(head[3] - head[1]), 1e-6)
    side = np.abs(centre[0] - (people[:, 0] + people[:, 2]) / 2) / np.maximum((people[:, 2] - people[:, 0]) / 2, 1e-6)
    inside = (centre >= people[:, :2]).all(1) & (centre <= people[:, 2:]).all(1)
    return np.where(inside, top + side, np.inf)


def pair_bodies(heads: Detections, people: Detections, max_cost: float) -> Detections:
    """For each head, the person box paired with it (heads without one get none)."""
    chosen = []
    for box, frame in zip(heads.xyxy, heads.frame):
        rows = np.flatnonzero(people.frame == frame)
        if len(rows) == 0:
            continue
        cost = pair_cost(box, people.xyxy[rows])
        if cost.min() <= max_cost:
            chosen.append(rows[np.argmin(cost)])
    return people[np.array(chosen, int)]


@register_stage
class BodyStage(Stage):
    name = "bodies"
    config = BodiesConfig
    order = 40.0
    uses = ("major",)
    backends = {"detector": "person_detector", "embedder": "reid_embedder"}
    tables = {"bodies": pa.schema([*DETECTION_FIELDS, pa.field("embedding", F32_LIST)])}  # L2-normalised

    def people(self, ctx: ClipContext, frames: np.ndarray) -> Detections:
        """People on `frames` (clip frame numbers): reused when searched on every frame already."""
        detector = self.models["detector"]
        if ctx.searched.get(PERSON) == detector.name:
            found = ctx.found.of_kind(PERSON)
            return found[np.isin(found.frame, frames)]
        batch = max(1, self.options.batch_size)
        images = [ctx.frames[f].image for f in frames]
        parts = [detector.detect(images[i : i + batch]).shifted(i) for i in range(0, len(images), batch)]
        found = Detections.merge(parts)
        found.frame = frames[found.frame].astype(np.int32)
        return found

    def process(self, ctx: ClipContext) -> StageResult:
        heads = major_rows(ctx, HEAD)
        people = self.people(ctx, np.unique(heads.frame))
        bodies = pair_bodies(heads, people, self.options.max_pair_cost)
        crops = [crop(ctx.frames[f].image, box) for f, box in zip(bodies.frame, bodies.xyxy)]
        emb = self.models["embedder"].embed(crops) if crops else np.zeros((0, 0), np.float32)
        columns = ctx.detection_columns(bodies)
        columns["embedding"] = list(l2_normalised(emb))
        return StageResult(rows={"bodies": columns})
