"""The config: papers' defaults, TOML and YAML files, clear errors."""

from __future__ import annotations

import pytest

from vidpipe.config import Config, ConfigError


def test_defaults_are_the_papers_numbers():
    cfg = Config()
    assert (cfg.clips.min_duration_s, cfg.clips.max_duration_s) == (1.0, 30.0)
    assert cfg.faces.top_k == 32
    assert cfg.shots.detector == "adaptive"


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text("faces:\n  sample_fps: 2.5\nrun:\n  extensions: [.mp4]\n")
    (tmp_path / "c.toml").write_text('[faces]\nsample_fps = 2.5\n[run]\nextensions = [".mp4"]\n')
    a, b = Config.load(tmp_path / "c.yaml"), Config.load(tmp_path / "c.toml")
    assert a == b and a.faces.sample_fps == 2.5 and a.run.extensions == (".mp4",)


def test_analysis_part_excludes_how_it_runs():
    a, b = Config(), Config()
    b.run.workers, b.run.device = 4, "cuda"
    assert a.analysis_dict() == b.analysis_dict()
    b.faces.sample_fps = 8
    assert a.analysis_dict() != b.analysis_dict()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nope]\nx = 1\n", "unknown config section [nope]"),
        ("[faces]\nsample_rate = 1\n", "unknown config key faces.sample_rate"),
        ("[faces\n", "cannot parse config file"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.load(tmp_path / "c.toml")
