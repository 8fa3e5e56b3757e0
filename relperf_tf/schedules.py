"""Learning-rate schedules: linear warm-up, then constant or lr·√(warmup/step) (`noam`)."""

import keras
from keras import ops

SCHEDULES = ("constant", "noam")


@keras.saving.register_keras_serializable(package="relperf_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`constant`: lr·min(1, step/warmup); `noam`: lr·min(step/warmup, √(warmup/step)).

    Args:
        learning_rate: float, peak learning rate.
        schedule: `"constant"` or `"noam"`.
        warmup: int, linear warm-up steps (0: none; noam needs >= 1).

    Example:
    >>> float(WarmupSchedule(1e-3, "noam", 100)(400))
    0.0005
    """

    def __init__(self, learning_rate, schedule="constant", warmup=0):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not allowed; use one of {SCHEDULES}.")
        if warmup < 0 or (schedule == "noam" and warmup < 1):
            raise ValueError(f"warmup={warmup} is not allowed; use >= 0 (>= 1 for noam).")
        self.learning_rate = float(learning_rate)
        self.schedule = schedule
        self.warmup = int(warmup)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # the first update uses step 1
        if self.warmup == 0:
            return ops.convert_to_tensor(self.learning_rate, "float32")
        ramp = step / self.warmup
        decay = ops.sqrt(self.warmup / step) if self.schedule == "noam" else 1.0
        return self.learning_rate * ops.minimum(ramp, decay)

    def get_config(self):
        return dict(learning_rate=self.learning_rate, schedule=self.schedule, warmup=self.warmup)
