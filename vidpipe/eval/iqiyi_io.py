"""Reading and writing the official iQIYI-VID-2019 release files.

* ``{face,head,body,audio}_{train,val,test}.pickle``: Python-2 pickles, one entry per video
  keyed by the video name (bytes under Python 3). Face: a list of
  ``[frame_str, bbox, det_score, quality_score, feat]``; head: ``[frame_str, bbox, det_score,
  feat]``; body: ``[frame_str, bbox, feat]``; audio: one 512-d vector. Features are float16.
* ``train_gt.txt``: ``NAME.mp4 ID`` per line. ``val_gt.txt`` and submissions:
  ``ID NAME.mp4 NAME.mp4 …`` per line. Videos absent from a gt file are noise (label 0).

Pickles from the internet can run arbitrary code when loaded, so every pickle goes through
:class:`RestrictedUnpickler`, which admits only the numpy array/scalar reconstructors and the
codec that Python-2 byte strings need; anything else (``os.system``, ``eval``…) is refused.
Clip ids are video names without ``.mp4``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODALITIES = ("face", "head", "body", "audio")
NOISE_ID = "0"


class IqiyiFormatError(ValueError):
    """A file that is not in the iQIYI-VID-2019 format (or is not safe to load)."""


# (module, name) pairs a release pickle legitimately references.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals listed in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            if module.startswith("numpy.core"):  # numpy 2 keeps these under numpy._core
                module = module.replace("numpy.core", "numpy._core", 1)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a pickle")


def safe_load_pickle(source: str | Path | bytes) -> Any:
    """Load a (Python 2 or 3) pickle through the restricted unpickler."""
    try:
        if isinstance(source, bytes):
            return RestrictedUnpickler(io.BytesIO(source), encoding="latin1").load()
        with open(source, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise IqiyiFormatError(f"{source if not isinstance(source, bytes) else 'pickle'}: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise IqiyiFormatError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None


def clip_name(name: str | bytes) -> str:
    """A video name as a clip id: decoded and without the ``.mp4`` extension."""
    if isinstance(name, bytes):
        name = name.decode("latin1")
    return name[:-4] if name.endswith(".mp4") else name


@dataclass
class VideoFeatures:
    """The frames of one video for one modality, best quality first."""

    feats: np.ndarray  # (n, D) float16
    quality: np.ndarray  # (n,) float32: face quality, head det score, or 0 (body, audio)
    frames: np.ndarray  # (n,) int32 frame numbers (0 for audio)


def _parse_entry(modality: str, entry: Any) -> VideoFeatures:
    if modality == "audio":
        vec = np.asarray(entry, dtype=np.float16).reshape(1, -1)
        return VideoFeatures(vec, np.zeros(1, np.float32), np.zeros(1, np.int32))
    width = {"face": 5, "head": 4, "body": 3}[modality]
    rows = list(entry)
    if not rows:
        return VideoFeatures(np.zeros((0, 0), np.float16), np.zeros(0, np.float32), np.zeros(0, np.int32))
    for row in rows:
        if len(row) != width:
            raise IqiyiFormatError(f"{modality} entry has {len(row)} fields, expected {width}")
    feats = np.stack([np.asarray(row[-1], dtype=np.float16).reshape(-1) for row in rows])
    frames = np.array([int(row[0]) for row in rows], dtype=np.int32)
    if modality == "face":
        quality = np.array([float(row[3]) for row in rows], dtype=np.float32)
    elif modality == "head":
        quality = np.array([float(row[2]) for row in rows], dtype=np.float32)
    else:
        quality = np.zeros(len(rows), np.float32)
    order = np.argsort(-quality, kind="stable")
    return VideoFeatures(feats[order], quality[order], frames[order])


def read_modality_pickle(path: str | Path, modality: str) -> dict[str, VideoFeatures]:
    """Parse one release pickle into per-clip arrays, frames sorted by quality (best first)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    data = safe_load_pickle(path)
    if not isinstance(data, Mapping):
        raise IqiyiFormatError(f"{path}: expected a dict keyed by video name, got {type(data).__name__}")
    out: dict[str, VideoFeatures] = {}
    for name, entry in data.items():
        try:
            out[clip_name(name)] = _parse_entry(modality, entry)
        except (TypeError, ValueError) as e:
            raise IqiyiFormatError(f"{path}: video {clip_name(name)}: {e}") from None
    return out


