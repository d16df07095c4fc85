"""The Python API: `run` a folder of videos into a feature store, `read_table` it back."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from vidpipe import __version__
from vidpipe.backends.faces import load_face_backend
from vidpipe.config import Config
from vidpipe.pipeline.faces import FaceStage
from vidpipe.pipeline.runner import VideoOutcome, VideoProcessor
from vidpipe.store import Manifest, read_table, remove_stale_temporaries
from vidpipe.weights import sha256_file

log = logging.getLogger("vidpipe")

__all__ = ["run", "read_table", "RunReport", "discover"]


@dataclass
class RunReport:
    """What a run did, file by file."""

    out: Path
    outcomes: list[VideoOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[VideoOutcome]:
        """Files that could not be processed, now or in the earlier run that is being resumed."""
        return [o for o in self.outcomes if o.status == "error" or (o.status == "skipped" and o.error)]

    @property
    def exit_code(self) -> int:
        """0 when every file was processed, 1 when some failed."""
        return 1 if self.failed else 0


def discover(inputs: Iterable[str | os.PathLike[str]], extensions: Sequence[str]) -> tuple[list[Path], list[VideoOutcome]]:
    """Video files under the inputs (folders recursively, by extension; files as given)."""
    files: list[Path] = []
    missing: list[VideoOutcome] = []
    exts = {e.lower() for e in extensions}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and f.suffix.lower() in exts and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        elif p.exists():
            files.append(p)
        else:
            missing.append(VideoOutcome(str(p), None, "error", error="no such file or directory"))
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return unique, missing


def config_hash(cfg: Config, backend_name: str, weights: list[dict[str, str]]) -> str:
    """What decides whether a finished video must be redone: analysis settings and models."""
    key = {"config": cfg.analysis_dict(), "face_backend": backend_name, "weights": [w["sha256"] for w in weights]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _build_processor(cfg: Config, out: Path) -> tuple[VideoProcessor, Manifest]:
    backend = load_face_backend(cfg.faces, device=cfg.run.device, weights_dir=cfg.run.weights_dir)
    weights = [{"name": p.stem, "file": str(p), "sha256": sha256_file(p)} for p in backend.weight_files]
    chash = config_hash(cfg, backend.name, weights)
    manifest = Manifest(__version__, cfg.to_dict(), backend.name, backend.embedding_dim, weights, chash)
    return VideoProcessor(cfg, out, FaceStage(backend, cfg.faces), chash), manifest


# One processor per worker process: models load once per worker, not once per video.
_worker: VideoProcessor | None = None


def _init_worker(cfg: Config, out: Path) -> None:
    global _worker
    logging.getLogger("vidpipe").setLevel(logging.WARNING)
    _worker, _ = _build_processor(cfg, out)


def _process_in_worker(path: Path) -> VideoOutcome:
    assert _worker is not None
    return _worker.process(path)


def run(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: Config | None = None,
    *,
    progress: bool = True,
) -> RunReport:
    """Process every video under `inputs` into the feature store at `out`.

    Finished videos (same content, same analysis config and models) are skipped, so a killed
    run started again resumes. Bad files are recorded with status 'error' and a one-line
    reason; the run goes on with the rest.
    """
    cfg = config or Config()
    out = Path(out)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, missing = discover(inputs, cfg.run.extensions)
    report = RunReport(out, list(missing))
    for m in missing:
        log.error("%s: %s", m.path, m.error)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    processor, manifest = _build_processor(cfg, out)
    manifest.write(out)

    bar = tqdm(total=len(files), desc="videos", unit="video", disable=not progress or None, dynamic_ncols=True)

    def record(outcome: VideoOutcome) -> None:
        report.outcomes.append(outcome)
        if outcome.status == "error":
            log.error("%s: %s", outcome.path, outcome.error)
        elif outcome.status == "skipped":
            log.info("%s: already done, skipped", outcome.path)
        bar.update(1)
        bar.set_postfix(
            clips=sum(o.n_clips_kept for o in report.outcomes),
            faces=sum(o.n_faces for o in report.outcomes),
            errors=len(report.failed),
            refresh=False,
        )

    try:
        if cfg.run.workers <= 1 or len(files) <= 1:
            for path in files:
                vbar = tqdm(total=None, desc=path.name[:30], unit="s", leave=False, disable=not progress or None,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s video [{elapsed}]")

                def tick(t: float, total: float, vbar=vbar) -> None:
                    if vbar.total is None and total:
                        vbar.total = total
                    vbar.update(max(0.0, t - vbar.n))  # tqdm itself limits redraws

                try:
                    record(processor.process(path, progress=tick))
                finally:
                    vbar.close()
        else:
            context = multiprocessing.get_context("spawn")  # onnxruntime threads do not survive fork
            with ProcessPoolExecutor(cfg.run.workers, mp_context=context, initializer=_init_worker, initargs=(cfg, out)) as pool:
                futures = [pool.submit(_process_in_worker, path) for path in files]
                for future in as_completed(futures):
                    record(future.result())
    finally:
        bar.close()
    report.outcomes.sort(key=lambda o: o.path)
    return report
