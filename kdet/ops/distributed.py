"""Cross-replica reductions for losses under ``tf.distribute`` (used by heads and models).

Lives in ``kdet.ops`` so heads may use it (DESIGN.md import direction: heads cannot import
``kdet.training``); ``kdet.training.distribute`` re-exports it and documents the scheme.
"""
import tensorflow as tf

from kdet.errors import KdetError


def num_replicas():
    """Replicas of the current strategy (1 outside any strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(x):
    """Sum of ``x`` over all replicas (inside ``train_step``); identity with one replica."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise KdetError("all_reduce_sum must be called in a replica context (inside "
                        "train_step / compute_loss), not in strategy.scope() code")
    if ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def all_reduce_mean(x):
    """Mean of ``x`` over replicas (mmdet's ``reduce_mean``)."""
    n = num_replicas()
    s = all_reduce_sum(x)
    return s if n == 1 else s / tf.cast(n, s.dtype)


def positives_normalizer(num_pos, min_value=1.0):
    """mmdet's ``max(reduce_mean(num_pos), min_value)``: this replica's count ``num_pos``
    (scalar, any numeric dtype; no gradient flows) averaged over all replicas."""
    num_pos = tf.stop_gradient(tf.cast(num_pos, tf.float32))
    return tf.maximum(all_reduce_mean(num_pos), min_value)


def normalize_by_positives(loss_sum, num_pos, min_value=1.0):
    """``loss_sum / max(mean over replicas of num_pos, min_value)``: the per-GPU loss of
    mmdet heads that call ``reduce_mean(num_pos)``. With the total divided by R before the
    gradient (``scale_replica_mean``), R replicas train like one device on the global
    batch: ``sum_r loss_r / (R * mean_pos) = total loss / total positives``."""
    loss_sum = tf.convert_to_tensor(loss_sum)
    return loss_sum / tf.cast(positives_normalizer(num_pos, min_value), loss_sum.dtype)


def scale_replica_mean(loss):
    """A replica's loss -> its share of the average over replicas (``/ R``): what DDP's
    gradient averaging does, given that the optimizer sums replicas' gradients."""
    n = num_replicas()
    loss = tf.convert_to_tensor(loss)
    return loss if n == 1 else loss / tf.cast(n, loss.dtype)
