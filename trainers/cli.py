"""`cortbench train <stage> --config stage.yaml`: CoRT's training stages on TRL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(help="Train with the interpreter in the loop: hint-engineering data, SFT, RFT, RL.")


def register(app: typer.Typer) -> None:
    """Add `cortbench train ...` to the `cortbench` app (entry point `cortbench.commands`)."""
    app.add_typer(train_app, name="train")


ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="Stage YAML (docs/training.md).")]
OutputDir = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Overrides the config's output_dir.")
]


def run_stage(stage: str | None, config: Path, output_dir: Path | None = None) -> None:
    """Load and check `config` for `stage` (None: the stage the config names), run it, print where
    the report went. Any configuration or run failure is one line on stderr and exit status 1."""
    import os

    import yaml

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a mistaken hub id fails at once instead of hanging
    from cortbench.harness.backends import BackendError
    from cortbench.harness.console import console, fail
    from cortbench.harness.sandbox import SandboxError
    from cortbench.harness.store import RunStoreError

    from .config import ConfigError, load_config
    from .evaluation import REPORT_MD
    from .registry import get_stage, stage_names

    try:
        if not config.is_file():
            raise ConfigError(f"config file {config} does not exist")
        given = yaml.safe_load(config.read_text(encoding="utf-8"))
        if stage is None:
            stage = given.get("stage") if isinstance(given, dict) else None
            if not isinstance(stage, str):
                raise ConfigError(f"{config}: 'stage' is required (one of: {', '.join(stage_names())})")
        if isinstance(given, dict) and given.get("stage", stage) != stage:
            raise ConfigError(f"{config} is a {given['stage']!r} config, not {stage!r}")
        loaded = load_config(config, stage=stage, output_dir=str(output_dir) if output_dir else None)
        report = get_stage(stage).run(loaded)
    except (ConfigError, BackendError, RunStoreError, SandboxError) as exc:
        fail(str(exc))
    except ModuleNotFoundError as exc:  # torch, transformers, trl: the `train` extra
        fail(f"{exc.msg}: training needs the train extra (pip install 'cortbench[train]')")
    except yaml.YAMLError as exc:
        fail(f"{config}: not valid YAML ({' '.join(str(exc).split())})")
    except KeyboardInterrupt:
        fail("interrupted")
    console.print(f"report: {Path(report.output_dir) / REPORT_MD}", highlight=False)


@train_app.command("synthesize")
def synthesize_command(config: ConfigPath, output_dir: OutputDir = None) -> None:
    """Hint-Engineering data: sample, insert hints where a behaviour shows, continue; then SFT."""
    run_stage("synthesize", config, output_dir)


@train_app.command("sft")
def sft_command(config: ConfigPath, output_dir: OutputDir = None) -> None:
    """Fine-tune on trajectories (interpreter outputs masked out of the loss), evaluate before/after."""
    run_stage("sft", config, output_dir)


@train_app.command("rft")
def rft_command(config: ConfigPath, output_dir: OutputDir = None) -> None:
    """Rejection-sampling fine-tuning: sample k, keep correct and clean trajectories, fine-tune."""
    run_stage("rft", config, output_dir)


@train_app.command("rl")
def rl_command(config: ConfigPath, output_dir: OutputDir = None) -> None:
    """GRPO with the interpreter in the loop (12 tool calls, outputs masked), evaluate before/after."""
    run_stage("rl", config, output_dir)


@train_app.command("run")
def run_command(config: ConfigPath, output_dir: OutputDir = None) -> None:
    """Run the stage the config names (`stage:`): a built-in one or a plug-in's (docs/extending.md)."""
    run_stage(None, config, output_dir)
