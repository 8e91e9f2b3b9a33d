"""Training stages by name: what `cortbench train <stage> --config stage.yaml` runs.

A stage is a function from its `StageConfig` to a `StageReport`, registered with the dataclass
that types its own YAML section (the key named after the stage):

    @dataclass
    class DistillSection:
        records: list[str]

    @register_stage("distill", section=DistillSection, help="SFT on a teacher's trajectories.")
    def distill(config: StageConfig) -> StageReport:
        ...  # config.section is a DistillSection

Built-in stages register on first use (their modules import torch and TRL only when they run). A
package adds a stage through the `cortbench.stages` entry-point group (docs/extending.md) and runs it
with `cortbench train run --config stage.yaml`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..harness.registry import Registry
from .config import ConfigError

if TYPE_CHECKING:
    from .config import StageConfig
    from .evaluation import StageReport

BUILTIN_MODULES = ("synthesis", "sft", "rft", "rl")


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageConfig], StageReport]
    section: type | None  # dataclass of the stage's YAML section; None: the stage has none
    help: str = ""


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")


STAGES: Registry[Stage] = Registry("stage", ConfigError, _load_builtins)  # cortbench.stages


def register_stage(name: str, *, section: type | None = None, help: str = "") -> Callable[[Any], Any]:
    """Register `run(config) -> StageReport` as stage `name`, its YAML section typed by `section`."""

    def decorate(run: Callable[[StageConfig], StageReport]) -> Callable[[StageConfig], StageReport]:
        stage = Stage(name, run, section, help or (run.__doc__ or "").strip().split("\n")[0])
        STAGES.register(name)(lambda: stage)
        return run

    return decorate


def stage_names() -> list[str]:
    return STAGES.names()


def get_stage(name: str) -> Stage:
    """The registered stage, or a ConfigError naming the known ones."""
    stage = STAGES.create(name)
    if not isinstance(stage, Stage):  # a plug-in's entry point that names an undecorated function
        raise ConfigError(f"stage {name!r} is not registered with @register_stage (docs/extending.md)")
    return stage
