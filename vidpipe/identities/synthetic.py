"""A feature store made of given face (and body, voice) embeddings, with no video behind it.

For tests with exact expectations and for benchmarks at sizes no shared video reaches: the
tables have the real schemas (`videos`, `clips`, `faces`, optionally `bodies`) and the
manifest names the face backends `synthetic`, so a gallery must be filled with
`SYNTHETIC_FINGERPRINT` embeddings too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.identities.encoder import Fingerprint

SYNTHETIC_FINGERPRINT = Fingerprint.from_dict({t: {"name": "synthetic", "weights": []}
                                               for t in ("face_detector", "face_embedder")})


@dataclass
class SyntheticFace:
    time_s: float
    embedding: np.ndarray  # normalised here
    bbox: tuple[float, float, float, float] = (100.0, 100.0, 200.0, 220.0)
    quality: float = 20.0
    major: bool | None = None  # null: the major-character rule did not run


@dataclass
class SyntheticClip:
    start_s: float
    end_s: float
    faces: list[SyntheticFace] = field(default_factory=list)
    bodies: list[np.ndarray] = field(default_factory=list)  # body embeddings of the major person
    voice: np.ndarray | None = None  # the clip's speaker embedding
    voice_is_major: bool | None = None


def write_store(out: str | Path, videos: dict[str, list[SyntheticClip]], library: bool = False,
                sample_fps: float = 4.0, config_hash: str = "synthetic", path_of: dict[str, str] | None = None) -> None:
    """Write (or add to) a store: for each video id, its kept clips in time order."""
    from vidpipe.pipeline.stage import DETECTION_FIELDS
    from vidpipe.store import known_schemas

    out = Path(out)
    schemas = known_schemas()
    manifest = {"config": {"clips": {"require_major_character": not library}, "faces": {"top_k": 32},
                           "sampling": {"fps": sample_fps}},
                "stages": {"backends": SYNTHETIC_FINGERPRINT.to_dict()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    f32_list = pa.list_(pa.float32())
    bodies_schema = schemas.get("bodies") or pa.schema([*DETECTION_FIELDS, ("embedding", f32_list)])
    audio_schema = schemas.get("audio") or pa.schema([("clip_id", pa.string()), ("video_id", pa.string()),
                                                      ("voice_is_major", pa.bool_()), ("embedding", f32_list)])
    for vid, clips in videos.items():
        clip_rows, face_cols, body_rows, audio_rows = [], {k: [] for k in schemas["faces"].names}, [], []
        for i, c in enumerate(clips):
            clip_id = f"{vid}-{i:04d}"
            clip_rows.append(dict(clip_id=clip_id, video_id=vid, shot_index=i, start_s=c.start_s, end_s=c.end_s,
                                  duration_s=c.end_s - c.start_s, status="ok", n_faces=len(c.faces)))
            for j, f in enumerate(sorted(c.faces, key=lambda f: -f.quality)):
                e = np.asarray(f.embedding, np.float32)
                row = dict(clip_id=clip_id, video_id=vid, frame_index=int(round(f.time_s * 25)), time_s=f.time_s,
                           bbox=list(f.bbox), det_score=0.9, landmarks=[0.0] * 10, quality=f.quality,
                           embedding=e / np.linalg.norm(e), major=f.major, rank=j, selected=j < 32)
                for k in face_cols:
                    face_cols[k].append(row[k])
            if c.voice is not None:
                audio_rows.append(dict(clip_id=clip_id, video_id=vid, voice_is_major=c.voice_is_major,
                                       embedding=np.asarray(c.voice, np.float32)))
            for j, b in enumerate(c.bodies):
                body_rows.append(dict(clip_id=clip_id, video_id=vid, frame_index=j, time_s=c.start_s, bbox=[0, 0, 1, 1],
                                      det_score=0.9, embedding=np.asarray(b, np.float32)))
        video = dict(video_id=vid, path=(path_of or {}).get(vid, f"/synthetic/{vid}.mp4"), status="ok",
                     n_clips=len(clips), n_clips_kept=len(clips), config_hash=config_hash,
                     duration_s=max((c.end_s for c in clips), default=0.0))
        tables = {"clips": pa.Table.from_pylist(clip_rows, schema=schemas["clips"]),
                  "faces": pa.table({k: pa.array(v, schemas["faces"].field(k).type) for k, v in face_cols.items()},
                                    schema=schemas["faces"]),
                  "videos": pa.Table.from_pylist([video], schema=schemas["videos"])}
        if any(c.bodies for c in clips):
            tables["bodies"] = pa.Table.from_pylist(body_rows, schema=bodies_schema)
        if audio_rows:
            tables["audio"] = pa.Table.from_pylist(audio_rows, schema=audio_schema)
        for name, table in tables.items():
            (out / name).mkdir(exist_ok=True)
            pq.write_table(table, out / name / f"{vid}.parquet")
