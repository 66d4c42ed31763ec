"""PyTorch-semantics SGD (what every MMDetection config trains with) and mixed precision.

``torch.optim.SGD`` differs from ``keras.optimizers.SGD`` in two ways that matter for
reproducing MMDetection recipes:

* weight decay is L2 added to the gradient (``g += wd * w``) before momentum; Keras'
  ``weight_decay`` is decoupled (``w -= lr * wd * w``, outside momentum);
* the momentum buffer holds gradients, and the learning rate multiplies the update
  (``buf = mu * buf + g; w -= lr * buf``); Keras keeps ``v = mu * v - lr * g``, so a
  step decay of the rate changes the two differently.

Gradient clipping follows ``torch.nn.utils.clip_grad_norm_`` (mmcv ``OptimizerHook``
``grad_clip=dict(max_norm=35, norm_type=2)``): the gradients of all variables are
scaled by ``min(1, max_norm / (global_norm + 1e-6))``, before weight decay. Under
``tf.distribute`` the clipping is applied to the all-reduced (global) gradient, like
mmdet under DDP; Keras' own ``global_clipnorm`` clips each replica's local gradient.
"""
import re

import keras

from kdet.errors import KdetError

# Variable names of normalisation parameters and biases (Keras: BatchNormalization /
# GroupNormalization / LayerNormalization "gamma", "beta"; Dense / Conv "bias"); mmdet's
# paramwise_cfg(norm_decay_mult=0, bias_decay_mult=0) equivalent.
NORM_AND_BIAS_NAMES = ("bias", "beta", "gamma")
# Weight decay of the RegNet configs (seeds' notice: 5e-5 "according to the setting in
# ImageNet training"); all other mmdet configs use 1e-4.
REGNET_WEIGHT_DECAY = 5e-5
# max_norm of the RegNet RetinaNet / mstrain configs' grad_clip.
REGNET_CLIP_NORM = 35.0


