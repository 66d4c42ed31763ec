"""kdet.training: MMDetection's recipes (LR schedules, SGD), distribution and resume."""
from kdet.training.schedules import (  # noqa: F401
    SCHEDULES, StepWarmupSchedule, num_epochs, step_schedule,
)
from kdet.training.optimizers import (  # noqa: F401
    REGNET_CLIP_NORM, REGNET_WEIGHT_DECAY, TorchSGD, loss_scale_optimizer, set_mixed_precision,
    sgd,
)
from kdet.training.distribute import (  # noqa: F401
    all_reduce_mean, all_reduce_sum, cluster_spec, enable_keras_multi_worker_fixes, is_chief,
    make_strategy, normalize_by_positives, num_replicas, positives_normalizer,
    scale_replica_mean, task_info, worker_dir,
)
from kdet.training.callbacks import BackupAndRestore, ensure_built, fit_callbacks  # noqa: F401
