"""``python -m gender.predict``: class and probability for each image, printed and saved as CSV.

Usage (images, folders and globs, as bare arguments or as a Hydra list)::

    python -m gender.predict model_path=outputs/2025-01-01/12-00-00 photo.jpg more/ 'shots/*.png'
    python -m gender.predict model_path=RUN/model.keras 'inputs=[photo.jpg,more/]'
    python -m gender.predict model_path=RUN no_face=skip group_photo.jpg output=preds.csv

Bare arguments (no ``=``, not an option) are taken as inputs; a path containing ``=`` or ``,``
must go through ``inputs=['...']`` instead. Folders are searched recursively for image files
(jpg, jpeg, png, bmp, gif, webp, tif, tiff); a file named explicitly is tried whatever its name.

Any size, PNG or JPEG, grayscale or RGBA (composited on white) is accepted; images are resized to
the model's input size exactly as in training, through the face stage the model was trained with
(its run's ``data.face``: ``crop`` or ``align`` find the largest face first, see ``gender.face``).
When that stage finds no face the image is predicted whole (``no_face=whole``, the default, status
``ok: no face found, whole image used``) or left out (``no_face=skip``, ``skipped: no face found``).

CSV columns: ``path,class,probability,status`` where ``probability`` is that of the predicted
class and ``status`` is ``ok``, ``ok: face found``, ``ok: no face found, whole image used``,
``skipped: no face found`` or ``error: <reason>`` (an unreadable file never stops the batch).
Rows keep the order of the inputs (folders and globs expanded in sorted order).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from gender.errors import reported_as_one_line
from gender.extras import HYDRA_OPTIONS_WITH_VALUE
from gender.inference import require_model_path
from gender.prediction import run_predict
from gender.task import JobInfo, task_wrapper

# -------------------------------------------------------------------------------- the CLI


def split_positional(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate bare input paths from Hydra overrides/options so ``predict a.jpg b/`` works."""
    keep: list[str] = []
    positional: list[str] = []
    prev = ""
    for arg in argv:
        if "=" not in arg and not arg.startswith("-") and prev not in HYDRA_OPTIONS_WITH_VALUE:
            positional.append(arg)
        else:
            keep.append(arg)
        prev = arg
    return keep, positional


def predict_job(cfg: DictConfig, job: JobInfo, inputs: list[str]) -> None:
    require_model_path(cfg, "python -m gender.predict model_path=outputs/runs/DATE/TIME photo.jpg")
    run_predict(cfg, job.output_dir, inputs)


def cli() -> None:
    # bare paths are inputs, not overrides: Hydra only sees the rest of the command line
    argv, positional = split_positional(sys.argv[1:])
    sys.argv = [sys.argv[0], *argv]

    def task(cfg: DictConfig, job: JobInfo) -> None:
        predict_job(cfg, job, positional)

    main = hydra.main(version_base="1.3", config_path="conf", config_name="predict")(task_wrapper(task))
    with reported_as_one_line():  # Ctrl-C before the task started: one line, no traceback
        main()


if __name__ == "__main__":
    cli()
