"""Weights & Biases run lifecycle for one job; tracking never costs a result.

``Tracker.start`` opens one W&B run per job (offline by default, so nothing needs a
network) in ``RUN/wandb/``. When W&B cannot start (no API key, no network, a broken
install) it logs ONE warning line, retries offline and, failing that, returns a no-op
tracker: the training carries on and writes its own files as usual. ``logger=none`` or
``logger.mode=disabled`` never imports wandb and writes no W&B files at all.

What a run holds (see docs/tracking.md for how to read it back):

- config: the full resolved job config (``optimizer.lr``, ``model.dropout``, ...), with
  anything that looks like a secret removed;
- history: one row per epoch from ``WandbMetricsLogger`` with ``epoch/loss``,
  ``epoch/accuracy``, ``epoch/val_loss``, ``epoch/val_accuracy``, ``epoch/learning_rate``
  against ``epoch/epoch``;
- summary: the final metrics (``log_summary``) and ``test/<metric>`` (``log_evaluation``);
- media: ``test/confusion_matrix``, ``test/roc`` and the ``test/predictions`` table;
- artifact: the trained model, type ``model``, named ``model-<run id>``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online", "false": "disabled", "off": "disabled"}
#: Config keys whose value must never reach W&B (matched on ``_``/``-``/``.``-separated words).
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api_?key|access_?key|private_?key|secret_?key|token|secret|password|passwd|"
    r"credentials?)($|[_\-.])",
    re.IGNORECASE,
)
#: W&B limits run names and groups to 128 characters.
_MAX_NAME = 128
_THUMBNAIL = 64
_ROC_POINTS = 1000

#: Why online mode failed earlier in this process; later jobs go straight to offline
#: instead of waiting for the same timeout again (Hydra runs a sweep's jobs in one process).
_online_failure: str | None = None


class Tracker:
    """One W&B run for one job; a no-op object when tracking is off or could not start."""

    def __init__(self, run: Any = None, options: Mapping[str, Any] | None = None) -> None:
        self._run = run
        self._options = dict(options or {})
        self._finished = run is None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, job_type: str = "train") -> Tracker:
        """Open the job's run as ``cfg.logger`` asks; never raises for a W&B problem."""
        lcfg = _logger_cfg(cfg)
        mode = _mode(lcfg)
        if mode == "disabled":
            return cls(None, lcfg)
        try:
            import wandb
        except Exception as exc:  # noqa: BLE001 - a broken install must not cost the run
            log.warning("W&B tracking disabled: cannot import wandb (%s)", _one_line(exc))
            return cls(None, lcfg)

        try:
            return cls._start(wandb, cfg, lcfg, mode, Path(lcfg.get("dir") or run_dir), job_type)
        except Exception as exc:  # noqa: BLE001 - e.g. an unusable logger.dir or init_timeout
            log.warning("W&B tracking disabled for this job: %s; the job continues untracked",
                        _one_line(exc))
            return cls(None, lcfg)

    @classmethod
    def _start(cls, wandb: Any, cfg: DictConfig, lcfg: dict[str, Any], mode: str, wdir: Path,
               job_type: str) -> Tracker:
        name, group, sweep = _hydra_job()
        kwargs: dict[str, Any] = {
            "project": lcfg.get("project") or "gender",
            "entity": lcfg.get("entity") or None,
            "group": _clip(lcfg.get("group") or group),
            "name": _clip(lcfg.get("name") or name),
            "tags": [str(t) for t in (lcfg.get("tags") or [])] or None,
            "notes": lcfg.get("notes") or None,
            "job_type": job_type,
            "dir": str(wdir),
            "config": redact_secrets(resolved_config(cfg)),
            # Hydra's basic launcher runs a sweep's jobs one after another in one process:
            # each job must close the previous run, not resume it ("return_previous").
            "reinit": "finish_previous",
        }
        settings = wandb.Settings(
            silent=True,
            quiet=True,
            show_info=False,
            init_timeout=float(lcfg.get("init_timeout") or 30),
            **_git_settings(),
        )

        run, problem = _open_run(wandb, kwargs, settings, mode)
        if run is None:
            log.warning("W&B tracking disabled for this job: %s; the job continues untracked",
                        problem)
            return cls(None, lcfg)
        if problem:
            log.warning("W&B online tracking unavailable: %s; recording offline in %s "
                        "(upload later with `wandb sync`)", problem, wdir / "wandb")
        _link_into_sweep(run, sweep)
        return cls(run, lcfg)

    @property
    def enabled(self) -> bool:
        """Whether a W&B run is open (False for logger=none, disabled, fallback or finished)."""
        return self._run is not None and not self._finished

    @property
    def wandb_dir(self) -> Path | None:
        """The W&B run's own folder (``RUN/wandb/offline-run-*``), None when disabled."""
        if self._run is None:
            return None
        return Path(self._run.dir).parent

    def finish(self, failed: bool = False) -> None:
        """Close the run (exit code 1 when failed); safe to call twice or when disabled."""
        if self._finished:
            return
        self._finished = True
        try:
            self._run.finish(exit_code=1 if failed else 0)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B run did not finish cleanly: %s", _one_line(exc))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Finish the run, marked failed when the body raised; the exception propagates."""
        self.finish(failed=exc_type is not None)
        return False

    # ------------------------------------------------------------------ logging
    def keras_callbacks(self) -> list:
        """Per-epoch metrics and learning rate (``epoch/*`` history keys); [] when disabled."""
        if not self.enabled:
            return []
        try:
            from wandb.integration.keras import WandbMetricsLogger

            return [WandbMetricsLogger(log_freq="epoch")]
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B Keras callback unavailable: %s", _one_line(exc))
            return []

    def log_config(self, extra: Mapping[str, Any]) -> None:
        """Add keys to the run's config (e.g. library versions and git commit, for reproduction)."""
        if not self.enabled:
            return
        self._guard(lambda: self._run.config.update(redact_secrets(dict(extra)), allow_val_change=True))

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Final metrics into ``run.summary``, nested keys flattened with ``/``."""
        if not self.enabled:
            return
        self._guard(self._run.summary.update, flatten(metrics))

    def log_evaluation(
        self,
        result: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        class_names: Sequence[str],
        split: str = "test",
    ) -> None:
        """Confusion matrix, ROC curve, predictions table and ``<split>/*`` summary metrics.

        ``rows``: one dict per image with ``path``, ``true``, ``pred`` (class indices) and
        ``prob`` (probability of ``class_names[1]``); ``group`` is shown when present.
        """
        if not self.enabled:
            return
        self._guard(self._log_evaluation, result, rows, list(map(str, class_names)), split)

    def _log_evaluation(
        self,
        result: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        class_names: list[str],
        split: str,
    ) -> None:
        import wandb

        scalars = {k: v for k, v in flatten(result, prefix=split).items()
                   if not isinstance(v, list)}
        self._run.summary.update(scalars)

        y_true = [int(r["true"]) for r in rows]
        y_pred = [int(r["pred"]) for r in rows]
        if not rows and result.get("confusion_matrix"):
            y_true, y_pred = _pairs_from_matrix(result["confusion_matrix"])
        charts: dict[str, Any] = {}
        if y_true:
            charts[f"{split}/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=y_true, preds=y_pred, class_names=class_names,
                title=f"Confusion matrix ({split})")
        roc = _roc_table(wandb, rows, class_names)
        if roc is not None:
            charts[f"{split}/roc"] = wandb.plot_table(
                "wandb/area-under-curve/v0", roc, {"x": "fpr", "y": "tpr", "class": "class"},
                {"title": f"ROC curve ({split})", "x-axis-title": "False positive rate",
                 "y-axis-title": "True positive rate"})
        limit = int(self._options.get("log_predictions") or 0)
        if rows and limit > 0:
            charts[f"{split}/predictions"] = _predictions_table(wandb, rows, class_names, limit)
        if charts:
            self._run.log(charts)

    def log_model(self, model_path: Path, metadata: Mapping[str, Any] | None = None) -> None:
        """The trained model as an artifact of type ``model`` (skipped if logger.log_model=false).

        The file is referenced in place (``policy="immutable"``), not copied into W&B's
        staging area: ``model.keras`` must not change afterwards until the run is synced.
        """
        if not self.enabled or not self._options.get("log_model", True):
            return
        self._guard(self._log_model, Path(model_path), metadata)

    def _log_model(self, model_path: Path, metadata: Mapping[str, Any] | None) -> None:
        import wandb

        if not model_path.exists():
            log.warning("W&B: no model to log at %s", model_path)
            return
        meta = {"format": model_path.suffix.lstrip(".") or "dir", "file": model_path.name}
        meta.update(redact_secrets(_jsonable(dict(metadata or {}))))
        artifact = wandb.Artifact(f"model-{self._run.id}", type="model", metadata=meta)
        if model_path.is_dir():
            artifact.add_dir(str(model_path), policy="immutable")
        else:
            artifact.add_file(str(model_path), policy="immutable")
        self._run.log_artifact(artifact)

    def _guard(self, fn: Any, *args: Any) -> None:
        """Run one logging call; a W&B failure becomes a warning, never an exception."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B logging failed (%s): %s", getattr(fn, "__name__", "call"),
                        _one_line(exc))


# ---------------------------------------------------------------------- config
def _logger_cfg(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.logger`` as a plain dict; a missing group means tracking was not asked for."""
    node = cfg.get("logger") if isinstance(cfg, DictConfig) else None
    if node is None:
        return {"mode": "disabled"}
    out = resolved_config(node)
    return out if isinstance(out, dict) else {"mode": "disabled"}


def _mode(lcfg: Mapping[str, Any]) -> str:
    raw = str(lcfg.get("mode") or "offline").strip().lower()
    mode = _MODE_ALIASES.get(raw, raw)
    if mode not in MODES:
        log.warning("logger.mode=%r is not one of %s; recording offline", raw, "|".join(MODES))
        return "offline"
    return mode


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
        return {k: redact_secrets(v) for k, v in value.items()
                if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    return value


def flatten(data: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"test": {"accuracy": 0.9}}`` -> ``{"test/accuracy": 0.9}``; values made JSON-safe."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _hydra_job() -> tuple[str | None, str | None, Path | None]:
    """(run name, group, sweep dir) of the running Hydra job; all None outside Hydra.

    Name = the job's overrides as in ``hydra.job.override_dirname``, secrets masked;
    group = the sweep dir in a multirun, so all jobs of one sweep share it. Read from the
    live HydraConfig rather than through ``${hydra:...}`` in the YAML, so that
    ``.hydra/config.yaml`` stays resolvable outside Hydra (evaluate, report).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None, None, None
        hc = HydraConfig.get()
        name = _override_name(hc)
        if hc.mode != RunMode.MULTIRUN:
            return name, None, None
        sweep = Path(str(hc.sweep.dir)).resolve()
        cwd = Path(str(hc.runtime.get("cwd") or os.getcwd())).resolve()
        group = (sweep.relative_to(cwd) if sweep.is_relative_to(cwd) else sweep).as_posix()
        return name, group, sweep
    except Exception:  # noqa: BLE001 - no Hydra, or an unusual Hydra config
        return None, None, None


def _override_name(hc: Any) -> str | None:
    """``model.dropout=0.2,optimizer.lr=0.003``: the overrides, sorted, minus
    ``hydra.job.config.override_dirname.exclude_keys``."""
    fmt = hc.job.config.override_dirname
    exclude = {str(k) for k in (fmt.exclude_keys or [])}
    items = []
    for override in map(str, hc.overrides.task):
        key, eq, value = override.partition("=")
        if key.lstrip("+~") in exclude:
            continue
        items.append(f"{key}{fmt.kv_sep}{_mask(key, value)}" if eq else key)
    return str(fmt.item_sep).join(sorted(items)) or None


def _mask(key: str, value: str) -> str:
    return "***" if _SECRET_KEY.search(key.lstrip("+~")) else value


def _masked_arg(arg: str) -> str:
    """``+db.password=x`` -> ``+db.password=***``; other arguments unchanged."""
    key, eq, value = arg.partition("=")
    return f"{key}={_mask(key, value)}" if eq else arg


def _link_into_sweep(run: Any, sweep: Path | None) -> None:
    """Symlink the job's run folder into ``SWEEP/wandb/`` so that ``wandb leet SWEEP/wandb``
    browses, and ``wandb sync SWEEP/wandb/offline-run-*`` uploads, the whole sweep."""
    if sweep is None:
        return
    try:
        target = Path(run.dir).resolve().parent  # RUN/wandb/offline-run-<date>-<id>
        links = sweep / "wandb"
        if target.parent == links.resolve() or not target.is_relative_to(sweep):
            return
        links.mkdir(parents=True, exist_ok=True)
        link = links / target.name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(target, links))
    except Exception as exc:  # noqa: BLE001 - a convenience only
        log.debug("no sweep link for the W&B run: %s", exc)


def _clip(text: Any) -> str | None:
    """W&B names and groups are at most 128 characters; keep the distinctive tail."""
    if not text:
        return None
    text = str(text)
    return text if len(text) <= _MAX_NAME else text[-_MAX_NAME:]


def _git_settings() -> dict[str, Any]:
    """Record this code's git commit when it runs from a checkout; else no git warning."""
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            if (folder / ".git").exists():
                return {"git_root": str(folder)}
    return {"disable_git": True}


# ---------------------------------------------------------------------- wandb.init
def _has_credentials() -> bool:
    """Whether online mode has an API key, without prompting or touching the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        host = settings.base_url
        return bool(wbauth.session_credentials(host=host)
                    or wbauth.read_netrc_auth(host=host)
                    or settings.api_key)
    except Exception:  # noqa: BLE001 - SDK internals moved: let wandb.init decide
        return True


def _open_run(wandb: Any, kwargs: dict[str, Any], settings: Any, mode: str
              ) -> tuple[Any, str | None]:
    """(run, why online failed) or (None, why nothing could start); online falls back
    to offline, which needs neither network nor credentials."""
    global _online_failure
    problem = None
    if mode == "online":
        if not _has_credentials():
            problem = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
        elif _online_failure is not None:
            problem = f"{_online_failure} (earlier in this process)"
        else:
            run = _init(wandb, kwargs, settings, "online")
            if not isinstance(run, str):
                return run, None
            problem = _online_failure = run
    Path(kwargs["dir"]).mkdir(parents=True, exist_ok=True)
    run = _init(wandb, kwargs, settings, "offline")
    if isinstance(run, str):
        return None, f"{problem}; offline: {run}" if problem else run
    return run, problem


def _init(wandb: Any, kwargs: dict[str, Any], settings: Any, mode: str) -> Any:
    """``wandb.init`` in ``mode``: the run, or a one-line reason why it failed."""
    argv = sys.argv
    # W&B records sys.argv in the run's metadata: mask secret values given as overrides.
    sys.argv = [*argv[:1], *map(_masked_arg, argv[1:])]
    try:
        run = wandb.init(mode=mode, settings=settings, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - includes wandb's own timeout exits
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _one_line(exc)
    finally:
        sys.argv = argv
    if run is None or getattr(run, "disabled", False):
        return "wandb.init returned no run"
    return run


def _one_line(exc: BaseException | str) -> str:
    """First line of an error, without any API key in it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    key = os.environ.get("WANDB_API_KEY")
    if key:
        text = text.replace(key, "***")
    return text[:300]


# ---------------------------------------------------------------------- evaluation media
def _pairs_from_matrix(matrix: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Expand confusion-matrix counts back into (true, pred) pairs."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for t, row in enumerate(matrix):
        for p, count in enumerate(row):
            y_true += [t] * int(count)
            y_pred += [p] * int(count)
    return y_true, y_pred


def _roc_table(wandb: Any, rows: Sequence[Mapping[str, Any]], class_names: list[str]) -> Any:
    """The table behind ``wandb.plot.roc_curve`` (one curve per class), built with numpy.

    ``wandb.plot.roc_curve`` itself needs pandas and scikit-learn, which this project
    does not depend on; the chart spec and columns are the same.
    """
    import numpy as np

    if len(class_names) != 2 or not rows:
        return None
    y = np.asarray([int(r["true"]) for r in rows])
    p1 = np.asarray([float(r["prob"]) for r in rows])
    if len(set(y.tolist())) < 2:
        return None  # ROC is undefined with one class present
    data = []
    for cls, score in ((0, 1.0 - p1), (1, p1)):
        fpr, tpr = _roc_points(y == cls, score)
        data += [[class_names[cls], round(float(f), 4), round(float(t), 4)]
                 for f, t in zip(fpr, tpr, strict=True)]
    return wandb.Table(columns=["class", "fpr", "tpr"], data=data)


def _roc_points(positive: Any, score: Any) -> tuple[Any, Any]:
    """(fpr, tpr) of one class's curve, thinned to at most ``_ROC_POINTS`` points."""
    import numpy as np

    from gender.evaluation import roc_curve

    fpr, tpr = roc_curve(positive.astype(int), score)
    if fpr.size > _ROC_POINTS:  # W&B tables hold 10k rows; the curve needs far fewer
        keep = np.unique(np.linspace(0, fpr.size - 1, _ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def _predictions_table(
    wandb: Any, rows: Sequence[Mapping[str, Any]], class_names: list[str], limit: int
) -> Any:
    """Test images with labels and probability: confident mistakes first, then the
    least confident correct ones (the borderline cases worth a look)."""

    def order(r: Mapping[str, Any]) -> tuple[int, float]:
        confidence = abs(float(r["prob"]) - 0.5)
        wrong = int(r["true"]) != int(r["pred"])
        return (0, -confidence) if wrong else (1, confidence)

    chosen = sorted(rows, key=order)[:limit]
    has_group = any("group" in r for r in chosen)
    columns = ["image", "true", "pred", f"prob_{class_names[-1]}", "correct", "path"]
    if has_group:
        columns.append("group")
    table = wandb.Table(columns=columns)
    for r in chosen:
        t, p = int(r["true"]), int(r["pred"])
        values = [_thumbnail(wandb, r["path"]), _label(class_names, t), _label(class_names, p),
                  round(float(r["prob"]), 4), t == p, str(r["path"])]
        if has_group:
            values.append(str(r.get("group", "")))
        table.add_data(*values)
    return table


def _label(class_names: list[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def _thumbnail(wandb: Any, path: str | os.PathLike) -> Any:
    """A small RGB thumbnail (keeps offline runs small); None if the file is unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((_THUMBNAIL, _THUMBNAIL))
            return wandb.Image(img)
    except Exception:  # noqa: BLE001 - a missing image must not drop the table
        return None
