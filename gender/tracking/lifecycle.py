"""One job's tracked run: started, fed, finished; tracking never costs a result.

``Tracker.start`` opens what ``cfg.logger`` asks for: a W&B run (``logger=wandb``, offline by
default, so nothing needs a network) in ``RUN/wandb/``, TensorBoard logs (``logger=tensorboard``)
in ``RUN/tensorboard/``, or both (``logger=[wandb,tensorboard]``). When W&B cannot start (no API
key, no network, a broken install) it logs ONE warning line, retries offline and, failing that,
goes on without W&B: the training carries on and writes its own files as usual.
``logger=none`` never imports wandb and writes no tracking files at all.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from omegaconf import DictConfig

from gender.io import write_json
from gender.tracking import media
from gender.tracking.config import (
    HydraJob,
    clip,
    command_line_has_secret,
    drop_blank_wandb_env,
    flatten,
    hydra_job,
    jsonable,
    key_config,
    logger_options,
    mask,
    redact_secrets,
    resolved_config,
    secret_values,
)
from gender.tracking.tensorboard import TensorBoardLogs

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online", "false": "disabled", "off": "disabled"}
#: Where a sweep remembers that online W&B failed, so its later jobs (in any process) record
#: offline at once instead of waiting for the same timeout again.
ONLINE_FAILED = "online-unavailable.json"
#: The job's W&B run, for the sweep summary's links and for evaluate runs' lineage.
RUN_RECORD = "run.json"


def wandb_mode(options: Mapping[str, Any]) -> str:
    """``disabled`` unless the logger group holds W&B's keys (``logger=wandb``); else the mode
    asked for (``logger.mode``, which defaults to ``$WANDB_MODE``), offline when blank or unknown."""
    if "mode" not in options:  # logger=tensorboard alone
        return "disabled"
    raw = str(options.get("mode") or "offline").strip().lower()
    mode = _MODE_ALIASES.get(raw, raw)
    if mode not in MODES:
        log.warning("logger.mode=%r is not one of %s; recording offline", raw, "|".join(MODES))
        return "offline"
    return mode


def _one_line(exc: BaseException | str) -> str:
    """First line of an error, without any API key in it."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    key = os.environ.get("WANDB_API_KEY")
    return (text.replace(key, "***") if key else text)[:300]


def _git_settings() -> dict[str, Any]:
    """Record this code's git commit when it runs from a checkout; else no git warning."""
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            if (folder / ".git").exists():
                return {"git_root": str(folder)}
    return {"disable_git": True}


