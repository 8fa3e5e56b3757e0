"""Learning-rate schedules: linear warm-up, then constant, lr·√(warmup/step) (`noam`) or a
cosine decay to zero at `total_steps` (`cosine`)."""

import math

import keras
from keras import ops

SCHEDULES = ("constant", "noam", "cosine")
"""The names `WarmupSchedule` accepts for `schedule`."""


@keras.saving.register_keras_serializable(package="relperf_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`constant`: lr·min(1, step/warmup); `noam`: lr·min(step/warmup, √(warmup/step));
    `cosine`: lr·min(step/warmup, ½(1 + cos π·(step − warmup)/(total_steps − warmup))).

    Args:
        learning_rate: float, peak learning rate.
        schedule: `"constant"`, `"noam"` or `"cosine"`.
        warmup: int, linear warm-up steps (0: none; noam needs >= 1).
        total_steps: int, the step at which `cosine` reaches 0 (> warmup; cosine only).

    Steps count from 0, as the optimizer's `iterations` do; step s is the (s+1)-th update.

    Example:
    >>> schedule = WarmupSchedule(1e-3, "noam", warmup=100)
    >>> round(float(schedule(99)), 8), round(float(schedule(399)), 8)  # peak, then 1e-3·√(100/400)
    (0.001, 0.0005)
    """

    def __init__(self, learning_rate, schedule="constant", warmup=0, total_steps=None):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not allowed; use one of {SCHEDULES}.")
        if warmup < 0 or (schedule == "noam" and warmup < 1):
            raise ValueError(f"warmup={warmup} is not allowed; use >= 0 (>= 1 for noam).")
        if schedule == "cosine" and (total_steps is None or total_steps <= warmup):
            raise ValueError(
                f"total_steps={total_steps} is not allowed for schedule='cosine'; use more steps "
                f"than warmup={warmup} (epochs × steps per epoch)."
            )
        self.learning_rate = float(learning_rate)
        self.schedule = schedule
        self.warmup = int(warmup)
        self.total_steps = None if total_steps is None else int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # the first update uses step 1
        if self.schedule == "cosine":
            ramp = step / self.warmup if self.warmup else 1.0
            progress = ops.clip((step - self.warmup) / (self.total_steps - self.warmup), 0.0, 1.0)
            decay = 0.5 * (1.0 + ops.cos(math.pi * progress))
            return self.learning_rate * ops.minimum(ramp, decay)
        if self.warmup == 0:
            return ops.convert_to_tensor(self.learning_rate, "float32")
        ramp = step / self.warmup
        decay = ops.sqrt(self.warmup / step) if self.schedule == "noam" else 1.0
        return self.learning_rate * ops.minimum(ramp, decay)

    def get_config(self):
        config = dict(learning_rate=self.learning_rate, schedule=self.schedule, warmup=self.warmup)
        if self.total_steps is not None:
            config["total_steps"] = self.total_steps
        return config
