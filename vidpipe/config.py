"""One typed configuration; the papers' numbers are the defaults.

Core sections (`run`, `sampling`, `shots`, `clips`, `pipeline`) live here; every stage brings
its own section (a dataclass named by the stage, e.g. `[faces]`), so a new stage adds its
options without editing this file. A config file (TOML or YAML) mirrors the sections;
`--set section.key=value` and the few common flags override it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or value that cannot be used (one-line message)."""


@dataclass
class RunConfig:
    """How to run; never changes the tables, so not part of the config hash."""

    device: str = "auto"  # "auto" | "cpu" | "cuda"
    workers: int = 1  # videos processed in parallel (per machine, with Ray)
    executor: str = "processes"  # how workers run: "processes" (local) | "serial" | "ray"
    address: str | None = None  # Ray cluster to use ("ray://host:10001", "auto"); None: a private one here
    threads: int = 0  # threads per worker for models and decoding; 0: cores / workers
    gpus_per_worker: float = 0.0  # with Ray: share of a GPU each worker asks for (e.g. 0.25); 0: none
    split_s: float = 600.0  # videos longer than 1.5x this are processed in ranges of about this length; 0: never
    decode_ahead: int = 2  # shots decoded ahead of the models, on a thread; 0: on the models' thread
    batch_frames: int = 128  # kept clips are handed to the stages together up to this many sampled frames (x8 on CUDA)
    weights_dir: str | None = None
    extensions: tuple[str, ...] = (
        ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
    )


@dataclass
class SamplingConfig:
    """Which frames of a kept clip every stage looks at."""

    fps: float = 4.0  # frames per second analysed inside a clip
    max_side: int = 640  # frames are analysed at most this long side (never enlarged)


@dataclass
class ShotsConfig:
    detector: str = "adaptive"  # "adaptive" | "content"
    adaptive_threshold: float = 3.0  # PySceneDetect AdaptiveDetector default
    content_threshold: float = 27.0  # PySceneDetect ContentDetector default
    min_scene_len_s: float = 0.5  # PySceneDetect's 15 frames at 30 fps
    analysis_width: int = 256  # PySceneDetect's auto-downscale target


@dataclass
class ClipsConfig:
    min_duration_s: float = 1.0  # iQIYI-VID §3.1
    max_duration_s: float = 30.0
    # iQIYI-VID §3.2: keep only clips with one major character. Off = library tagging
    # (crowds kept, everyone's faces embedded).
    require_major_character: bool = True


@dataclass
class PipelineConfig:
    # Stages run on each kept clip, in this order; empty = every stage that is on by default.
    stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Range:
    """The values a number may take: above `low` (or from it, unless `open`)."""

    low: float
    open: bool = False

    def admits(self, value: float) -> bool:
        return value > self.low if self.open else value >= self.low

    def __str__(self) -> str:
        return f"{'>' if self.open else '>='} {self.low:g}"


# Numbers outside these gave empty results or a ZeroDivisionError deep in a run. Every
# number, of any section, must also be finite.
RANGES: dict[str, Range] = {
    "run.workers": Range(1),
    "run.threads": Range(0),
    "run.gpus_per_worker": Range(0),
    "run.split_s": Range(0),
    "run.decode_ahead": Range(0),
    "run.batch_frames": Range(1),
    "sampling.fps": Range(0, open=True),
    "sampling.max_side": Range(32),  # smaller than any detector's input
    "shots.adaptive_threshold": Range(0, open=True),
    "shots.content_threshold": Range(0, open=True),
    "shots.min_scene_len_s": Range(0),
    "shots.analysis_width": Range(16),
    "clips.min_duration_s": Range(0),
    "clips.max_duration_s": Range(0, open=True),
}


CORE_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "sampling": SamplingConfig,
    "shots": ShotsConfig,
    "clips": ClipsConfig,
    "pipeline": PipelineConfig,
}


