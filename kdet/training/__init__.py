"""kdet.training: MMDetection's recipes (LR schedules, SGD), distribution and resume."""
from kdet.training.schedules import (  # noqa: F401
    SCHEDULES, StepWarmupSchedule, num_epochs, step_schedule,
)
from kdet.training.optimizers import (  # noqa: F401
    REGNET_CLIP_NORM, REGNET_WEIGHT_DECAY, TorchSGD, loss_scale_optimizer, set_mixed_precision,
    sgd,
)
