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

import functools
import io
import math
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidpipe.eval.metrics import NOISE_ID

MODALITIES = ("face", "head", "body", "audio")


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


# A release pickle's arrays are built empty and then filled from bytes in the file itself
# (numpy's own pickles: ``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__``). An array
# sized by the pickle's arguments instead is how a 122-byte file asks for 8 GB
# (``copy_reg._reconstructor(ndarray, ndarray, (10**9,))``): every array the allowed globals
# make is counted against this, for one load.
MAX_PICKLE_ARRAY_BYTES = 64 << 20


class _ArrayBudget:
    """The bytes that the arrays an unpickler has built so far may still take."""

    def __init__(self, limit: int = MAX_PICKLE_ARRAY_BYTES) -> None:
        self.left = limit

    def take(self, shape: Any, dtype: Any = float) -> None:
        try:
            dims = [int(shape)] if np.isscalar(shape) else [int(n) for n in shape]
            itemsize = np.dtype(dtype).itemsize
        except (TypeError, ValueError, OverflowError):
            return  # numpy refuses these itself, without allocating
        n = itemsize * math.prod(max(d, 0) for d in dims)
        if n > self.left:
            raise pickle.UnpicklingError(
                f"refusing to build an array of shape {tuple(dims)} ({n / 1e6:,.0f} MB) from a pickle: "
                f"arrays may take {MAX_PICKLE_ARRAY_BYTES >> 20} MB at most")
        self.left -= n


