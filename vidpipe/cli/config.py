"""`vidpipe config`: the effective configuration, as a TOML file to start from."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vidpipe.config import ConfigError


def to_toml(sections: dict[str, dict]) -> str:
    """Flat TOML of the config's sections (None values as comments: TOML has no null)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} =  (not set)")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")
        lines.append("")
    return "\n".join(lines)


@click.command("config")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from this TOML or YAML file.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a value (repeatable).")
def config_cmd(config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Print the effective config (defaults, then FILE, then --set) as TOML.

    \b
    Start a config file from it:  vidpipe config > vidpipe.toml
    then use it:                  vidpipe run videos/ --out features/ --config vidpipe.toml
    """
    from vidpipe.cli.run import build_config

    try:
        cfg = build_config(config_file, settings, {})
        click.echo(to_toml(cfg.to_dict()), nl=False)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
