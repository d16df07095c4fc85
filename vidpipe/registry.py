"""Backends by task and name.

A backend module registers a factory for a task (``face_detector``, ``head_detector``, …)
under a name; config and CLI choose by name, and "auto" takes the first registered
candidate (by its ``auto`` rank) whose weights are found, saying once which and why.
Nothing here knows a backend by name: modules in ``vidpipe.backends`` and the
``vidpipe.backends`` entry-point group (third-party plug-ins) register themselves when the
registry is first asked. Backend modules keep heavy imports (torch, dlib, onnxruntime)
inside their factories so that listing choices stays fast.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vidpipe.util import load_plugins
from vidpipe.weights import WeightsNotFound, resolve

log = logging.getLogger("vidpipe")

# Every task, with what its backends do (shown by `vidpipe backends`).
TASKS: dict[str, str] = {
    "face_detector": "faces in a frame, with 5-point landmarks",
    "face_embedder": "aligned face -> identity embedding (raw; its norm is quality)",
    "head_detector": "heads in a frame (the major-character rule counts them)",
    "person_detector": "whole people in a frame (bodies)",
    "head_embedder": "head crop -> appearance embedding",
    "reid_embedder": "body crop -> person re-identification embedding",
    "speaker_embedder": "16 kHz speech -> speaker embedding",
    "vad": "16 kHz audio -> speech regions",
    "active_speaker": "face track + audio -> is this face speaking",
}

AUTO = "auto"


class BackendError(Exception):
    """A backend that is unknown or cannot be built (one-line message)."""


class NoBackendAvailable(BackendError):
    """"auto" found no backend of a task whose weights are present."""


@dataclass(frozen=True)
class BackendSpec:
    task: str
    name: str
    factory: Callable[["BackendContext"], Any]
    auto: int | None  # rank in "auto"'s preference order (lower first); None: only by name
    summary: str


_SPECS: dict[str, dict[str, BackendSpec]] = {task: {} for task in TASKS}
_loaded = False


def register(task: str, name: str, *, auto: int | None = None, summary: str = ""):
    """Decorator for a factory ``(ctx: BackendContext) -> backend``."""
    if task not in _SPECS:
        raise ValueError(f"unknown backend task {task!r}; tasks: {', '.join(TASKS)}")
    if name == AUTO:
        raise ValueError("'auto' is reserved")

    def deco(factory: Callable[["BackendContext"], Any]) -> Callable[["BackendContext"], Any]:
        taken = _SPECS[task].get(name)
        if taken is not None and qualified_name(taken.factory) != qualified_name(factory):
            raise ValueError(f"{task} backend {name!r} is registered twice: by {qualified_name(taken.factory)} "
                             f"and by {qualified_name(factory)}")
        _SPECS[task][name] = BackendSpec(task, name, factory, auto, summary or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def qualified_name(thing: Any) -> str:
    """Where a function or class is defined: the same one imported again is no duplicate."""
    return f"{thing.__module__}.{thing.__qualname__}"


def _load_plugins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        load_plugins("vidpipe.backends", "vidpipe.backends", skip=("base",))


def specs(task: str) -> dict[str, BackendSpec]:
    _load_plugins()
    if task not in _SPECS:
        raise BackendError(f"unknown backend task {task!r}; tasks: {', '.join(TASKS)}")
    return dict(_SPECS[task])


def choices(task: str) -> list[str]:
    """Names a user may give for `task`: "auto" first when any backend takes part in it."""
    s = specs(task)
    auto = [AUTO] if any(spec.auto is not None for spec in s.values()) else []
    return auto + sorted(s)


@dataclass
class BackendContext:
    """What a factory gets: where to run, where weights are, the options of the config
    section that configures this task, and the provider (to build backends it needs)."""

    device: str
    weights_dir: str | os.PathLike[str] | None
    options: Any
    provider: "Backends"
    threads: int = 0  # 0: the library's default

    def weights(self, name: str) -> Path:
        """Path of weights `name`, verified; WeightsNotFound lets "auto" try the next one."""
        return resolve(name, self.weights_dir)


_said: set[str] = set()


def log_once(level: int, msg: str, *args: object) -> None:
    text = msg % args if args else msg
    if text not in _said:
        _said.add(text)
        log.log(level, text)


class Backends:
    """Builds each backend once (per worker process), on first use.

    `options_for(task)` returns (name asked for, options section) from the config, so a
    backend needed by another (a head detector built on the face detector) is the same
    instance the faces stage uses, with the same settings.
    """

    def __init__(self, options_for: Callable[[str], tuple[str, Any]], device: str = "auto",
                 weights_dir: str | os.PathLike[str] | None = None, threads: int = 0) -> None:
        self._options_for = options_for
        self.device, self.weights_dir, self.threads = device, weights_dir, threads
        self._built: dict[tuple[str, str], Any] = {}
        self.chosen: dict[str, Any] = {}  # task -> backend, for the manifest

    def get(self, task: str, name: str | None = None) -> Any:
        asked, options = self._options_for(task)
        name = name or asked or AUTO
        key = (task, name)
        if key not in self._built:
            self._built[key] = self._build(task, name, options)
        backend = self._built[key]
        self.chosen.setdefault(task, backend)
        return backend

    def _build(self, task: str, name: str, options: Any) -> Any:
        available = specs(task)
        ctx = BackendContext(self.device, self.weights_dir, options, self, self.threads)
        if name != AUTO:
            if name not in available:
                raise BackendError(f"unknown {task} {name!r}; choose from {', '.join(choices(task))}")
            backend = available[name].factory(ctx)
            backend.name = backend.name or name
            return backend
        ranked = sorted((s for s in available.values() if s.auto is not None), key=lambda s: s.auto)
        if not ranked:
            raise BackendError(f"no {task} takes part in 'auto'; choose one of {', '.join(available)}")
        reasons = []
        for spec in ranked:
            try:
                backend = spec.factory(ctx)
            except WeightsNotFound as e:  # a corrupt file raises: it is not a reason to switch
                reasons.append(f"{spec.name} skipped: {e}")
                continue
            backend.name = backend.name or spec.name
            because = f", because {'; '.join(reasons)}" if reasons else ""
            log_once(logging.INFO, "%s: %s%s", task.replace("_", " "), backend.describe(), because)
            return backend
        raise NoBackendAvailable(f"no {task} can be built: {'; '.join(reasons)}")
