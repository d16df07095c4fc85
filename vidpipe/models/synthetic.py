"""A SYNTHETIC person-identification set written in the iQIYI-VID-2019 file format.

It is generated, not recorded: no real person is in it. It exists to exercise and benchmark
the fusion model where the real release is not available. What it models, and why:

* identities come in look-alike groups (faces of a group are close), so faces alone are
  ambiguous for some clips and the other modalities can help;
* per-frame face features carry noise that grows as quality drops, and low-quality frames
  are often someone else's face (a misdetection) — what quality-aware aggregation should
  learn to down-weight; ``quality_score`` is a noisy reading of that quality;
* some clips have no face at all (only head/body/audio), heads change with hairstyle, bodies
  with outfits (and some outfits are shared uniforms), audio is often someone else's voice;
* modalities go missing at random; distractor clips of people outside the gallery are in
  the sets (label 0 in train, absent from ``val_gt.txt``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidpipe.eval import iqiyi_io


@dataclass(frozen=True)
class SyntheticSpec:
    identities: int = 1000
    train_clips: int = 6  # per identity
    val_clips: int = 3  # per identity
    lookalike_group: int = 4  # identities per look-alike group
    lookalike_similarity: float = 0.8  # weight of the shared group direction in a face
    distractor_people: int = 300
    train_noise_clips: int = 300
    val_noise_clips: int = 1000
    dim: int = 512
    max_face_frames: int = 40
    max_other_frames: int = 12
    faceless: float = 0.12  # clips with no face at all
    head_missing: float = 0.15
    body_missing: float = 0.25
    audio_missing: float = 0.3
    audio_is_speaker: float = 0.5  # otherwise the audio is another voice
    uniform_outfit: float = 0.3
    clip_noise: float = 0.5  # pose/lighting offset shared by a clip's frames
    lookalike_shift: float = 0.5  # clips whose face drifts towards a look-alike's
    seed: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class _World:
    """The people: face/head/body/voice prototypes."""

    def __init__(self, spec: SyntheticSpec, rng: np.random.Generator) -> None:
        d, n = spec.dim, spec.identities + spec.distractor_people
        groups = _unit(rng.standard_normal((n // spec.lookalike_group + 1, d)))
        group = np.arange(n) // spec.lookalike_group
        a = spec.lookalike_similarity
        self.face = _unit(a * groups[group] + np.sqrt(1 - a**2) * _unit(rng.standard_normal((n, d))))
        self.hair = _unit(rng.standard_normal((n, 3, d)))  # hairstyles change between shows
        self.common_hair = _unit(rng.standard_normal((60, d)))  # …and many people share one
        self.outfits = _unit(rng.standard_normal((n, 3, d)))
        self.uniforms = _unit(rng.standard_normal((40, d)))
        self.voice = _unit(rng.standard_normal((n, d)))
        self.n = n


def _frames(rng: np.random.Generator, k: int, d: int, scale: float) -> np.ndarray:
    return rng.standard_normal((k, d)) * (scale / np.sqrt(d))


def _clip(world: _World, person: int, spec: SyntheticSpec, rng: np.random.Generator) -> dict:
    d = spec.dim
    out: dict = {}
    offset = _frames(rng, 1, d, spec.clip_noise)
    if rng.random() < spec.lookalike_shift:  # pose/lighting/make-up that resembles a look-alike
        g = spec.lookalike_group
        twin = person - person % g + int(rng.integers(0, g))
        if twin < world.n:
            offset = offset + rng.uniform(0, 0.8) * (world.face[twin] - world.face[person])
    if rng.random() >= spec.faceless:
        n = int(rng.integers(1, spec.max_face_frames + 1))
        blurry = rng.random() < 0.3
        q = rng.beta(1.5, 2.5 if blurry else 1.0, size=n)
        other = rng.random(n) < 0.6 * (1 - q) ** 2  # low-quality frames: often another face
        who = np.where(other, rng.integers(0, world.n, n), person)
        sigma = 0.4 + 2.0 * (1 - q) ** 2
        x = _unit(world.face[who] + offset + _frames(rng, n, d, 1.0) * sigma[:, None])
        raw = x * (8 + 20 * q)[:, None]  # raw features: the norm tracks quality
        quality = np.clip(100 * q + rng.normal(0, 8, n), 0, None)
        out["face"] = [
            [b"%04d" % (5 * i), np.array([10, 10, 60, 80], np.float32) * (0.5 + q[i]), float(0.5 + 0.5 * q[i]),
             float(quality[i]), raw[i].astype(np.float16)]
            for i in range(n)
        ]
    if rng.random() >= spec.head_missing * (0.5 if "face" in out else 1.0):
        n = int(rng.integers(1, spec.max_other_frames + 1))
        if rng.random() < 0.4:
            style = world.common_hair[rng.integers(0, len(world.common_hair))]
        else:
            style = world.hair[person, rng.integers(0, 3)]
        x = _unit(style + 0.3 * world.face[person] + offset + _frames(rng, n, d, 2.5))
        out["head"] = [[b"%04d" % (5 * i), np.array([5, 5, 90, 110], np.float32), float(rng.uniform(0.5, 1)),
                        (x[i] * 12).astype(np.float16)] for i in range(n)]
    if rng.random() >= spec.body_missing:
        n = int(rng.integers(1, spec.max_other_frames + 1))
        if rng.random() < spec.uniform_outfit:
            outfit = world.uniforms[rng.integers(0, len(world.uniforms))]
        else:
            outfit = world.outfits[person, rng.integers(0, 3)]
        x = _unit(outfit + _frames(rng, n, d, 1.2))
        out["body"] = [[b"%04d" % (5 * i), np.array([0, 0, 120, 300], np.float32), (x[i] * 10).astype(np.float16)]
                       for i in range(n)]
    if rng.random() >= spec.audio_missing:
        speaker = person if rng.random() < spec.audio_is_speaker else int(rng.integers(0, world.n))
        out["audio"] = (_unit(world.voice[speaker] + _frames(rng, 1, d, 0.8)[0]) * 10).astype(np.float16)
    return out


def write_synthetic_iqiyi(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write ``{face,head,body,audio}_{train,val}.pickle``, ``train_gt.txt``, ``val_gt.txt``
    and ``SYNTHETIC.txt`` under ``root``. Identities are "1"…"N"; distractors are label 0."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    world = _World(spec, rng)
    distractors = np.arange(spec.identities, world.n)
    for split, per_id, noise in (("train", spec.train_clips, spec.train_noise_clips),
                                 ("val", spec.val_clips, spec.val_noise_clips)):
        people = np.concatenate([np.repeat(np.arange(spec.identities), per_id),
                                 rng.choice(distractors, noise) if len(distractors) else np.zeros(0, int)])
        people = people[rng.permutation(len(people))]
        tables: dict[str, dict[bytes, object]] = {m: {} for m in iqiyi_io.MODALITIES}
        labels: dict[str, str] = {}
        for k, person in enumerate(people):
            name = f"SYNTH_VID_{split.upper()}_{k + 1:07d}"
            clip = _clip(world, int(person), spec, rng)
            for m, value in clip.items():  # a video without a modality is absent from its pickle
                tables[m][name.encode()] = value
            labels[name] = str(person + 1) if person < spec.identities else iqiyi_io.NOISE_ID
        for m, table in tables.items():
            iqiyi_io.write_py2_pickle(root / f"{m}_{split}.pickle", table)
        if split == "train":
            iqiyi_io.write_train_gt(root / "train_gt.txt", labels)
        else:
            iqiyi_io.write_id_lists(root / "val_gt.txt", iqiyi_io.labels_to_id_lists(labels))
    (root / "SYNTHETIC.txt").write_text(
        "SYNTHETIC data generated by vidpipe.models.synthetic (not iQIYI-VID, no real person).\n"
        + "\n".join(f"{k} = {v}" for k, v in asdict(spec).items()) + "\n"
    )
    return root