class Tracker:
    """The tracked run(s) of one job; every method is a no-op for what is off or failed."""

    def __init__(
        self,
        run: Any = None,
        options: Mapping[str, Any] | None = None,
        tensorboard: TensorBoardLogs | None = None,
        run_dir: Path | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._run = run
        self._options = dict(options or {})
        self._tensorboard = tensorboard
        self._run_dir = run_dir
        self._key_config = dict(config or {})
        self._finished = run is None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, job_type: str = "train") -> Tracker:
        """Open the job's tracking as ``cfg.logger`` asks; never raises for a tracking problem."""
        run_dir = Path(run_dir)
        drop_blank_wandb_env()
        options = logger_options(cfg)
        job = hydra_job()
        config = key_config(cfg)
        tensorboard = None
        if isinstance(options.get("tensorboard"), Mapping):
            hparams = {**config, **_override_values(job.overrides)}
            tensorboard = TensorBoardLogs.from_options(options["tensorboard"], run_dir, hparams, job.name)
        run = None
        if wandb_mode(options) != "disabled":
            run = _start_wandb(cfg, options, run_dir, job_type, job)
        return cls(run, options, tensorboard, run_dir, config)

    @property
    def enabled(self) -> bool:
        """Whether a W&B run is open (False for logger=none, disabled, fallback or finished)."""
        return self._run is not None and not self._finished

    @property
    def wandb_dir(self) -> Path | None:
        """The W&B run's own folder (``RUN/wandb/offline-run-*``), None when disabled."""
        return None if self._run is None else Path(self._run.dir).parent

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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Finish the run, marked failed when the body raised; the exception propagates."""
        self.finish(failed=exc_type is not None)
        return False

    # ------------------------------------------------------------------ logging
    def keras_callbacks(self) -> list:
        """Per-epoch metrics and learning rate to W&B (``epoch/*``) and TensorBoard."""
        callbacks = []
        if self.enabled:
            self._guard(lambda: callbacks.append(_wandb_epoch_logger(self._run)))
        if self._tensorboard is not None:
            try:
                callbacks.append(self._tensorboard.keras_callback())
            except Exception as exc:  # noqa: BLE001
                log.warning("TensorBoard callback unavailable: %s", _one_line(exc))
        return callbacks

    def log_config(self, extra: Mapping[str, Any]) -> None:
        """Add keys to the run's config (e.g. library versions and git commit, for reproduction)."""
        if self.enabled:
            self._guard(lambda: self._run.config.update(redact_secrets(dict(extra)), allow_val_change=True))

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Final metrics: W&B ``run.summary`` (nested keys flattened with ``/``); TensorBoard
        scalars at the best epoch, with the job's hyperparameters."""
        if self.enabled:
            self._guard(self._run.summary.update, flatten(metrics))
        if self._tensorboard is not None:
            try:
                self._tensorboard.log_summary(metrics)
            except Exception as exc:  # noqa: BLE001
                log.warning("TensorBoard summary failed: %s", _one_line(exc))

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
        if self.enabled:
            self._guard(self._log_evaluation, result, rows, list(map(str, class_names)), split)

    def _log_evaluation(
        self, result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], class_names: list[str], split: str
    ) -> None:
        import wandb

        self._run.summary.update(
            {k: v for k, v in flatten(result, prefix=split).items() if not isinstance(v, list)}
        )
        y_true = [int(r["true"]) for r in rows]
        y_pred = [int(r["pred"]) for r in rows]
        if not rows and result.get("confusion_matrix"):
            y_true, y_pred = media.pairs_from_matrix(result["confusion_matrix"])
        charts: dict[str, Any] = {}
        if y_true:
            charts[f"{split}/confusion_matrix"] = media.confusion_matrix_chart(
                wandb, y_true, y_pred, class_names, split
            )
        if rows and (roc := media.roc_chart(wandb, rows, class_names, split)) is not None:
            charts[f"{split}/roc"] = roc
        limit = int(self._options.get("log_predictions") or 0)
        if rows and limit > 0:
            charts[f"{split}/predictions"] = media.predictions_table(wandb, rows, class_names, limit)
        if charts:
            self._run.log(charts)

    def log_model(self, model_path: Path, metrics: Mapping[str, Any] | None = None) -> None:
        """The trained model as artifact ``model-<run id>`` (type ``model``), aliased ``best``
        (it holds the checkpointed epoch) and ``latest``; metadata: the metrics and the key
        config. Skipped when ``logger.log_model=false``.

        The file is referenced in place, not copied into W&B's staging area: ``model.keras`` must
        not change afterwards until the run is synced.
        """
        if self.enabled and self._options.get("log_model", True):
            self._guard(self._log_model, Path(model_path), metrics or {})

    def _log_model(self, model_path: Path, metrics: Mapping[str, Any]) -> None:
        import wandb

        if not model_path.exists():
            log.warning("W&B: no model to log at %s", model_path)
            return
        scalars = {
            k: v
            for k, v in jsonable(dict(metrics)).items()
            if isinstance(v, int | float | str | bool) or k == "test_accuracy_ci95"
        }
        metadata = {**scalars, "config": self._key_config}
        artifact = media.model_artifact(wandb, self._run.id, model_path, metadata)
        self._run.log_artifact(artifact, aliases=list(media.MODEL_ALIASES))

    def use_model(self, model_path: Path) -> None:
        """Point this (evaluate) run back at the model it scores: the training run's W&B id and
        the artifact's name and digest go into the config (lineage that survives offline mode and
        ``wandb sync``); online, ``use_artifact`` also links the two runs in W&B's lineage graph."""
        if self.enabled:
            self._guard(self._use_model, Path(model_path))

    def _use_model(self, model_path: Path) -> None:
        import wandb

        model_file = model_path / "model.keras" if model_path.is_dir() else model_path
        trained = _read_run_record(model_file.parent)
        link: dict[str, Any] = {"path": str(model_file.resolve())}
        if trained:
            name = media.model_artifact_name(trained["id"])
            digest = media.model_artifact(wandb, trained["id"], model_file).digest
            link.update(
                training_run_id=trained["id"],
                artifact=f"{name}:best",
                digest=digest,
                training_run_project=trained.get("project"),
            )
        self._run.config.update({"model_artifact": link}, allow_val_change=True)
        if trained and not self._run.offline:  # W&B refuses use_artifact offline
            where = "/".join(str(p) for p in (trained.get("entity"), trained.get("project")) if p)
            try:
                self._run.use_artifact(f"{where}/{link['artifact']}" if where else link["artifact"])
            except Exception as exc:  # noqa: BLE001 - e.g. the training run was never synced
                log.warning(
                    "W&B: no lineage link to %s (%s); its id and digest are in the config",
                    link["artifact"],
                    _one_line(exc),
                )

    def _guard(self, fn: Any, *args: Any) -> None:
        """Run one logging call; a W&B failure becomes a warning, never an exception."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B logging failed (%s): %s", getattr(fn, "__name__", "call"), _one_line(exc))


def _wandb_epoch_logger(run: Any) -> Any:
    from gender.tracking.callbacks import WandbEpochLogger

    return WandbEpochLogger(run)


def _override_values(overrides: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and not key.startswith(("~", "hydra")):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            out[key.lstrip("+")] = parsed if isinstance(parsed, bool | int | float | str) else value
    return out


def _read_run_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / "wandb" / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("id") else None


# ---------------------------------------------------------------------- starting W&B
def _start_wandb(
    cfg: DictConfig, options: Mapping[str, Any], run_dir: Path, job_type: str, job: HydraJob
) -> Any:
    """The open W&B run, or None (one warning line said why)."""
    try:
        import wandb
    except Exception as exc:  # noqa: BLE001 - a broken install must not cost the run
        log.warning("W&B tracking disabled: cannot import wandb (%s)", _one_line(exc))
        return None
    try:
        config = resolved_config(cfg)
        wdir = Path(options.get("dir") or run_dir)
        kwargs: dict[str, Any] = {
            "project": options.get("project") or "gender",
            "entity": options.get("entity") or None,
            "group": clip(options.get("group") or job.group),
            "name": clip(options.get("name") or job.name),
            "tags": [str(t) for t in (options.get("tags") or [])] or None,
            "notes": options.get("notes") or None,
            "job_type": job_type,
            "dir": str(wdir),
            "config": redact_secrets(config),
            # Hydra's basic launcher runs a sweep's jobs one after another in one process:
            # each job must close the previous run, not resume it ("return_previous").
            "reinit": "finish_previous",
        }
        settings = dict(
            silent=True,
            quiet=True,
            show_info=False,
            init_timeout=float(options.get("init_timeout") or 30),
            **_git_settings(),
        )
        if command_line_has_secret(sys.argv[1:]):
            # W&B records the command line in the run's metadata: leave the metadata out
            settings["x_disable_meta"] = True
        run, problem = _open_run(
            wandb, kwargs, wandb.Settings(**settings), wandb_mode(options), job.sweep_dir
        )
    except Exception as exc:  # noqa: BLE001 - e.g. an unusable logger.dir or init_timeout
        log.warning("W&B tracking disabled for this job: %s; the job continues untracked", _one_line(exc))
        return None
    if run is None:
        log.warning("W&B tracking disabled for this job: %s; the job continues untracked", problem)
        return None
    if problem:
        log.warning(
            "W&B online tracking unavailable: %s; recording offline in %s (upload later with `wandb sync`)",
            problem,
            wdir / "wandb",
        )
    try:
        _record_run(run, run_dir, options)
        _save_hydra_files(run, run_dir, config, job.overrides)
        _link_into_sweep(run, job.sweep_dir)
    except Exception as exc:  # noqa: BLE001 - conveniences only
        log.debug("W&B run extras skipped: %s", exc)
    return run


def _has_credentials(wandb: Any) -> bool:
    """Whether online mode has an API key, without prompting or touching the network."""
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - let wandb.init decide
        return True


def _open_run(
    wandb: Any, kwargs: dict[str, Any], settings: Any, mode: str, sweep_dir: Path | None
) -> tuple[Any, str | None]:
    """(run, why online failed) or (None, why nothing could start); online falls back
    to offline, which needs neither network nor credentials."""
    problem = None
    if mode == "online":
        marker = sweep_dir / "wandb" / ONLINE_FAILED if sweep_dir is not None else None
        earlier = _read_marker(marker)
        if earlier:
            problem = f"{earlier} (earlier in this sweep)"
        elif not _has_credentials(wandb):
            problem = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
        else:
            run = _init(wandb, kwargs, settings, "online")
            if not isinstance(run, str):
                return run, None
            problem = run
            if marker is not None:
                write_json({"error": problem, "time": time.time()}, marker)
    Path(kwargs["dir"]).mkdir(parents=True, exist_ok=True)
    run = _init(wandb, kwargs, settings, "offline")
    if isinstance(run, str):
        return None, f"{problem}; offline: {run}" if problem else run
    return run, problem


def _read_marker(marker: Path | None) -> str | None:
    if marker is None:
        return None
    try:
        return str(json.loads(marker.read_text()).get("error") or "online W&B failed")
    except (OSError, ValueError, AttributeError):
        return None


def _init(wandb: Any, kwargs: dict[str, Any], settings: Any, mode: str) -> Any:
    """``wandb.init`` in ``mode``: the run, or a one-line reason why it failed."""
    try:
        run = wandb.init(mode=mode, settings=settings, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - includes wandb's own timeout exits
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _one_line(exc)
    if run is None or getattr(run, "disabled", False):
        return "wandb.init returned no run"
    return run


def _record_run(run: Any, run_dir: Path, options: Mapping[str, Any]) -> None:
    """``RUN/wandb/run.json``: which W&B run this job is (the sweep summary links it; an evaluate
    run of this model names it)."""
    record = {
        "id": run.id,
        "project": run.project,
        "entity": getattr(run, "entity", None) or options.get("entity"),
        "name": run.name,
        "group": run.group,
        "mode": "offline" if run.offline else "online",
        "url": None if run.offline else run.url,
        "folder": Path(run.dir).parent.name,
    }
    write_json(record, run_dir / "wandb" / RUN_RECORD)


def _save_hydra_files(run: Any, run_dir: Path, config: Any, overrides: Sequence[str]) -> None:
    """The job's ``.hydra/`` files go with the W&B run (its ``hydra/`` files), secrets masked."""
    secrets = secret_values(config, overrides)
    target = Path(run.dir) / "hydra"
    for source in sorted((run_dir / ".hydra").glob("*.yaml")):
        target.mkdir(exist_ok=True)
        (target / source.name).write_text(mask(source.read_text(), secrets))


def _link_into_sweep(run: Any, sweep: Path | None) -> None:
    """Symlink the job's run folder into ``SWEEP/wandb/`` so that ``wandb leet SWEEP/wandb``
    browses, and ``wandb sync SWEEP/wandb/offline-run-*`` uploads, the whole sweep."""
    if sweep is None:
        return
    target = Path(run.dir).resolve().parent  # RUN/wandb/offline-run-<date>-<id>
    links = sweep / "wandb"
    if target.parent == links.resolve() or not target.is_relative_to(sweep):
        return
    links.mkdir(parents=True, exist_ok=True)
    link = links / target.name
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(target, links))
