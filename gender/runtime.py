"""Process-wide TensorFlow state for a job: threads, determinism, precision, seeds, strategy.

Set once before any op runs; training, the benchmark and the sweep-cost probe share it. TensorFlow
is imported inside each function, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

from gender import environment
from gender.config import dtype_policy
from gender.errors import UserError
from gender.log import quiet_tensorflow

log = logging.getLogger(__name__)


def configure_runtime(trainer_cfg: Any, seed: int, started_in: str | None = None) -> str:
    """Threads, determinism, precision and seeds: process-wide TF state, set before any op runs.

    Returns the Keras dtype policy set. ``started_in``: the policy a resumed run started with; with
    ``trainer.mixed_precision=auto`` the run keeps it, so its remaining epochs compute what its
    first ones did even on another machine (``auto`` there might pick another precision)."""
    quiet_tensorflow()  # TensorFlow starts here, its start-up lines filtered
    import keras
    import tensorflow as tf

    logical_cpus = int(trainer_cfg.get("logical_cpus") or 1)
    if logical_cpus > 1:  # several CPU replicas: runs strategy=mirrored code paths without GPUs
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)]
            )
        except RuntimeError:  # a second job in the same process: TF is already running
            log.warning(
                "trainer.logical_cpus=%d ignored: TensorFlow already initialised in this process",
                logical_cpus,
            )
    for name, setter, getter in (
        (
            "intra_op_threads",
            tf.config.threading.set_intra_op_parallelism_threads,
            tf.config.threading.get_intra_op_parallelism_threads,
        ),
        (
            "inter_op_threads",
            tf.config.threading.set_inter_op_parallelism_threads,
            tf.config.threading.get_inter_op_parallelism_threads,
        ),
    ):
        value = trainer_cfg.get(name)
        if value and getter() != int(value):
            try:
                setter(int(value))
            except RuntimeError:  # a second job in the same process: TF is already running
                log.warning(
                    "trainer.%s=%s ignored: TensorFlow already initialised in this process", name, value
                )
    from tensorflow.python.framework import config as tf_config

    if trainer_cfg.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        # process-wide: an earlier job of a sequential sweep turned it on (and it disables XLA)
        tf_config.disable_op_determinism()
    asked = trainer_cfg.get("mixed_precision")
    policy = dtype_policy(asked)
    if policy == "auto" and started_in:
        policy = started_in
        if policy != "float32" and policy not in native_policies():
            log.warning(
                "this run started in %s and continues in it, although this machine does not run it "
                "natively: its remaining epochs are far slower than they were (docs/speed.md)",
                policy.removeprefix("mixed_"),
            )
    elif policy == "auto":
        policy = native_dtype_policy()
    elif policy != "float32" and policy not in native_policies():
        log.warning(
            "trainer.mixed_precision=%s: this machine does not run %s natively, so training is far "
            "slower than in float32 (bfloat16: 10x on a 2-core AVX2 CPU, docs/speed.md); "
            "trainer.mixed_precision=auto picks the fastest precision it runs",
            str(asked).lower() if isinstance(asked, bool) else asked,
            policy.removeprefix("mixed_"),
        )
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(int(seed))
    return policy


def native_half_precision(gpu_capability: tuple[int, int] | None, cpu_flags: str) -> tuple[str, ...]:
    """The half-precision Keras policies the hardware runs natively, fastest first.

    ``gpu_capability`` is the first GPU's compute capability (``(0, 0)`` if unknown; None without
    a GPU): float16 from 7.0 (tensor cores), bfloat16 from 8.0. Without a GPU, bfloat16 where the
    CPU flags (/proc/cpuinfo) list AVX-512 BF16 or AMX; anywhere else half precision is emulated,
    10x slower than float32 on a 2-core AVX2 CPU (docs/speed.md)."""
    if gpu_capability is not None:
        return tuple(
            name
            for name, needs in (("mixed_float16", (7, 0)), ("mixed_bfloat16", (8, 0)))
            if gpu_capability >= needs
        )
    return ("mixed_bfloat16",) if ("avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags) else ()


def native_policies() -> tuple[str, ...]:
    """``native_half_precision`` of this machine: its first GPU, else its CPU's flags."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return native_half_precision(tuple(capability or (0, 0)), "")
    # the flags environment.json records; none off Linux (no cheap way to tell there)
    return native_half_precision(None, " ".join(environment.cpu_flags()))


def native_dtype_policy() -> str:
    """What ``trainer.mixed_precision=auto`` picks: the fastest half precision the machine runs
    natively, else float32."""
    native = native_policies()
    return native[0] if native else "float32"


def distribution_strategy(name: str):
    """``tf.distribute`` strategy by name; ``default`` is the no-op strategy."""
    import tensorflow as tf

    if name in (None, "default", "none"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"trainer.strategy={name} is unknown; allowed: default, mirrored, multi_worker")