class _NdarrayClass:
    """``numpy.ndarray`` as a pickle sees it: an argument of the reconstructors (which take
    the real class back), or called directly, with its size counted."""

    def __init__(self, budget: _ArrayBudget) -> None:
        self.budget = budget

    def __call__(self, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        self.budget.take(shape, dtype)
        return np.ndarray(shape, dtype, *args, **kwargs)


def _real(cls: Any) -> Any:
    return np.ndarray if isinstance(cls, _NdarrayClass) else cls


def _capped_globals(budget: _ArrayBudget, real: Callable[[str, str], Any]) -> dict[tuple[str, str], Any]:
    """The allowed globals that build arrays, sized against `budget`; object arrays refused
    (numpy crashes on a short object-array state, and features are numbers)."""
    ndarray = _NdarrayClass(budget)
    reconstruct = real("numpy._core.multiarray", "_reconstruct")
    reconstructor = real("copyreg", "_reconstructor")

    def capped_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        budget.take(shape, dtype)
        return reconstruct(_real(subtype), shape, dtype)

    def capped_reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if _real(base) is np.ndarray:
            budget.take(state)
        return reconstructor(_real(cls), _real(base), state)

    def numbers_dtype(*args: Any) -> np.dtype:
        dtype = np.dtype(*args)
        if dtype.hasobject or dtype.itemsize > MAX_PICKLE_ARRAY_BYTES:
            raise pickle.UnpicklingError(f"refusing dtype {dtype} from a pickle: only numbers are expected")
        return dtype

    return {
        ("numpy", "ndarray"): ndarray,
        ("numpy", "dtype"): numbers_dtype,
        ("numpy._core.multiarray", "_reconstruct"): capped_reconstruct,
        ("copyreg", "_reconstructor"): capped_reconstructor,
    }


def _restricted_find_class(unpickler: pickle.Unpickler | pickle._Unpickler, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED_GLOBALS:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a pickle")
    module = {"numpy.core.multiarray": "numpy._core.multiarray", "copy_reg": "copyreg",
              "__builtin__": "builtins"}.get(module, module)  # Python 2 and numpy 1 names
    real = functools.partial(type(unpickler).__mro__[1].find_class, unpickler)
    if not hasattr(unpickler, "capped"):
        unpickler.capped = _capped_globals(_ArrayBudget(), real)
    return unpickler.capped.get((module, name)) or real(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals listed in ``_ALLOWED_GLOBALS``, and
    builds arrays of a bounded size (``MAX_PICKLE_ARRAY_BYTES``)."""

    find_class = _restricted_find_class


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


class PickleBackReference(IqiyiFormatError):
    """The pickle referred back to an object that streaming had already let go of."""


# What the streaming unpickler forgets once a video is handed over, from the most forgetful:
# every container, array and string of more than 2 characters; then only lists, dicts, arrays
# and strings of more than 64 bytes and tuples holding any of those; then nothing.
FORGET_LEVELS = (0, 1, 2)


def _droppable(obj: Any, level: int) -> bool:
    if level >= 2:
        return False
    if isinstance(obj, (list, dict, set)):
        return True
    if isinstance(obj, np.ndarray):
        return level == 0 or obj.nbytes > 64
    if isinstance(obj, (str, bytes)):
        return len(obj) > (2 if level == 0 else 64)
    if isinstance(obj, tuple):
        return level == 0 or any(_droppable(x, level) for x in obj)
    return False


class _StreamingUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, restricted like :class:`RestrictedUnpickler`, that hands each
    item of the top-level dict to ``on_item`` instead of storing it, and forgets the memo
    entries of what it handed over (as ``level`` of :data:`FORGET_LEVELS` says). Memory then
    stays bounded by one batch of videos (1,000 per SETITEMS in protocol 2) plus the small
    shared objects a pickle may refer back to (classes, dtypes). A pickle that refers back to
    a forgotten object raises :class:`PickleBackReference`."""

    dispatch = pickle._Unpickler.dispatch.copy()
    find_class = _restricted_find_class

    def __init__(self, file: Any, on_item: Callable[[Any, Any], None], level: int = 0) -> None:
        super().__init__(file, encoding="latin1")
        self.on_item, self.level = on_item, level
        self.top: dict | None = None
        self.recent: list[int] = []
        self.next_memo = 0

    def _top_created(self) -> None:
        if self.top is None and len(self.stack) == 1 and not self.metastack:
            self.top = self.stack[0]

    def load_empty_dictionary(self) -> None:
        super().load_empty_dictionary()
        self._top_created()

    def load_dict(self) -> None:
        super().load_dict()
        self._top_created()

    def _set_items(self, d: dict, pairs: list) -> None:
        if d is not self.top:
            for i in range(0, len(pairs), 2):
                d[pairs[i]] = pairs[i + 1]
            return
        for i in range(0, len(pairs), 2):
            self.on_item(pairs[i], pairs[i + 1])
        for i in self.recent:
            if _droppable(self.memo.get(i), self.level):
                del self.memo[i]
        self.recent.clear()

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    def load_setitems(self) -> None:
        pairs = self.pop_mark()
        self._set_items(self.stack[-1], pairs)

    def _memo_put(self, i: int) -> None:
        self.memo[i] = self.stack[-1]
        self.recent.append(i)
        self.next_memo = max(self.next_memo, i + 1)

    def load_put(self) -> None:
        self._memo_put(int(self.readline()[:-1]))

    def load_binput(self) -> None:
        self._memo_put(self.read(1)[0])

    def load_long_binput(self) -> None:
        self._memo_put(int.from_bytes(self.read(4), "little"))

    def load_memoize(self) -> None:  # protocol 4 numbers entries by count, not by len(memo)
        self._memo_put(self.next_memo)

    def _memo_get(self, i: int) -> None:
        if i not in self.memo:
            if i < self.next_memo:
                raise PickleBackReference(f"refers back to object {i} of an earlier video")
            raise pickle.UnpicklingError(f"memo value not found at index {i}")
        self.append(self.memo[i])

    def load_get(self) -> None:
        self._memo_get(int(self.readline()[:-1]))

    def load_binget(self) -> None:
        self._memo_get(self.read(1)[0])

    def load_long_binget(self) -> None:
        self._memo_get(int.from_bytes(self.read(4), "little"))

    for _op, _fn in ((pickle.EMPTY_DICT, load_empty_dictionary), (pickle.DICT, load_dict),
                     (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
                     (pickle.PUT, load_put), (pickle.BINPUT, load_binput), (pickle.LONG_BINPUT, load_long_binput),
                     (pickle.MEMOIZE, load_memoize), (pickle.GET, load_get), (pickle.BINGET, load_binget),
                     (pickle.LONG_BINGET, load_long_binget)):
        dispatch[_op[0]] = _fn
    del _op, _fn


def stream_modality_pickle(path: str | Path, modality: str, on_video: Callable[[str, "VideoFeatures"], None],
                           on_progress: Callable[[int], None] | None = None, level: int = 0) -> int:
    """Parse a release pickle video by video in bounded memory: ``on_video(clip_id, features)``
    for each video (frames best first), ``on_progress(bytes_read)`` now and then; returns the
    number of videos. What a video was made of is forgotten once it is handed over (``level``
    of :data:`FORGET_LEVELS`); a pickle that refers back to a forgotten object raises
    :class:`PickleBackReference`: retry at the next level."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    path = Path(path)
    count = 0
    with open(path, "rb", buffering=1 << 20) as f:

        def on_item(name: Any, entry: Any) -> None:
            nonlocal count
            try:
                on_video(clip_name(name), _parse_entry(modality, entry))
            except (TypeError, ValueError) as e:
                raise IqiyiFormatError(f"{path}: video {clip_name(name)}: {e}") from None
            count += 1
            if on_progress is not None and count % 256 == 0:
                on_progress(f.tell())

        try:
            top = _StreamingUnpickler(f, on_item, level).load()
        except IqiyiFormatError as e:
            raise type(e)(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from None
        except pickle.UnpicklingError as e:
            raise IqiyiFormatError(f"{path}: {e}") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise IqiyiFormatError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
        if not isinstance(top, Mapping):
            raise IqiyiFormatError(f"{path}: expected a dict keyed by video name, got {type(top).__name__}")
        if on_progress is not None:
            on_progress(f.tell())
    return count


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


def modality_files(root: str | Path, modality: str, split: str) -> list[Path]:
    """Candidate release files of one modality and split, preferred first.

    The 2019 release names its face files ``face_train_v2.pickle`` / ``face_val_v2.pickle``
    (the test split appears as ``face_test.pickle`` or ``face_test_v2.pickle``); head, body
    and audio are ``{modality}_{split}.pickle``.
    """
    root = Path(root)
    if modality == "face":
        return [root / f"face_{split}_v2.pickle", root / f"face_{split}.pickle"]
    return [root / f"{modality}_{split}.pickle"]


def modality_file(root: str | Path, modality: str, split: str) -> Path | None:
    """The file to read for one modality and split (the ``_v2`` face file when both exist)."""
    return next((p for p in modality_files(root, modality, split) if p.is_file()), None)


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


def lenient_notes(submission: str | Path, truth: Mapping[str, Sequence[str]], top_k: int = 100) -> list[str]:
    """What the default (lenient) evaluation let pass that the official script would not."""
    text = Path(submission).read_text(encoding="utf-8")
    raw = [line for line in text.splitlines() if line.strip()]
    rows = [line.split() for line in raw]
    notes = []
    bare = sum(not t.endswith(".mp4") for terms in rows for t in terms[1:])
    if bare:
        notes.append(f"{bare} clip name(s) without .mp4 were matched")
    long = sum(len(dict.fromkeys(terms[1:])) > top_k for terms in rows)
    if long:
        notes.append(f"{long} list(s) longer than {top_k} were cut to {top_k}")
    if len(rows) > len(truth):
        notes.append(f"{len(rows)} lines for {len(truth)} ground-truth identities")
    if any(" ".join(terms) != line.strip() for terms, line in zip(rows, raw)):
        notes.append("lines were split on any whitespace, not single spaces")
    return notes


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
