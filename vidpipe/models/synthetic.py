"""An adversarial SYNTHETIC person-identification set in the iQIYI-VID-2019 file layout.

It is generated, not recorded: no real person is in it. It is built to punish the ways a
fusion model can fail on real footage, each behind a knob of :class:`SyntheticSpec`:

* ``face_noise``: per-frame face noise grows as quality falls (blur, small faces, profile),
  and the raw feature norm tracks quality, as ArcFace-style features do; low-quality frames
  are sometimes another person's face (a misdetection);
* ``lookalike``: identities come in groups whose faces share a direction, so faces alone are
  ambiguous for some clips;
* ``body_uniqueness``: the share of clips whose body vector is drawn fresh (clothes change
  from show to show, iQIYI-VID §6.4: body alone scores 5 % MAP): a modality that is unique
  per clip lets a wide MLP memorise each training clip;
* ``audio_mismatch``: the share of clips whose voice is someone else's (iQIYI-VID §6.4);
* ``faceless``: clips with no face at all, ranked only through head, body and audio;
* distractor clips of people outside the gallery in val (absent from ``val_gt.txt``) and,
  optionally, in train (label 0).

Two sizes are named in :data:`SIZES`: ``small`` (600 training clips, 40 identities, the case
of a user with a few hundred labelled clips) and ``large`` (20,000 training clips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vidpipe.eval import iqiyi_io


@dataclass(frozen=True)
class SyntheticSpec:
    identities: int = 40
    train_clips: int = 15  # per identity
    val_clips: int = 5  # per identity
    train_noise_clips: int = 0  # distractor clips in train (label 0)
    val_noise_clips: int = 80  # distractor clips in val (absent from val_gt.txt)
    distractor_people: int = 200
    dim: int = 512
    max_faces: int = 64  # faces per clip: 1 … max_faces (more than the 32 best, on purpose)
    max_other_frames: int = 12  # head and body frames per clip
    face_noise: float = 1.3  # per-frame noise scale at the lowest quality
    clip_noise: float = 1.3  # pose/lighting offset shared by a clip's faces, in the nuisance subspace
    nuisance_rank: int = 16
    lookalike: float = 0.55  # weight of the direction shared by a look-alike group
    lookalike_group: int = 4
    misdetection: float = 0.3  # chance that a frame of quality 0 shows another face
    faceless: float = 0.15  # clips with no face
    head_missing: float = 0.2
    head_signal: float = 0.3  # identity weight in a head vector, against a shared hairstyle
    hairstyles: int = 30
    body_missing: float = 0.1
    body_uniqueness: float = 1.0  # clips whose body is drawn fresh (else one of 3 outfits)
    audio_missing: float = 0.1
    audio_mismatch: float = 0.5  # clips whose voice is someone else's
    v2_face_files: bool = True  # face_{split}_v2.pickle, as the 2019 release names them
    seed: int = 0

    @property
    def train_size(self) -> int:
        return self.identities * self.train_clips + self.train_noise_clips


SIZES = {
    "small": SyntheticSpec(),
    "large": SyntheticSpec(identities=1000, train_clips=20, val_clips=4, train_noise_clips=0,
                           val_noise_clips=2000, distractor_people=2000, max_faces=40),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float | np.ndarray = 1.0) -> np.ndarray:
    """Isotropic noise whose vectors have norm ≈ ``scale`` whatever the dimension."""
    return rng.standard_normal(shape) * (np.asarray(scale)[..., None] / np.sqrt(shape[-1]))


class _World:
    """The people (gallery identities first, then distractors) and their prototypes, plus
    what every clip shares: a nuisance subspace (pose, lighting, expression) that carries
    most of a face's within-person variation, the direction that blurred faces collapse
    towards, a few common hairstyles and a background-sound direction."""

    def __init__(self, spec: SyntheticSpec, rng: np.random.Generator) -> None:
        n, d = spec.identities + spec.distractor_people, spec.dim
        groups = _unit(rng.standard_normal((n // spec.lookalike_group + 1, d)))
        a = spec.lookalike
        own = _unit(rng.standard_normal((n, d)))
        self.face = _unit(a * groups[np.arange(n) // spec.lookalike_group] + np.sqrt(1 - a * a) * own)
        self.nuisance = np.linalg.qr(rng.standard_normal((d, spec.nuisance_rank)))[0].T  # (r, d) orthonormal
        self.blur = _unit(rng.standard_normal(d))
        self.head = _unit(rng.standard_normal((n, d)))
        self.hairstyles = _unit(rng.standard_normal((spec.hairstyles, d)))
        self.outfits = _unit(rng.standard_normal((n, 3, d)))
        self.voice = _unit(rng.standard_normal((n, d)))
        self.background = _unit(rng.standard_normal(d))
        self.n = n


def _faces(world: _World, person: int, spec: SyntheticSpec, rng: np.random.Generator) -> list:
    d = spec.dim
    k = int(rng.integers(1, spec.max_faces + 1))
    r = len(world.nuisance)
    pose = rng.standard_normal(r) @ world.nuisance * (spec.clip_noise / np.sqrt(r))  # shared by the clip
    q = rng.beta(1.2, 1.2 if rng.random() < 0.6 else 3.0, size=k)  # some clips are mostly blurred
    other = rng.random(k) < spec.misdetection * (1 - q) ** 2
    who = np.where(other, rng.integers(0, world.n, k), person)
    jitter = rng.standard_normal((k, r)) @ world.nuisance * (0.3 / np.sqrt(r))
    sigma = spec.face_noise * (0.2 + 0.8 * (1 - q) ** 2)
    blur = spec.face_noise * 1.5 * (1 - q)[:, None] ** 2 * world.blur  # poor faces look alike
    x = _unit(world.face[who] + pose + jitter + blur + _noise(rng, (k, d), sigma))
    raw = x * (6 + 24 * q)[:, None]  # the raw norm tracks quality
    score = np.clip(100 * q + rng.normal(0, 8, k), 0, None)  # a noisy reading of that quality
    return [[b"%04d" % (4 * i), np.array([10, 10, 60, 80], np.float32) * (0.5 + q[i]),
             float(0.5 + 0.5 * q[i]), float(score[i]), raw[i].astype(np.float16)] for i in range(k)]


def _clip(world: _World, person: int, spec: SyntheticSpec, rng: np.random.Generator) -> dict:
    d, m = spec.dim, spec.max_other_frames
    out: dict = {}
    if rng.random() >= spec.faceless:
        out["face"] = _faces(world, person, spec, rng)
    if rng.random() >= spec.head_missing:
        k = int(rng.integers(1, m + 1))
        style = world.hairstyles[rng.integers(0, len(world.hairstyles))]  # hairstyles are shared
        x = _unit(spec.head_signal * world.head[person] + style + _noise(rng, (k, d), 0.5))
        out["head"] = [[b"%04d" % (4 * i), np.array([5, 5, 90, 110], np.float32), float(rng.uniform(0.5, 1)),
                        (12 * x[i]).astype(np.float16)] for i in range(k)]
    if rng.random() >= spec.body_missing:
        k = int(rng.integers(1, m + 1))
        if rng.random() < spec.body_uniqueness:
            outfit = _unit(rng.standard_normal(d))  # clothes never seen again
        else:
            outfit = world.outfits[person, rng.integers(0, 3)]
        x = _unit(outfit + _noise(rng, (k, d), 0.6))
        out["body"] = [[b"%04d" % (4 * i), np.array([0, 0, 120, 300], np.float32), (10 * x[i]).astype(np.float16)]
                       for i in range(k)]
    if rng.random() >= spec.audio_missing:
        speaker = int(rng.integers(0, world.n)) if rng.random() < spec.audio_mismatch else person
        music = rng.uniform(0, 1.5) * world.background  # music and crowd noise under the voice
        out["audio"] = (10 * _unit(world.voice[speaker] + music + _noise(rng, (d,), 0.8))).astype(np.float16)
    return out


def face_file(split: str, v2: bool) -> str:
    return f"face_{split}_v2.pickle" if v2 else f"face_{split}.pickle"


def write_synthetic_iqiyi(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write ``face_{split}[_v2].pickle``, ``{head,body,audio}_{split}.pickle``, ``train_gt.txt``,
    ``val_gt.txt`` and ``SYNTHETIC.txt`` under ``root``. Identities are "1"…"N"; distractors 0."""
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
            for m, value in _clip(world, int(person), spec, rng).items():  # absent modality: absent key
                tables[m][name.encode()] = value  # release keys carry no .mp4
            labels[name] = str(person + 1) if person < spec.identities else iqiyi_io.NOISE_ID
        for m, table in tables.items():
            name = face_file(split, spec.v2_face_files) if m == "face" else f"{m}_{split}.pickle"
            iqiyi_io.write_py2_pickle(root / name, table)
        if split == "train":
            iqiyi_io.write_train_gt(root / "train_gt.txt", labels)
        else:
            iqiyi_io.write_id_lists(root / "val_gt.txt", iqiyi_io.labels_to_id_lists(labels))
    (root / "SYNTHETIC.txt").write_text(
        "SYNTHETIC data generated by vidpipe.models.synthetic (not iQIYI-VID, no real person).\n"
        + "\n".join(f"{k} = {v}" for k, v in asdict(spec).items()) + "\n"
    )
    return root


def sized_spec(size: str, **overrides: object) -> SyntheticSpec:
    """``SIZES[size]`` with some knobs changed."""
    try:
        base = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}") from None
    return replace(base, **overrides)
