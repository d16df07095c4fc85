"""Known pretrained weights: file, sha256, size, source, licence, task; lookup and fetch.

Like torchvision's ``WeightsEnum``: each entry carries where it comes from and how to
check it. Lookup order (first hit wins): ``--weights DIR`` → ``$VIDPIPE_WEIGHTS`` →
``./weights`` → ``<user cache>/weights``. In each directory both the layout of the
shared weights folder (``DIR/face_det/scrfd_500m.onnx``) and a flat one
(``DIR/scrfd_500m.onnx``) are accepted.

Nothing here downloads on its own: only ``fetch`` does, and only the ``vidpipe weights
fetch`` command calls it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import platformdirs

from vidpipe.util import give_new_file_mode

log = logging.getLogger("vidpipe")

ENV_WEIGHTS = "VIDPIPE_WEIGHTS"
ENV_CACHE = "VIDPIPE_CACHE_DIR"  # overrides the user cache dir (containers, tests)


class WeightsError(Exception):
    """A weights file that is unknown, missing, corrupt or cannot be fetched (one-line message)."""


class WeightsNotFound(WeightsError):
    """The file is in none of the lookup directories."""


class WeightsCorrupt(WeightsError):
    """The file exists but its size or sha256 differs from the registry."""


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    relpath: str  # relative to a weights dir, e.g. "face_det/scrfd_500m.onnx"
    sha256: str | None  # None: not pinned (we could not state it honestly)
    size: int | None
    url: str  # upstream source: a file, or a zip holding `archive_member`
    licence: str
    task: str
    archive_member: str | None = None  # member of the zip at `url`

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


_RAW = "https://github.com/{repo}/raw/HEAD/{path}"
_INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7/{asset}"
_INSIGHTFACE_LICENCE = "insightface model zoo: non-commercial research only"

_ENTRIES = [
    WeightsEntry(
        "scrfd_500m", "face_det/scrfd_500m.onnx",
        "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", 2524817,
        _RAW.format(repo="yukkki7/FaceAnalysisApp", path="models/scrfd_500m.onnx"),
        f"none stated by the mirror; SCRFD weights from the {_INSIGHTFACE_LICENCE}", "face_detection",
    ),
    WeightsEntry(
        "scrfd_2.5g", "face_det/scrfd_2.5g.onnx",
        "041f73f47371333d1d17a6fee6c8ab4e6aecabefe398ff32cca4e2d5eaee0af9", 3292009,
        _RAW.format(repo="yukkki7/FaceAnalysisApp", path="models/scrfd_2.5g.onnx"),
        f"none stated by the mirror; SCRFD weights from the {_INSIGHTFACE_LICENCE}", "face_detection",
    ),
    WeightsEntry(
        "mobilefacenet_128d", "face_rec/mobilefacenet_128d.onnx",
        "0c9ad2a83969fc82155706f7020e6926b4a1a90a5476fff4a5588dfe207f64a4", 3998463,
        _RAW.format(repo="hyeonjunchoi/AutoTracking_RassibarryPi", path="mobilefacenet.onnx"),
        "none stated", "face_embedding",
    ),
    WeightsEntry(
        "mobilefacenet_128d_paddle", "face_rec/mobilefacenet_128d_paddle.onnx",
        "6ced4e0c36abba9dd24b48d725f7dbb94089f75b3d3445d3d67b85157cb64743", 4001322,
        _RAW.format(repo="KennethWang1221/Face-Detection-and-Recognition-System", path="MobileFaceNet.onnx"),
        "none stated (likely insightface arcface_paddle MobileFaceNet, MIT code)", "face_embedding",
    ),
    WeightsEntry(
        "scrfd_person_2.5g", "person_det/scrfd_person_2.5g.onnx",
        "76522ba15eecb0712780509e912884aba066e9834be0c85761918cdcf76de5b5", 3710223,
        _RAW.format(repo="kai100392/scrfd_arcface_onnx", path="scrfd_person_2.5g.onnx"),
        f"none stated by the mirror; {_INSIGHTFACE_LICENCE}", "person_detection",
    ),
    WeightsEntry(
        "yolox_nano", "person_det/yolox_nano.onnx",
        "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd", 3678356,
        _RAW.format(repo="Bigisland1729/object-detection-models", path="yolox_nano.onnx"),
        "none stated by the mirror; YOLOX is Apache-2.0 (Megvii)", "person_detection",
    ),
    WeightsEntry(
        "osnet_x0_25_msmt17", "reid/osnet_x0_25_msmt17.onnx",
        "61b2604171ef9d58d21758626f83b35a253c3d7123976523a6e03068c3c95d7b", 921616,
        _RAW.format(repo="akshaydhame2001/YOLOv8_Tracking_TensorRT", path="osnet_x0_25_msmt17.onnx"),
        "none stated by the mirror; OSNet weights from torchreid/boxmot", "reid",
    ),
    WeightsEntry(
        "yolov9_n_wholebody15", "head_det/yolov9_n_wholebody15_post_0145_1x3x480x640.onnx",
        "d575d2c9c0820e8ec916034389e7e4effd64cb43a409592709c99c74393b396c", 2423884,
        _RAW.format(repo="PINTO0309/yolov9-wholebody15-onnxruntime-web-test",
                    path="yolov9_n_wholebody15_post_0145_1x3x480x640.onnx"),
        "GPL-3.0 (PINTO0309's repository); never the only choice: see head detectors", "head_detection",
    ),
    WeightsEntry(
        "light_asd_talkset", "asd/light_asd_talkset.model",
        "efc375833887eefa9d209dc92810e18519b04c3c73ea35a549f2a7f40b7d94d5", 4175289,
        _RAW.format(repo="Junhua-Liao/Light-ASD", path="weight/finetuning_TalkSet.model"),
        "MIT (Light-ASD repository)", "active_speaker",
    ),
    WeightsEntry(
        "light_asd_ava", "asd/light_asd_ava.model",
        "d44bc3ea7baa8e0946fa3921311714a630ed8b90a1928fab0dbe30d918909317", 4175289,
        _RAW.format(repo="Junhua-Liao/Light-ASD", path="weight/pretrain_AVA_CVPR.model"),
        "MIT (Light-ASD repository)", "active_speaker",
    ),
    # insightface buffalo_l members. Their sha256 and exact sizes are NOT pinned: we have
    # never had the files here to hash, and we do not copy checksums we cannot check.
    WeightsEntry(
        "det_10g", "face_det/det_10g.onnx", None, None,
        _INSIGHTFACE_RELEASE.format(asset="buffalo_l.zip"), _INSIGHTFACE_LICENCE, "face_detection",
        archive_member="det_10g.onnx",
    ),
    WeightsEntry(
        "w600k_r50", "face_rec/w600k_r50.onnx", None, None,
        _INSIGHTFACE_RELEASE.format(asset="buffalo_l.zip"), _INSIGHTFACE_LICENCE, "face_embedding",
        archive_member="w600k_r50.onnx",
    ),
]

REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in _ENTRIES}

# Model files that ship inside PyPI wheels (no lookup, no fetch): file name -> licence.
PACKAGED: dict[str, str] = {
    "shape_predictor_5_face_landmarks.dat": "public domain (dlib-models; face-recognition-models wheel)",
    "dlib_face_recognition_resnet_model_v1.dat": "public domain (dlib-models; face-recognition-models wheel)",
    "mmod_human_face_detector.dat": "public domain (dlib-models; face-recognition-models wheel)",
    "pretrained.pt": "Apache-2.0 (GE2E speaker encoder; resemblyzer wheel)",
    "silero_vad.onnx": "MIT (silero-vad wheel)",
}


def get_entry(name: str) -> WeightsEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------- lookup

def package_dir(package: str, pip_name: str) -> Path:
    """The folder of an installed package that ships weights, found without importing it
    (silero_vad and resemblyzer import torch; face_recognition_models, pkg_resources)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(f"{package} is not installed: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """vidpipe's user cache dir ($VIDPIPE_CACHE_DIR overrides it)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path(platformdirs.user_cache_dir("vidpipe"))


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """(origin, directory) in lookup order; the origin says where each one came from."""
    dirs: list[tuple[str, Path]] = []
    if weights_dir is not None:
        dirs.append(("--weights", Path(weights_dir)))
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        dirs.append((f"${ENV_WEIGHTS}", Path(env)))
    dirs.append(("./weights", Path("weights").absolute()))
    dirs.append(("user cache", cache_dir() / "weights"))
    return dirs


def check_named_dirs(weights_dir: str | os.PathLike[str] | None, origin: str = "run.weights_dir") -> None:
    """A weights directory the user named (`weights_dir`, said to come from `origin`, and
    $VIDPIPE_WEIGHTS) must exist: a typo must not quietly fall back to other backends."""
    named = [(origin, weights_dir)] if weights_dir is not None else []
    if os.environ.get(ENV_WEIGHTS):
        named.append((f"${ENV_WEIGHTS}", os.environ[ENV_WEIGHTS]))
    for where, d in named:
        if not Path(d).is_dir():
            state = "is not a directory" if Path(d).exists() else "does not exist"
            raise WeightsError(f"weights directory {d} (from {where}) {state}")


def _describe_dirs(dirs: Sequence[tuple[str, Path]]) -> str:
    return ", ".join(f"{d} ({origin})" for origin, d in dirs)


def find(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing file for `name` in lookup order, unverified; None if absent."""
    entry = get_entry(name)
    for _, d in search_dirs(weights_dir):
        for candidate in (d / entry.relpath, d / entry.filename):
            if candidate.is_file():
                return candidate
    return None


def resolve(name: str, weights_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> Path:
    """Path of weights `name`, checked against the registry's size and sha256.

    Raises WeightsNotFound / WeightsCorrupt with a one-line message that says what to do.
    """
    entry = get_entry(name)
    path = find(name, weights_dir)
    if path is None:
        raise WeightsNotFound(
            f"weights file {entry.filename} ({entry.name}) not found; looked in "
            f"{_describe_dirs(search_dirs(weights_dir))}; run `vidpipe weights fetch {entry.name}` "
            f"or copy {entry.filename} into one of those dirs"
        )
    if verify:
        check(entry, path)
    return path


def check(entry: WeightsEntry, path: Path, use_cache: bool = True) -> str:
    """sha256 of `path`, raising WeightsCorrupt when it differs from the entry's."""
    size = path.stat().st_size
    how = (f"delete it and run `vidpipe weights fetch {entry.name}`, or copy a good "
           f"{entry.filename} there")
    if entry.size is not None and size != entry.size:
        raise WeightsCorrupt(
            f"weights file {path} is corrupt: {size} bytes, expected {entry.size}; {how}")
    digest = sha256_file(path, use_cache=use_cache)
    if entry.sha256 is not None and digest != entry.sha256:
        raise WeightsCorrupt(
            f"weights file {path} is corrupt: sha256 {digest[:12]}… expected {entry.sha256[:12]}…; {how}")
    return digest


# ---------------------------------------------------------------- hashing (cached)

_MEMO: dict[tuple[str, int, int], str] = {}


def _hash_cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _load_hash_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_hash_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def sha256_file(path: str | os.PathLike[str], use_cache: bool = True) -> str:
    """Hex sha256 of a file.

    Cached by (real path, size, mtime) in-process and in ``<cache>/sha256.json`` so that
    resolving weights on every run does not rehash them; ``use_cache=False`` forces it.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if use_cache:
        if key in _MEMO:
            return _MEMO[key]
        rec = _load_hash_cache().get(str(p))
        if isinstance(rec, dict) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            digest = str(rec.get("sha256"))
            _MEMO[key] = digest
            return digest
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _MEMO[key] = digest
    _store_hash(p, st.st_size, st.st_mtime_ns, digest)
    return digest


def _store_hash(p: Path, size: int, mtime_ns: int, digest: str) -> None:
    data = _load_hash_cache()
    data[str(p)] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
    target = _hash_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".sha256.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, target)
    except OSError as e:  # a read-only cache only costs a rehash next time
        log.debug("cannot write hash cache %s: %s", target, e)


# ---------------------------------------------------------------- listing

@dataclass(frozen=True)
class WeightsStatus:
    entry: WeightsEntry
    path: Path | None  # where it was found (unverified), None when missing


def list_weights(weights_dir: str | os.PathLike[str] | None = None) -> list[WeightsStatus]:
    """One row per registry entry: where lookup finds it, if anywhere."""
    return [WeightsStatus(e, find(e.name, weights_dir)) for e in REGISTRY.values()]


# ---------------------------------------------------------------- fetch (explicit only)

def default_dest() -> Path:
    """Where `fetch` writes when no --dest is given: $VIDPIPE_WEIGHTS, else the cache."""
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env) if env else cache_dir() / "weights"


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"cannot download {url}: {reason}") from None


def fetch(name: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """Download weights `name` into `dest` (layout ``dest/<task dir>/<file>``), verified.

    Downloads to a temporary file beside the target, checks size and sha256, then renames,
    so an interrupted fetch never leaves a file that lookup would accept.
    Only ever called by the user's explicit `vidpipe weights fetch`.
    """
    entry = get_entry(name)
    target = Path(dest) if dest is not None else default_dest()
    target = target / entry.relpath
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create {target.parent}: {e.strerror}") from None
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{entry.filename}.", suffix=".part")
    give_new_file_mode(fd)  # readable like any new file, not mkstemp's 0600
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("fetching %s from %s", entry.name, entry.url)
        if entry.archive_member is None:
            _download(entry.url, tmp)
        else:
            archive = tmp.with_suffix(".zip")
            try:
                _download(entry.url, archive)
                _extract_member(archive, entry.archive_member, tmp, entry.url)
            finally:
                archive.unlink(missing_ok=True)
        digest = check(entry, tmp, use_cache=False)
        if entry.sha256 is None:
            log.warning("%s has no pinned sha256; fetched file has sha256 %s", entry.name, digest)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    sha256_file(target)  # prime the cache for the renamed file
    return target


def _extract_member(archive: Path, member: str, out: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise WeightsError(f"{url} holds no {member}")
            with z.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile:
        raise WeightsError(f"{url} is not a valid zip archive") from None


def describe_file(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """{file, sha256, licence} of a model file, for the manifest: the licence from the
    registry entry (or the wheel) that file name belongs to."""
    p = Path(path)
    licence = PACKAGED.get(p.name)
    for entry in REGISTRY.values():
        if entry.filename == p.name:
            licence = entry.licence
    return {"file": str(p), "sha256": sha256_file(p), "licence": licence}
