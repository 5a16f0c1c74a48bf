"""Optional extras: the Hydra plugins that only one option needs, and the one line naming them.

``pip install gender-hydra`` leaves out Optuna (``[optuna]``) and submitit (``[slurm]``); an
option that needs one of them then fails in Hydra with "Could not find 'hydra/sweeper/optuna'".
``missing_extra`` turns that into ``error: ... needs the optional 'optuna' extra: pip install
'gender-hydra[optuna]'``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

from gender.errors import UserError

#: config a plugin provides -> (the plugin's module, the extra that installs it, its package)
PLUGIN_CONFIGS = {
    "hydra/sweeper/optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna", "hydra-optuna-sweeper"),
    "hydra/launcher/submitit_slurm": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "hydra-submitit-launcher",
    ),
    "hydra/launcher/submitit_local": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "hydra-submitit-launcher",
    ),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def any_plugin_missing() -> bool:
    return not all(installed(module) for module, _, _ in PLUGIN_CONFIGS.values())


def missing_extra(error: BaseException) -> UserError | None:
    """The one-line error for a composition that failed for want of an optional plugin, else None."""
    text = f"{getattr(error, 'missing_cfg_file', None) or ''}\n{error}"
    for config, (module, extra, package) in PLUGIN_CONFIGS.items():
        if config not in text or installed(module):
            continue
        within = re.search(r"In '(hydra/(?:launcher|sweeper)/\w+)'", text)  # our wrapper option
        option = within.group(1) if within else config
        group, _, name = option.rpartition("/")
        return UserError(
            f"{group}={name} needs the optional '{extra}' extra ({package}): "
            f"pip install 'gender-hydra[{extra}]'"
        )
    return None


HYDRA_OPTIONS_WITH_VALUE = {  # Hydra's command-line options that take the next argument
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--package",
    "-p",
    "--cfg",
    "-c",
    "--info",
    "-i",
}
_SWEEP = re.compile(r"^[^=]+=\s*(.*,.*|(range|choice|interval|tag|glob)\(.*)$")


def single_run_overrides(args: Sequence[str]) -> list[str] | None:
    """The overrides of a ``-m`` command line with the swept values left out (one job's config
    minus the swept keys), or None when the command changes where configs come from."""
    if any(a.split("=", 1)[0] in HYDRA_OPTIONS_WITH_VALUE for a in args if a.startswith("-")):
        return None
    return [a for a in args if not a.startswith("-") and not _SWEEP.match(a)]