def _lines(path: str | Path) -> list[list[str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise IqiyiFormatError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise IqiyiFormatError(f"{path}: not a UTF-8 text file") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def read_train_gt(path: str | Path) -> dict[str, str]:
    """``NAME.mp4 ID`` per line → {clip_id: identity}."""
    out: dict[str, str] = {}
    for lineno, terms in enumerate(_lines(path), start=1):
        if len(terms) != 2:
            raise IqiyiFormatError(f"{path}:{lineno}: expected 'NAME.mp4 ID', got {' '.join(terms)!r}")
        out[clip_name(terms[0])] = terms[1]
    return out


def read_id_lists(path: str | Path) -> dict[str, list[str]]:
    """``ID NAME.mp4 NAME.mp4 …`` per line (val_gt.txt and submissions) → {identity: [clip_id]}."""
    out: dict[str, list[str]] = {}
    for lineno, terms in enumerate(_lines(path), start=1):
        identity, clips = terms[0], [clip_name(t) for t in terms[1:]]
        if identity in out:
            raise IqiyiFormatError(f"{path}:{lineno}: identity {identity} listed twice")
        out[identity] = clips
    return out


def id_lists_to_labels(lists: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """{identity: [clip]} → {clip: identity}."""
    return {clip: identity for identity, clips in lists.items() for clip in clips}


def labels_to_id_lists(labels: Mapping[str, str], skip: Iterable[str] = (NOISE_ID,)) -> dict[str, list[str]]:
    """{clip: identity} → {identity: [clip]} (noise dropped)."""
    skip = set(skip)
    out: dict[str, list[str]] = {}
    for clip, identity in labels.items():
        if identity not in skip:
            out.setdefault(identity, []).append(clip)
    return out


def write_id_lists(path: str | Path, lists: Mapping[str, Sequence[str]]) -> None:
    """Write ``ID v1.mp4 … vK.mp4`` lines (the submission / val_gt format), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for identity, clips in lists.items():
            f.write(" ".join([str(identity), *(f"{c}.mp4" for c in clips)]) + "\n")
    tmp.replace(path)


def write_train_gt(path: str | Path, labels: Mapping[str, str]) -> None:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for clip, identity in labels.items():
            f.write(f"{clip}.mp4 {identity}\n")


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler is the one that can be extended
    """Writes pickles shaped like the Python-2 release: byte strings as py2 ``str`` opcodes and
    numpy globals under ``numpy.core`` (what a Python 2 numpy wrote)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "")
        qualname = name or getattr(obj, "__qualname__", obj.__name__)
        if module.startswith("numpy._core"):
            module = module.replace("numpy._core", "numpy.core", 1)
        elif obj is np.ndarray or obj is np.dtype:
            module = "numpy"
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = save_global


def write_py2_pickle(path: str | Path, obj: Any) -> None:
    """Write ``obj`` (dicts keyed by bytes, lists, floats, numpy arrays) as protocol 2 in the
    layout of the official Python-2 files: used for synthetic sets and tests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)
    tmp.replace(path)


def read_gt(path: str | Path) -> dict[str, str]:
    """Either gt layout → {clip_id: identity}: ``NAME.mp4 ID`` (train_gt) or
    ``ID NAME.mp4 …`` (val_gt), told apart by where the ``.mp4`` names are."""
    lines = _lines(path)
    if lines and len(lines[0]) == 2 and lines[0][0].endswith(".mp4") and not lines[0][1].endswith(".mp4"):
        return read_train_gt(path)
    return id_lists_to_labels(read_id_lists(path))
