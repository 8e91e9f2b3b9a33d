"""Stage configurations: one YAML file per training run, read into typed dataclasses.

    stage: sft                      # a registered stage: synthesize, sft, rft, rl (trainers/registry.py)
    model: HuggingFaceTB/SmolLM2-135M-Instruct    # or {path: DIR, gguf_file: NAME.gguf}
    output_dir: runs/train/sft
    seed: 0
    training: {learning_rate: 1.0e-5, num_train_epochs: 17, batch_size: 96}   # TrainingConfig
    eval: {tasks: [aime24], limit: 30}                                     # EvalConfig
    sft: {records: [runs/he/records.jsonl]}     # the stage's own section, typed by its registry entry
    sandbox: {name: remote, url: "http://host:8080"}   # SandboxSpec: where model code runs (default: local)

Every key is checked: a misspelt one is an error, never silently ignored. Defaults are the paper's
recipe (docs: ../shared/docs/cort-protocol.md, "Training stages"); CPU runs override them in the
YAML. Strings may hold `{config_dir}`, the folder of the YAML file, so a config can name files that
sit next to it, and `{smollm2_dir}`, the folder of the embedded SmolLM2 GGUF (offline-models.md);
other relative paths are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from ..harness.sandbox import Sandbox, SandboxConfig


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown keys, wrong types, missing files."""


@dataclass
class ModelSpec:
    """Where the starting model comes from.

    Attributes:
        path: a local folder or a hub id (with HF_HUB_OFFLINE=1, only what is cached).
        gguf_file: a GGUF file inside `path`, dequantized by transformers (needs `gguf`).
        tokenizer: a different tokenizer folder or id (default: `path`).
        dtype: torch dtype to load in ("float32" on CPU; "bfloat16" on GPUs; "auto": the checkpoint's).
    """

    path: str
    gguf_file: str | None = None
    tokenizer: str | None = None
    dtype: str = "float32"

    @property
    def name(self) -> str:
        """How runs and reports name the model."""
        return f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer) with transformers; a GGUF model is made saveable as a normal checkpoint."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer or self.path, **extra)
            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, **extra)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot load model {self.name!r}: {str(exc).splitlines()[0]}") from None
        quantizer = getattr(model, "hf_quantizer", None)
        if self.gguf_file and quantizer is not None:  # dequantized on load: train and save it as a
            quantizer.remove_quantization_config(model)  # plain model (offline-models.md)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer


@dataclass
class RolloutSettings:
    """Problems and the protocol to sample them under, as `cortbench run` takes them. Fields left
    None take the tasks' protocol (temperature 0.6, top_p 0.95, 15 tool calls, 32,768 tokens, 30 s).

    Attributes:
        tasks: task names, groups, or .jsonl / task .yaml files (as `cortbench run --tasks`).
        data_dir: folder holding the benchmark files (default: $CORTBENCH_DATA_DIR, else the hub).
        limit: first N problems of each task; offset: skip the first N before that (held-out splits).
        n: samples per problem (default: each task's k).
        hint: hint policy name (`none`, `prompt-hint`, `code`, ...).
        concurrency: trajectories at once (hf generates one at a time; tools overlap).
        device: where the hf backend generates ("cpu", "cuda"; default: cuda when available).
    """

    tasks: list[str] = field(default_factory=list)
    data_dir: str | None = None
    limit: int | None = None
    offset: int = 0
    n: int | None = None
    hint: str = "none"
    temperature: float | None = None
    top_p: float | None = None
    max_tool_calls: int | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    concurrency: int = 8
    device: str | None = None


@dataclass
class EvalConfig(RolloutSettings):
    """The before/after evaluation every stage ends with (held-out problems, run folders under
    OUTPUT/eval/). `enabled: false` skips it; `before: false` evaluates only the trained model."""

    enabled: bool = True
    before: bool = True


@dataclass
class TrainingConfig:
    """Optimisation, defaulting to the paper's SFT/RFT recipe (lr 1e-5, 17 epochs, batch 96).

    Attributes:
        batch_size: the global batch; gradient accumulation is derived from it, the per-device batch
            and the number of processes (accelerate/DeepSpeed), so the recipe holds at any scale.
        per_device_batch_size: sequences per forward pass and device.
        max_steps: stop after this many optimizer steps (-1: run the epochs).
        max_length: longer rows are truncated from the right (None: no truncation).
        bf16: None picks bf16 on CUDA and float32 on CPU.
        lora: LoRA settings for peft (e.g. {r: 16, lora_alpha: 32, target_modules: all-linear});
            None trains every weight.
        trl_args: any other TRL config field (SFTConfig, GRPOConfig), passed as given.
        save_steps: a TRL checkpoint under OUTPUT/trainer every this many optimizer steps (below 1:
            a fraction of all steps; 0: none), the newest one kept; a rerun of the same command
            continues from it. Removed once OUTPUT/model is written.
        save_model: write the trained model to OUTPUT/model (the evaluation loads it from there).
    """

    learning_rate: float = 1e-5
    num_train_epochs: float = 17.0
    batch_size: int = 96
    per_device_batch_size: int = 1
    max_steps: int = -1
    max_length: int | None = None
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0  # a number in [0, 1) is a fraction of all steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None
    trl_args: dict[str, Any] = field(default_factory=dict)
    save_steps: float = 0.1
    save_model: bool = True


