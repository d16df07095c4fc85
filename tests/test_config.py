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
    (tmp_path / "c.yaml").write_text("sampling:\n  fps: 2.5\nfaces:\n  top_k: 16\nrun:\n  extensions: [.mp4]\n")
    (tmp_path / "c.toml").write_text('[sampling]\nfps = 2.5\n[faces]\ntop_k = 16\n[run]\nextensions = [".mp4"]\n')
    a, b = Config.load(tmp_path / "c.yaml"), Config.load(tmp_path / "c.toml")
    assert a == b and a.sampling.fps == 2.5 and a.faces.top_k == 16 and a.run.extensions == (".mp4",)


def test_analysis_part_excludes_how_it_runs():
    a, b = Config(), Config()
    b.run.workers, b.run.device = 4, "cuda"
    assert a.analysis_dict() == b.analysis_dict()
    b.sampling.fps = 8
    assert a.analysis_dict() != b.analysis_dict()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nope]\nx = 1\n", "unknown config section [nope]"),
        ("[faces]\nsample_rate = 1\n", "unknown config key faces.sample_rate"),
        ("[faces]\ntop_k = \"many\"\n", "faces.top_k must be an integer, not 'many'"),
        ("[clips]\nrequire_major_character = 1\n", "clips.require_major_character must be true or false"),
        ("[faces\n", "cannot parse config file"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.load(tmp_path / "c.toml")


def test_set_parses_values_like_toml_and_checks_types():
    cfg = Config()
    cfg.set("sampling.fps", 2)  # an integer where a float is wanted is fine
    assert cfg.sampling.fps == 2.0 and isinstance(cfg.sampling.fps, float)
    cfg.set("pipeline.stages", "faces")
    assert cfg.pipeline.stages == ("faces",)
    with pytest.raises(ConfigError, match="--set wants section.key=value"):
        cfg.set("faces", 1)
    with pytest.raises(ConfigError, match="unknown config section \\[nope\\]"):
        cfg.set("nope.x", 1)


def test_config_survives_pickling_for_worker_processes():
    import pickle

    cfg = Config()
    cfg.set("faces.top_k", 7)
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.faces.top_k == 7


def test_config_command_prints_a_file_that_loads_back(tmp_path):
    from click.testing import CliRunner

    from vidpipe.cli import main

    r = CliRunner().invoke(main, ["config", "--set", "faces.top_k=8", "--set", "clips.require_major_character=false"])
    assert r.exit_code == 0, r.output
    (tmp_path / "c.toml").write_text(r.output)
    cfg = Config.load(tmp_path / "c.toml")
    assert cfg.faces.top_k == 8 and cfg.clips.require_major_character is False and cfg.run.weights_dir is None
    assert cfg == Config.from_dict(cfg.to_dict())
    bad = CliRunner().invoke(main, ["config", "--set", "faces.top_k=lots"])
    assert bad.exit_code == 2 and "faces.top_k must be an integer" in bad.output
