"""Training stages by name: what `cortbench train <stage> --config stage.yaml` runs.

A stage is a function from its `StageConfig` to a `StageReport`, registered with the dataclass
that types its own YAML section (the key named after the stage):

    @dataclass
    class DistillSection:
        records: list[str]

    @register_stage("distill", section=DistillSection, help="SFT on a teacher's trajectories.")
    def distill(config: StageConfig) -> StageReport:
        ...  # config.section is a DistillSection

Built-in stages register on first use (their modules import torch and TRL only when they run).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


_STAGES: dict[str, Stage] = {}


def register_stage(name: str, *, section: type | None = None, help: str = "") -> Callable[[Any], Any]:
    """Register `run(config) -> StageReport` as stage `name`, its YAML section typed by `section`."""

    def decorate(run: Callable[[StageConfig], StageReport]) -> Callable[[StageConfig], StageReport]:
        _STAGES[name] = Stage(name, run, section, help or (run.__doc__ or "").strip().split("\n")[0])
        return run

    return decorate


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def stage_names() -> list[str]:
    _load_builtins()
    return sorted(_STAGES)


def get_stage(name: str) -> Stage:
    """The registered stage, or a ConfigError naming the known ones."""
    if name not in _STAGES:
        _load_builtins()
    if name not in _STAGES:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(sorted(_STAGES))}")
    return _STAGES[name]