@dataclass
class SandboxSpec:
    """The `sandbox:` key: the registered sandbox every phase runs the model's code in (sampling,
    evaluation, synthesis, RL rollouts), with its settings, as `cortbench run --sandbox NAME
    --sandbox-arg KEY=VALUE` takes them. In YAML a name (`sandbox: remote`) or a mapping of `name`
    and the settings (`sandbox: {name: remote, url: "http://host:8080"}`); the phase's own limits
    (cell timeout) come with it. Where cells run is not part of a stage's identity: a resumed
    stage may use another sandbox."""

    name: str = "local"
    args: dict[str, Any] = field(default_factory=dict)

    def make(self, config: SandboxConfig) -> Sandbox:
        """The sandbox, not started (`config`: the phase's SandboxConfig)."""
        from ..harness.sandbox import SandboxError, make_sandbox

        try:
            return make_sandbox(self.name, config, self.args)
        except SandboxError as exc:
            raise ConfigError(f"sandbox: {exc}") from None


def sandbox_spec(value: Any, where: str) -> SandboxSpec:
    """The `sandbox:` key read and checked (the name registered, the settings taken): ConfigError."""
    from ..harness.sandbox import SandboxConfig

    if value is None or isinstance(value, str):
        spec = SandboxSpec(value or "local")
    elif isinstance(value, dict) and isinstance(value.get("name", "local"), str):
        args = {k: v for k, v in value.items() if k != "name"}
        if bad := [k for k in args if not (isinstance(k, str) and k.isidentifier())]:
            raise ConfigError(f"{where}: settings are keyword names, not {bad}")
        spec = SandboxSpec(value.get("name", "local"), args)
    else:
        raise ConfigError(f"{where}: a sandbox name, or a mapping of 'name' and its settings, not {value!r}")
    try:  # a bad name or setting fails now, before the model loads
        spec.make(SandboxConfig(warm_kernels=0))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('sandbox: ')}") from None
    return spec


@dataclass
class StageConfig:
    """One training run: the stage, its model, where it writes, how it trains and evaluates, and
    `section`, the stage's own typed settings (the YAML key named after the stage)."""

    stage: str
    model: ModelSpec
    output_dir: Path
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    section: Any = None
    source: Path | None = None  # the YAML file it came from
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports and run.json (secret-looking sandbox settings hidden)."""
        from ..harness.registry import shown_options

        data = dataclasses.asdict(self)
        data["output_dir"], data["source"] = str(self.output_dir), self.source and str(self.source)
        data["sandbox"]["args"] = shown_options(self.sandbox.args)
        return data


_COMMON = {"stage", "model", "output_dir", "seed", "training", "eval", "sandbox"}


def load_config(path: str | Path, **overrides: Any) -> StageConfig:
    """Read and check a stage YAML. `overrides` replace top-level keys (e.g. output_dir from the CLI)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a stage config is a mapping with at least 'stage' and 'model'")
    data = _expand(data | {k: v for k, v in overrides.items() if v is not None}, str(path.resolve().parent))
    return config_from_dict(data, source=path)


def config_from_dict(data: dict[str, Any], *, source: Path | None = None) -> StageConfig:
    """A StageConfig from plain data (what `load_config` reads), every key checked."""
    from .registry import get_stage

    where = str(source) if source else "config"
    stage_name = data.get("stage")
    if not isinstance(stage_name, str):
        raise ConfigError(f"{where}: 'stage' is required (one of the registered stages)")
    stage = get_stage(stage_name)
    allowed = _COMMON | ({stage.name} if stage.section else set())
    if unknown := sorted(set(data) - allowed):
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    for required in ("model", "output_dir"):
        if data.get(required) in (None, ""):
            raise ConfigError(f"{where}: '{required}' is required")
    model = data["model"]
    model = {"path": model} if isinstance(model, str) else model
    return StageConfig(
        stage=stage.name,
        model=build(ModelSpec, model, f"{where}: model"),
        output_dir=Path(data["output_dir"]),
        seed=build(int, data.get("seed", 0), f"{where}: seed"),
        training=build(TrainingConfig, data.get("training") or {}, f"{where}: training"),
        eval=build(EvalConfig, data.get("eval") or {}, f"{where}: eval"),
        section=build(stage.section, data.get(stage.name) or {}, f"{where}: {stage.name}")
        if stage.section
        else None,
        source=source,
        sandbox=sandbox_spec(data.get("sandbox"), f"{where}: sandbox"),
    )


def build(kind: Any, value: Any, where: str) -> Any:
    """`value` (plain YAML data) as `kind`: dataclasses with every key checked, lists, dicts,
    optionals; numbers given as strings ("1e-5", which YAML reads as text) are converted."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for i, option in enumerate(options):
            try:
                return build(option, value, where)
            except ConfigError:
                if i == len(options) - 1:
                    raise
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
        if unknown := sorted(set(value) - set(fields)):
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(fields)}")
        missing = [
            n for n, f in fields.items()
            if n not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]  # fmt: skip
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        return kind(**{k: build(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [build(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is Path:
        return Path(build(str, value, where))
    if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind in (int, float, str, bool) and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def smollm2_dir() -> str:
    """The folder of the embedded SmolLM2-135M-Instruct GGUF (the harness's llama.cpp default)."""
    import os

    from ..harness.backends import BackendError
    from ..harness.backends.llamacpp import embedded_model_path

    try:
        return os.path.dirname(embedded_model_path())
    except BackendError as exc:
        raise ConfigError(f"{{smollm2_dir}}: {exc}") from None


def _expand(value: Any, config_dir: str) -> Any:
    if isinstance(value, str):
        if "{smollm2_dir}" in value:
            value = value.replace("{smollm2_dir}", smollm2_dir())
        return value.replace("{config_dir}", config_dir)
    if isinstance(value, list):
        return [_expand(v, config_dir) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, config_dir) for k, v in value.items()}
    return value