def _stage_section(name: str) -> type | None:
    from vidpipe.pipeline.stage import stage_classes  # stages register their own sections

    cls = stage_classes().get(name)
    return cls.config if cls is not None else None


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    """`value` in the type of the field's default (what a TOML/YAML file or --set gave)."""
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, not {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, not {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ConfigError(f"{where} must be a list, not {value!r}")
    if isinstance(default, str) or default is None:
        if value is None or isinstance(value, str):
            return value
        if default is None and isinstance(value, (int, float)):
            return value
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _check_range(where: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    allowed = RANGES.get(where)
    if not math.isfinite(value) or (allowed is not None and not allowed.admits(value)):
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ConfigError(f"{where} must be {kind}{f' {allowed}' if allowed else ''}, not {value!r}")


def parse_value(text: str) -> Any:
    """A --set value as TOML reads it (numbers, true/false, [lists], "strings"); bare words
    are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class Config:
    """Sections by name, as attributes: `cfg.clips.min_duration_s`, `cfg.faces.top_k`."""

    def __init__(self) -> None:
        self._sections: dict[str, Any] = {name: cls() for name, cls in CORE_SECTIONS.items()}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.section(name)

    def __getstate__(self) -> dict[str, Any]:
        return {"_sections": self._sections}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._sections = state["_sections"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def section(self, name: str) -> Any:
        """The section `name`; a stage's section is created with its defaults on first use."""
        if name not in self._sections:
            cls = _stage_section(name)
            if cls is None:
                raise ConfigError(f"unknown config section [{name}]")
            self._sections[name] = cls()
        return self._sections[name]

    def set(self, dotted: str, value: Any) -> None:
        """`cfg.set("faces.top_k", 16)`; strings from the command line are parsed first."""
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"--set wants section.key=value, not {dotted!r}")
        sub = self.section(section)
        known = {f.name for f in dataclasses.fields(sub)}
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}; [{section}] has {', '.join(sorted(known))}")
        value = _coerce(section, key, getattr(sub, key), value)
        _check_range(f"{section}.{key}", value)
        setattr(sub, key, value)

    def validate(self) -> "Config":
        """Every number in its range, and the settings that must agree with each other;
        ConfigError naming the key and what it may be. Returns the config."""
        for name, sub in self._sections.items():
            for f in dataclasses.fields(sub):
                _check_range(f"{name}.{f.name}", getattr(sub, f.name))
        if self.clips.min_duration_s > self.clips.max_duration_s:
            raise ConfigError(f"clips.min_duration_s ({self.clips.min_duration_s:g}) must be at most "
                              f"clips.max_duration_s ({self.clips.max_duration_s:g})")
        return self

    def stage_names(self) -> list[str]:
        """The stages this config runs, in order."""
        from vidpipe.pipeline.stage import default_stages, stage_classes

        names = list(self.pipeline.stages) or default_stages()
        known = stage_classes()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(known)}")
        return names

    def to_dict(self) -> dict[str, Any]:
        """Every section: the core ones, the active stages' and any other set so far."""
        for name in self.stage_names():
            self.section(name)
        return {name: dataclasses.asdict(sub) for name, sub in self._sections.items()}

    def analysis_dict(self) -> dict[str, Any]:
        """The part of the config that changes the tables (decides what to redo): every
        section but `run`, and of the stages' sections only the active ones, without their
        `batch_size` (chosen per device: it changes speed, not rows)."""
        active = set(self.stage_names())
        d = self.to_dict()
        return {k: {key: value for key, value in v.items() if key != "batch_size"} for k, v in d.items()
                if k != "run" and (k in CORE_SECTIONS or k in active)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        cfg = cls()
        for section, values in (data or {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"config section [{section}] must be a table")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            else:
                data = yaml.safe_load(text) or {}
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot parse config file {path}: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold sections ([run], [faces], …)")
        return cls.from_dict(data)

