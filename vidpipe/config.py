"""One typed configuration; the papers' numbers are the defaults.

A config file (TOML or YAML) mirrors these sections; command-line flags override it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or value that cannot be used."""


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


@dataclass
class FacesConfig:
    backend: str = "auto"  # "auto" | "scrfd" (SCRFD + ArcFace-style ONNX) | "dlib"
    detector_weights: str = "scrfd_500m"  # registry name
    embedder_weights: str = "mobilefacenet_128d"
    sample_fps: float = 4.0  # frames per second looked at inside a kept clip
    max_side: int = 640  # frames are analysed at most this long side (never enlarged)
    det_threshold: float = 0.5
    min_face_px: int = 20  # faces smaller than this (short side, source pixels) are skipped
    top_k: int = 32  # iQIYI-VID §5.1: keep the top 32 faces by quality
    batch_size: int = 32  # faces per embedding batch (bigger on GPU)


@dataclass
class RunConfig:
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    workers: int = 1  # videos processed in parallel
    weights_dir: str | None = None
    extensions: tuple[str, ...] = (
        ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
    )


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def analysis_dict(self) -> dict[str, Any]:
        """The part of the config that changes the tables (used to decide what to redo)."""
        d = self.to_dict()
        d.pop("run")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        cfg = cls()
        for section, values in (data or {}).items():
            if not hasattr(cfg, section) or not dataclasses.is_dataclass(getattr(cfg, section)):
                raise ConfigError(f"unknown config section [{section}]")
            if not isinstance(values, dict):
                raise ConfigError(f"config section [{section}] must be a table")
            sub = getattr(cfg, section)
            known = {f.name: f for f in dataclasses.fields(sub)}
            for key, value in values.items():
                if key not in known:
                    raise ConfigError(f"unknown config key {section}.{key}")
                if isinstance(getattr(sub, key), tuple) and isinstance(value, list):
                    value = tuple(value)
                setattr(sub, key, value)
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
        return cls.from_dict(data)
