"""`vidpipe backends`: the stages, and the backends each task can use."""

from __future__ import annotations

import click


@click.command("backends")
def backends_cmd() -> None:
    """List the stages (in their default order) and every backend by task.

    \b
    Choose a backend with the stage's option, e.g.
      vidpipe run videos/ --out features/ --set faces.detector=dlib
    "auto" takes the first backend (in the order shown) whose weights are found.
    """
    from vidpipe.pipeline.stage import stage_classes
    from vidpipe.registry import TASKS, specs

    click.echo("stages (section, tables, backends):")
    for name, cls in stage_classes().items():
        uses = ", ".join(f"{name}.{key}={task}" for key, task in cls.backends.items()) or "-"
        state = "" if cls.default else "  (off by default)"
        click.echo(f"  {name:<16} tables: {', '.join(cls.tables) or '-':<12} backends: {uses}{state}")
    for task, what in TASKS.items():
        available = specs(task)
        if not available:
            continue
        click.echo(f"\n{task}: {what}")
        ranked = sorted(available.values(), key=lambda s: (s.auto is None, s.auto or 0, s.name))
        for spec in ranked:
            auto = f"auto #{spec.auto + 1}" if spec.auto is not None else "by name"
            click.echo(f"  {spec.name:<16} {auto:<8} {spec.summary}")