@keras.saving.register_keras_serializable(package="kdet")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with ``torch.optim.SGD`` semantics (dampening 0), L2 weight decay and
    ``clip_grad_norm_``-style global clipping.

    Args:
      learning_rate: float or schedule (e.g. :func:`kdet.training.step_schedule`).
      momentum: momentum factor (0.9 in mmdet).
      weight_decay: L2 coefficient added to the gradient (1e-4; 5e-5 for RegNet).
      nesterov: Nesterov momentum (torch's formulation).
      decay_norm_and_bias: if False, variables named ``bias``/``beta``/``gamma`` get no
        weight decay.
      no_decay_names: extra regular expressions; a variable whose path matches one
        gets no weight decay.
      clip_global_norm: max global L2 norm of the gradients (mmdet ``max_norm``), or None.
      **kwargs: other ``keras.optimizers.Optimizer`` arguments (``name``,
        ``loss_scale_factor``, ``gradient_accumulation_steps``, ``use_ema``, ...).
    """

    def __init__(self, learning_rate=0.02, momentum=0.9, weight_decay=1e-4, nesterov=False,
                 decay_norm_and_bias=True, no_decay_names=(), clip_global_norm=None,
                 name="torch_sgd", **kwargs):
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if kwargs.get(key) is not None:
                raise KdetError(f"TorchSGD: use clip_global_norm instead of {key} (Keras clips "
                                "per replica, before the cross-replica gradient sum)")
            kwargs.pop(key, None)
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise KdetError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay is not None and weight_decay < 0:
            raise KdetError(f"weight_decay must be >= 0, got {weight_decay}")
        if clip_global_norm is not None and clip_global_norm <= 0:
            raise KdetError(f"clip_global_norm must be positive, got {clip_global_norm}")
        if nesterov and momentum == 0:
            raise KdetError("nesterov momentum requires momentum > 0")
        self.momentum = float(momentum)
        self.l2 = float(weight_decay or 0.0)
        self.nesterov = bool(nesterov)
        self.decay_norm_and_bias = bool(decay_norm_and_bias)
        self.no_decay_names = tuple(no_decay_names)
        self.clip_global_norm = None if clip_global_norm is None else float(clip_global_norm)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum > 0:
            self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]
        patterns = list(self.no_decay_names)
        if not self.decay_norm_and_bias:
            patterns += [rf"(^|/){n}$" for n in NORM_AND_BIAS_NAMES]
        regex = re.compile("|".join(patterns)) if patterns else None
        self._no_decay = set()
        for v in variables:
            path = getattr(v, "path", None) or v.name
            if regex is not None and (regex.search(path) or regex.search(v.name)):
                self._no_decay.add(self._var_key(v))

    def decays(self, variable):
        """Whether ``variable`` receives weight decay (after ``build``)."""
        return self.l2 > 0 and self._var_key(variable) not in self._no_decay

    def update_step(self, gradient, variable, learning_rate):
        lr = keras.ops.cast(learning_rate, variable.dtype)
        g = keras.ops.cast(gradient, variable.dtype)
        if self.decays(variable):
            g = g + keras.ops.cast(self.l2, variable.dtype) * variable
        if self.momentum > 0:
            buf = self.momentums[self._get_variable_index(variable)]
            mu = keras.ops.cast(self.momentum, variable.dtype)
            self.assign(buf, mu * buf + g)
            g = g + mu * buf if self.nesterov else buf
        self.assign_sub(variable, lr * g)

    def _clip(self, grads):
        if self.clip_global_norm is None:
            return grads
        present = [g for g in grads if g is not None]
        if not present:
            return grads
        total = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(keras.ops.cast(g, "float32")))
                                   for g in present))
        coef = keras.ops.minimum(self.clip_global_norm / (total + 1e-6), 1.0)
        return [None if g is None else g * keras.ops.cast(coef, g.dtype) for g in grads]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() != "tensorflow":
            return super()._backend_update_step(self._clip(grads), trainable_variables,
                                                learning_rate)
        import tensorflow as tf
        # Keras' TF optimizer: all-reduce (sum) gradients across replicas, then update
        # each variable in cross-replica context. Clip between the two, on the global
        # gradient.
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        clipped = self._clip([g for g, _ in grads_and_vars])
        grads_and_vars = list(zip(clipped, [v for _, v in grads_and_vars]))
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy, grads_and_vars,
            learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.l2,
                       "nesterov": self.nesterov,
                       "decay_norm_and_bias": self.decay_norm_and_bias,
                       "no_decay_names": list(self.no_decay_names),
                       "clip_global_norm": self.clip_global_norm})
        return config


def sgd(learning_rate, momentum=0.9, weight_decay=1e-4, nesterov=False,
        decay_norm_and_bias=True, clip_global_norm=None, no_decay_names=(), **kwargs):
    """MMDetection's ``optimizer=dict(type='SGD', lr, momentum=0.9, weight_decay=1e-4)``
    (+ ``optimizer_config.grad_clip.max_norm`` as ``clip_global_norm``) -> :class:`TorchSGD`.

    RegNet configs: ``weight_decay=REGNET_WEIGHT_DECAY`` (5e-5) and
    ``clip_global_norm=REGNET_CLIP_NORM`` (35).
    """
    return TorchSGD(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
                    nesterov=nesterov, decay_norm_and_bias=decay_norm_and_bias,
                    no_decay_names=no_decay_names, clip_global_norm=clip_global_norm,
                    **kwargs)


PRECISIONS = {None: "float32", False: "float32", "float32": "float32", "fp32": "float32",
              True: "mixed_float16", "fp16": "mixed_float16", "mixed_float16": "mixed_float16",
              "bf16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16"}


def set_mixed_precision(policy="mixed_float16"):
    """Sets the global Keras dtype policy; returns its name.

    ``"mixed_float16"`` (True, ``"fp16"``; mmdet's ``fp16 = dict(loss_scale=512.)``
    counterpart), ``"mixed_bfloat16"`` (``"bf16"``) or ``"float32"`` (None/False).
    Build the model after calling this. With ``mixed_float16``, ``Model.compile``
    wraps the optimizer in a dynamic ``keras.optimizers.LossScaleOptimizer``
    (``auto_scale_loss=True``); :func:`loss_scale_optimizer` does it explicitly.
    """
    if policy not in PRECISIONS:
        raise KdetError(f"unknown precision {policy!r}; use one of "
                        f"{sorted(str(k) for k in PRECISIONS)}")
    name = PRECISIONS[policy]
    keras.mixed_precision.set_global_policy(name)
    return name


def loss_scale_optimizer(optimizer, initial_scale=2.0 ** 15, dynamic_growth_steps=2000):
    """Wraps ``optimizer`` for float16 training with dynamic loss scaling (Keras)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=initial_scale,
                                               dynamic_growth_steps=dynamic_growth_steps)
