"""OUTPUT/stage.json: which configuration writes an output folder and which phases it finished, so
that running the same command again skips what is done and resumes what is not.

Each phase keeps its own output as it goes: evaluation and sampling are run folders (one record
per trajectory, resumed by the run store), synthesis appends every engineered trajectory to
`engineered.jsonl`, training writes TRL checkpoints under `OUTPUT/trainer` (`training.save_steps`).
This file adds what those cannot say: that training finished and `OUTPUT/model` holds its result
(with the training summary for the report), and that the folder belongs to this configuration. A
rerun with a different configuration stops with one line instead of mixing two runs in one folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analyzers.results_file import write_atomic
from .config import ConfigError, StageConfig
from .progress import say

STATE = "stage.json"


@dataclass
class StageState:
    """The finished phases of `config`'s output folder; `finished[phase]` is what the phase
    recorded (e.g. the training summary)."""

    path: Path
    config: dict[str, Any]
    finished: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, config: StageConfig) -> StageState:
        """The folder's state, new or stored; ConfigError if another configuration wrote it."""
        path = config.output_dir / STATE
        current = _identity(config)
        if not path.is_file():
            return cls(path, current)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            stored_config, finished = stored["config"], dict(stored["finished"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}): remove it to start the stage over") from None
        if changed := _changed(stored_config, current):
            raise ConfigError(
                f"{config.output_dir} holds a run of another configuration "
                f"({', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'}): "
                "give a new --output-dir, or remove the folder to start over"
            )
        return cls(path, current, finished)

    def done(self, phase: str) -> bool:
        return phase in self.finished

    def finish(self, phase: str, result: Any = True) -> None:
        """Record `phase` as finished (written at once, atomically)."""
        self.finished[phase] = result
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"config": self.config, "finished": self.finished}, indent=2, default=str)
        write_atomic(self.path, text + "\n")


def _identity(config: StageConfig) -> dict[str, Any]:
    """What must not change between a run and its resumption: everything but where the YAML was
    and where the cells run."""
    data = json.loads(json.dumps(config.to_dict(), default=str))
    data.pop("source", None)
    data.pop("sandbox", None)
    return data


def _changed(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ ("training.max_steps")."""
    names = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += _changed(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(f"{prefix}{key}")
    return names


# --- the training phase ------------------------------------------------------------------------------

TRAINING = "training"
MODEL_DIR = "model"
TRAINER_DIR = "trainer"  # TRL's output_dir: its checkpoints


def finished_training(config: StageConfig, state: StageState) -> tuple[str, dict[str, Any]] | None:
    """(OUTPUT/model, the training summary) when an earlier run of this command finished training."""
    path = config.output_dir / MODEL_DIR
    if not state.done(TRAINING) or not (path / "config.json").is_file():
        return None
    say(f"training: finished in an earlier run, loading {path}")
    return str(path), state.finished[TRAINING]


def resume_checkpoint(config: StageConfig) -> str | None:
    """The newest TRL checkpoint of an interrupted training, to continue from (None: start)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = config.output_dir / TRAINER_DIR
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        return None
    try:
        steps = json.loads((Path(last) / "trainer_state.json").read_text(encoding="utf-8"))
        where = f" (step {steps['global_step']} of {steps['max_steps']})"
    except (OSError, ValueError, KeyError):
        where = ""
    say(f"training: resuming from {last}{where}")
    return last


def training_done(
    config: StageConfig, state: StageState, model_path: str | None, summary: dict[str, Any]
) -> None:
    """Record that training finished once its model is saved, and drop the checkpoints (the model
    is the result; they hold optimizer state several times its size). Without a saved model
    (`training.save_model: false`) nothing is recorded and a rerun trains again from the newest
    checkpoint."""
    import shutil

    if model_path is None:
        return
    state.finish(TRAINING, summary)
    for checkpoint in (config.output_dir / TRAINER_DIR).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
