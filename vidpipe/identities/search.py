"""Search by photo: the clips where a face appears, best first, with times; nobody enrolled.

The photo is embedded with the store's own face backends (its manifest's `faces` section;
the weights must be found, and the result must match the store's backends and weights
sha256), then scored against every face of the store through the face index. A clip's
score is its best face's cosine; its times are those of its faces above the threshold
(the calibrated identification threshold of the store's embedder unless given).

A photo without a face, or whose face is under the embedder's quality floor
(`calibration.QUALITY_FLOORS`), is refused in one line: blurred, tiny or false faces
embed close to every blurred face. Measured on the slideshow store of `cluster.py`: the
astronaut photo of scikit-image (nobody in the store) matched no clip at quality 15.4,
but five clips at cosine up to 0.68 once blurred to quality 9.3.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidpipe.config import Config, ConfigError
from vidpipe.identities.calibration import QUALITY_FLOORS, default_thresholds
from vidpipe.identities.encoder import FaceEncoder, IdentitiesError, dominant, read_image, store_fingerprint
from vidpipe.identities.index import face_index


@dataclass
class SearchHit:
    clip_id: str
    video_id: str
    path: str
    score: float  # best cosine of the clip's faces to the photo
    best_time_s: float  # when that face is shown
    first_s: float  # first and last face above the threshold, presentation timeline
    last_s: float
    n_faces: int  # faces above the threshold
    clip_start_s: float
    clip_end_s: float


@dataclass
class SearchResult:
    photo: Path
    threshold: float
    faces_searched: int
    hits: list[SearchHit] = field(default_factory=list)
    seconds_embed: float = 0.0
    seconds_search: float = 0.0


def store_config(out: Path, config: Config | None) -> Config:
    """`config`'s run settings (device, weights) with the store's own faces section."""
    cfg = config or Config()
    manifest = json.loads((out / "manifest.json").read_text())
    faces = manifest.get("config", {}).get("faces", {})
    try:
        for key, value in faces.items():
            cfg.set(f"faces.{key}", value)
    except ConfigError as e:
        raise IdentitiesError(f"{out}/manifest.json: {e}") from None
    if cfg.run.weights_dir is None:
        cfg.run.weights_dir = manifest.get("config", {}).get("run", {}).get("weights_dir")
    return cfg


def search(photo: str | Path, out: str | Path, config: Config | None = None, *, threshold: float | None = None,
           top: int = 20) -> SearchResult:
    """The `top` clips of store `out` whose faces best match the face in `photo`."""
    from vidpipe.store import read_table

    photo, out = Path(photo), Path(out)
    fingerprint = store_fingerprint(out)
    if not photo.is_file():
        raise IdentitiesError(f"{photo}: no such file")
    started = time.perf_counter()
    encoder = FaceEncoder(store_config(out, config))
    if encoder.fingerprint != fingerprint:
        raise IdentitiesError(f"{photo.name} would be embedded with {encoder.fingerprint.describe()} but store {out} "
                              f"was made with {fingerprint.describe()}: give the store's weights (--weights DIR)")
    image = read_image(photo)
    if image is None:
        raise IdentitiesError(f"{photo} cannot be decoded as an image")
    faces = encoder.faces([image])[0]
    face = dominant(faces)
    if face is None:
        raise IdentitiesError(f"no face found in {photo}" if not faces else
                              f"{photo} shows {len(faces)} faces of similar size: crop it to the one person")
    floor = QUALITY_FLOORS.get(fingerprint.embedder_key)
    if floor is not None and face.quality < floor:
        raise IdentitiesError(f"no clear face in {photo}: the face found is too blurred, small or turned away to "
                              f"search by (quality {face.quality:.1f} < {floor:.1f}); use a sharper, frontal photo")
    limit = default_thresholds(fingerprint).threshold if threshold is None else threshold
    embedded = time.perf_counter()
    index = face_index(out)
    scores = index.scores(face.embedding)
    best = index.best_per_clip(scores)
    ranked = [int(c) for c in np.argsort(-best, kind="stable") if best[c] >= limit][: max(0, top)]
    searched = time.perf_counter()
    clips = read_table(out, "clips", ["clip_id", "video_id", "start_s", "end_s"]).set_index("clip_id")
    paths = read_table(out, "videos", ["video_id", "path"]).set_index("video_id").path
    result = SearchResult(photo, limit, len(index), seconds_embed=embedded - started, seconds_search=searched - embedded)
    for c in ranked:
        rows = index.rows_of(c)
        s, t = scores[rows], index.time_s[rows]
        above = t[s >= limit]
        clip = clips.loc[index.clips[c]]
        result.hits.append(SearchHit(
            index.clips[c], clip.video_id, str(paths.get(clip.video_id, "")), float(best[c]), float(t[int(np.argmax(s))]),
            float(above.min()), float(above.max()), int(len(above)), float(clip.start_s), float(clip.end_s),
        ))
    return result
