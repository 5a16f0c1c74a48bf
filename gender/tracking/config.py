"""What a tracked run is told about its job: the config made safe to upload (interpolations
resolved where possible, secrets removed), and the run's name and group from the Hydra job."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gender.task import job_info

#: Config keys whose value must never reach W&B (matched on ``_``/``-``/``.``-separated words).
SECRET_KEY = re.compile(
    r"(^|[_\-.])(api_?key|access_?key|private_?key|secret_?key|token|secret|password|passwd|"
    r"credentials?)($|[_\-.])",
    re.IGNORECASE,
)
#: W&B limits run names and groups to 128 characters.
MAX_NAME = 128
#: The config keys that describe a model well enough to find it again (artifact metadata,
#: TensorBoard's hparams); those absent from a config are skipped.
KEY_CONFIG = (
    "seed",
    "data.image_size",
    "data.face",
    "model.name",
    "model.dropout",
    "model.test_time_flip",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.schedule",
    "trainer.epochs",
    "trainer.label_smoothing",
    "trainer.class_weight",
)


def resolved_config(cfg: DictConfig | ListConfig) -> Any:
    """The config as plain containers with interpolations resolved where possible.

    ``${hydra:...}`` only resolves inside a running Hydra job and ``${oc.env:X}`` fails
    when X is unset: such a value is kept as its raw ``${...}`` text instead of losing
    the whole config.
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - fall back to resolving key by key
        return _lenient(cfg)


def _lenient(node: Any) -> Any:
    if isinstance(node, DictConfig):
        raw = OmegaConf.to_container(node, resolve=False)
        return {str(k): _lenient_child(node, k, raw[k]) for k in node.keys()}
    if isinstance(node, ListConfig):
        raw = OmegaConf.to_container(node, resolve=False)
        return [_lenient_child(node, i, raw[i]) for i in range(len(node))]
    return node


def _lenient_child(parent: DictConfig | ListConfig, key: Any, raw: Any) -> Any:
    try:
        value = parent[key]
    except Exception:  # noqa: BLE001 - unresolvable or missing (???): keep the raw text
        return raw
    return _lenient(value)


def redact_secrets(value: Any) -> Any:
    """Drop every mapping key that names a secret (api_key, token, password, ...)."""
    if isinstance(value, Mapping):
        return {k: redact_secrets(v) for k, v in value.items() if not SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    return value


def secret_values(config: Any, overrides: Iterable[str] = ()) -> set[str]:
    """The values held under secret-looking keys (in the config and the overrides): what must be
    masked in any text a run uploads."""
    found: set[str] = set()

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, secret or bool(SECRET_KEY.search(str(k))))
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v, secret)
        elif secret and node is not None and len(str(node)) >= 4:
            found.add(str(node))

    walk(config, False)
    for override in overrides:
        key, eq, value = override.partition("=")
        if eq and SECRET_KEY.search(key.lstrip("+~")) and len(value) >= 4:
            found.add(value)
    return found


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def flatten(data: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"test": {"accuracy": 0.9}}`` -> ``{"test/accuracy": 0.9}``; values made JSON-safe."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = jsonable(value)
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def key_config(cfg: DictConfig | None) -> dict[str, Any]:
    """``KEY_CONFIG`` values of ``cfg`` (dotted keys), lists as text."""
    if cfg is None:
        return {}
    out = {}
    for key in KEY_CONFIG:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if value is not None:
            out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def logger_options(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.logger`` as a plain dict; {} when the config has no logger group."""
    node = cfg.get("logger") if isinstance(cfg, DictConfig) else None
    out = resolved_config(node) if node is not None else {}
    return out if isinstance(out, dict) else {}


def clip(text: Any) -> str | None:
    """W&B names and groups are at most 128 characters; keep the distinctive tail."""
    if not text:
        return None
    text = str(text)
    return text if len(text) <= MAX_NAME else text[-MAX_NAME:]


@dataclass(frozen=True)
class HydraJob:
    """What the running Hydra job says about itself (all None outside Hydra)."""

    name: str | None = None
    group: str | None = None
    sweep_dir: Path | None = None
    overrides: tuple[str, ...] = ()


def hydra_job() -> HydraJob:
    """Name: the job's overrides as in ``hydra.job.override_dirname`` (secrets masked), else its
    preset choices (``experiment=best``), else ``defaults``; group: in a multirun, the sweep
    folder's date and time (``2026-11-27/12-30-00``), the same for every job of the sweep
    whichever folder the command ran from. Read from the live HydraConfig rather than through
    ``${hydra:...}`` in the YAML, so that ``.hydra/config.yaml`` stays resolvable outside Hydra."""
    try:
        job = job_info()
        if job.hydra is None:
            return HydraJob()
        name = _override_name(job.hydra, job.overrides)
        if not job.multirun or job.sweep_dir is None:
            return HydraJob(name=name, overrides=job.overrides)
        group = "/".join(job.sweep_dir.parts[-2:])
        return HydraJob(name=name, group=group, sweep_dir=job.sweep_dir, overrides=job.overrides)
    except Exception:  # noqa: BLE001 - an unusual Hydra config
        return HydraJob()


def _override_name(hc: Any, overrides: tuple[str, ...]) -> str:
    """``model.dropout=0.2,optimizer.lr=0.003``: the overrides, sorted, minus
    ``hydra.job.config.override_dirname.exclude_keys``; those excluded ones (presets such as
    ``experiment=best``) when nothing else is left; ``defaults`` for a run with no overrides."""
    fmt = hc.job.config.override_dirname
    exclude = {str(k) for k in (fmt.exclude_keys or [])}
    kept, presets = [], []
    for override in overrides:
        key, eq, value = override.partition("=")
        item = f"{key}{fmt.kv_sep}{mask_override(key, value)}" if eq else key
        (presets if key.lstrip("+~") in exclude or key.startswith("hydra") else kept).append(item)
    return str(fmt.item_sep).join(sorted(kept) or sorted(presets)) or "defaults"


def mask_override(key: str, value: str) -> str:
    return "***" if SECRET_KEY.search(key.lstrip("+~")) else value


def command_line_has_secret(argv: Iterable[str]) -> bool:
    """Whether an override on the command line names a secret (``+db.password=...``)."""
    return any(SECRET_KEY.search(arg.partition("=")[0].lstrip("+~")) for arg in argv if "=" in arg)


def drop_blank_wandb_env() -> list[str]:
    """Remove ``WANDB_*`` variables that are exported but blank (common in CI): W&B reads every
    ``WANDB_*`` variable as a setting and rejects a blank one (``WANDB_MODE=``), which would leave
    the run untracked. Blank means unset, here as in the config's ``${oc.env:WANDB_MODE,...}``."""
    blank = [k for k, v in os.environ.items() if k.startswith("WANDB_") and not v.strip()]
    for key in blank:
        del os.environ[key]
    return blank
