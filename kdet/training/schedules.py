"""MMDetection's step learning-rate schedules with linear warmup, as Keras schedules.

mmcv ``StepLrUpdaterHook(by_epoch=True)`` + ``warmup='linear'``: at global iteration
``i`` (0-based, = ``optimizer.iterations`` when Keras asks for the rate),

    epoch      = i // steps_per_epoch
    regular_lr = base_lr * gamma ** (number of milestones <= epoch)
    lr         = regular_lr * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))  if i < warmup_iters
               = regular_lr                                                      otherwise
"""
import keras
from keras import ops

from kdet.errors import KdetError

# name -> (max_epochs, milestone epochs). Sources (mmdetection v2.x configs):
#   1x  : _base_/schedules/schedule_1x.py          step=[8, 11],  total_epochs=12
#   1.5x: paa/paa_r50_fpn_1.5x_coco.py             step=[12, 16], max_epochs=18
#   2x  : _base_/schedules/schedule_2x.py          step=[16, 22], total_epochs=24
#   20e : _base_/schedules/schedule_20e.py         step=[16, 19], total_epochs=20
#   3x  : common/mstrain_3x_coco*.py (used by the RegNet mstrain-3x configs): 12 epochs
#         of RepeatDataset(times=3) with step=[9, 11], i.e. 36 epochs stepping after
#         27 and 33. (Older per-model 3x configs, e.g. the first RegNet mstrain_3x,
#         used step=[28, 34]: pass {"max_epochs": 36, "step": [28, 34]} for those.)
SCHEDULES = {
    "1x": (12, (8, 11)),
    "1.5x": (18, (12, 16)),
    "2x": (24, (16, 22)),
    "20e": (20, (16, 19)),
    "3x": (36, (27, 33)),
}
WARMUPS = ("linear", "constant", "exp", None)


def _parse(schedule):
    """schedule -> (max_epochs or None, tuple of milestone epochs)."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise KdetError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}, a list "
                            "of milestone epochs, or {'max_epochs': E, 'step': [...]}")
        return SCHEDULES[schedule]
    if isinstance(schedule, dict):
        if "step" not in schedule:
            raise KdetError(f"schedule dict needs a 'step' list of epochs, got {schedule}")
        epochs, steps = schedule.get("max_epochs"), schedule["step"]
    elif isinstance(schedule, (list, tuple)):
        epochs, steps = None, schedule
    else:
        raise KdetError(f"schedule must be a name, a list of epochs or a dict, got {schedule!r}")
    steps = tuple(int(s) for s in steps)
    if any(s <= 0 for s in steps) or list(steps) != sorted(steps):
        raise KdetError(f"schedule steps must be increasing positive epochs, got {list(steps)}")
    if epochs is not None and (int(epochs) <= 0 or (steps and steps[-1] > int(epochs))):
        raise KdetError(f"max_epochs={epochs} must be positive and >= the last step {steps}")
    return (None if epochs is None else int(epochs)), steps


def num_epochs(schedule):
    """Training length in epochs of a schedule: ``num_epochs("1x") == 12``."""
    epochs, steps = _parse(schedule)
    if epochs is None:
        raise KdetError(f"a bare step list {list(steps)} does not say how long to train; pass "
                        "{'max_epochs': E, 'step': [...]}")
    return epochs


@keras.saving.register_keras_serializable(package="kdet")
class StepWarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Epoch-based step decay with iteration-based warmup (mmcv semantics, see module doc).

    Args:
      base_lr: learning rate after warmup, before any decay (mmdet: 0.02 for 16 images
        per batch, scaled linearly with the batch size).
      steps_per_epoch: optimizer steps in one epoch.
      milestones: epochs (0-based epoch index at which the decay applies, mmcv's
        ``step``) where the rate is multiplied by ``gamma``.
      gamma: decay factor (0.1).
      warmup: ``"linear"`` (mmdet default), ``"constant"``, ``"exp"`` or None.
      warmup_iters: warmup length in iterations (500).
      warmup_ratio: rate at iteration 0 relative to the regular rate (0.001).
    """

    def __init__(self, base_lr, steps_per_epoch, milestones=(8, 11), gamma=0.1,
                 warmup="linear", warmup_iters=500, warmup_ratio=0.001):
        if warmup not in WARMUPS:
            raise KdetError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
        if int(steps_per_epoch) <= 0:
            raise KdetError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        if warmup is not None and (int(warmup_iters) <= 0 or not 0 < warmup_ratio <= 1):
            raise KdetError(f"warmup needs warmup_iters > 0 and 0 < warmup_ratio <= 1, got "
                            f"{warmup_iters}, {warmup_ratio}")
        if float(base_lr) <= 0:
            raise KdetError(f"base_lr must be positive, got {base_lr}")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup = warmup
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        epoch = ops.floor(step / float(self.steps_per_epoch))
        exponent = ops.zeros_like(step)
        for m in self.milestones:
            exponent = exponent + ops.cast(epoch >= float(m), "float32")
        lr = self.base_lr * ops.power(self.gamma, exponent)
        if self.warmup is None:
            return lr
        progress = step / float(self.warmup_iters)
        if self.warmup == "linear":
            # = 1 - (1 - progress) * (1 - ratio), mmcv's form, without float32 cancellation
            factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * progress
        elif self.warmup == "constant":
            factor = ops.full_like(step, self.warmup_ratio)
        else:  # exp
            factor = ops.power(self.warmup_ratio, 1.0 - progress)
        return ops.where(step < float(self.warmup_iters), lr * factor, lr)

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup": self.warmup, "warmup_iters": self.warmup_iters,
                "warmup_ratio": self.warmup_ratio}


def step_schedule(base_lr, steps_per_epoch, schedule="1x", warmup_iters=500,
                  warmup_ratio=0.001, gamma=0.1, warmup="linear"):
    """MMDetection's ``lr_config`` as a Keras schedule.

    ``schedule`` is ``"1x"`` (12 epochs, x0.1 at 8 and 11), ``"1.5x"`` (18; 12, 16),
    ``"2x"`` (24; 16, 22), ``"20e"`` (20; 16, 19), ``"3x"`` (36; 27, 33), a list of
    milestone epochs, or ``{"max_epochs": E, "step": [...]}``. Train for
    ``num_epochs(schedule)`` epochs of ``steps_per_epoch`` steps.
    """
    _, milestones = _parse(schedule)
    return StepWarmupSchedule(base_lr, steps_per_epoch, milestones, gamma=gamma, warmup=warmup,
                              warmup_iters=warmup_iters, warmup_ratio=warmup_ratio)
