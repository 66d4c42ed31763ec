"""TorchSGD against torch.optim.SGD + clip_grad_norm_, and the mixed-precision helper."""
import keras
import numpy as np
import pytest

from kdet.errors import KdetError
from kdet.training import TorchSGD, loss_scale_optimizer, set_mixed_precision, sgd, step_schedule


def _run_kdet(opt, w0, grads_seq):
    vars_ = [keras.Variable(w, name=n) for n, w in w0]
    for grads in grads_seq:
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], vars_)
    return [v.numpy() for v in vars_]


def _run_torch(w0, grads_seq, lrs, momentum, wd, nesterov, no_decay, max_norm):
    torch = pytest.importorskip("torch", reason="torch (test-only reference) not installed")
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64)) for _, w in w0]
    groups = [{"params": [p], "weight_decay": 0.0 if n in no_decay else wd}
              for (n, _), p in zip(w0, params)]
    opt = torch.optim.SGD(groups, lr=lrs[0], momentum=momentum, nesterov=nesterov)
    for grads, lr in zip(grads_seq, lrs):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.torch
@pytest.mark.parametrize("nesterov,clip,decay_nb", [(False, None, True), (True, None, False),
                                                     (False, 0.5, False)])
def test_matches_torch_sgd_across_a_lr_drop(nesterov, clip, decay_nb):
    rng = np.random.default_rng(0)
    w0 = [("kernel", rng.normal(size=(3, 4)).astype(np.float32)),
          ("bias", rng.normal(size=(4,)).astype(np.float32)),
          ("gamma", rng.normal(size=(4,)).astype(np.float32))]
    grads_seq = [[rng.normal(size=w.shape).astype(np.float32) for _, w in w0] for _ in range(6)]
    # Rates of a step schedule: warmup then a x0.1 drop at iteration 4 -- the case where
    # torch's and Keras' momentum formulations part ways.
    sch = step_schedule(0.1, 2, [2], warmup_iters=3, warmup_ratio=0.1)
    lrs = [float(sch(i)) for i in range(6)]
    opt = TorchSGD(learning_rate=sch, momentum=0.9, weight_decay=0.05, nesterov=nesterov,
                   decay_norm_and_bias=decay_nb, clip_global_norm=clip)
    got = _run_kdet(opt, w0, grads_seq)
    no_decay = () if decay_nb else ("bias", "gamma")
    want = _run_torch(w0, grads_seq, lrs, 0.9, 0.05, nesterov, no_decay, clip)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # Keras' own SGD (decoupled decay, lr inside the velocity) lands elsewhere.
    ref = _run_kdet(keras.optimizers.SGD(sch, momentum=0.9, weight_decay=0.05), w0, grads_seq)
    assert not np.allclose(ref[0], want[0], atol=1e-4)


def test_norm_and_bias_are_found_in_a_real_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    opt = sgd(0.01, decay_norm_and_bias=False, weight_decay=1e-4)
    opt.build(model.trainable_variables)
    decayed = sorted(v.path for v in model.trainable_variables if opt.decays(v))
    assert decayed == sorted(v.path for v in model.trainable_variables if v.name == "kernel")
    opt2 = sgd(0.01)
    opt2.build(model.trainable_variables)
    assert all(opt2.decays(v) for v in model.trainable_variables)


def test_serialisation_round_trip():
    opt = sgd(step_schedule(0.02, 100, "2x"), weight_decay=5e-5, clip_global_norm=35.0,
              decay_norm_and_bias=False)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, TorchSGD)
    for key in ("momentum", "weight_decay", "clip_global_norm", "decay_norm_and_bias"):
        assert again.get_config()[key] == opt.get_config()[key]


def test_mixed_precision_policy_and_loss_scaling():
    try:
        assert set_mixed_precision("fp16") == "mixed_float16"
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer=sgd(0.01), loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.layers[0].compute_dtype == "float16"
        model.fit(np.ones((4, 4), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0)
        assert set_mixed_precision("bf16") == "mixed_bfloat16"
    finally:
        set_mixed_precision(None)
    assert keras.mixed_precision.global_policy().name == "float32"
    wrapped = loss_scale_optimizer(sgd(0.01))
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert loss_scale_optimizer(wrapped) is wrapped


def test_bad_arguments():
    with pytest.raises(KdetError, match="clip_global_norm instead"):
        TorchSGD(0.01, global_clipnorm=1.0)
    with pytest.raises(KdetError, match="momentum"):
        sgd(0.01, momentum=1.5)
    with pytest.raises(KdetError, match="weight_decay"):
        sgd(0.01, weight_decay=-1)
    with pytest.raises(KdetError, match="clip_global_norm"):
        sgd(0.01, clip_global_norm=0)
    with pytest.raises(KdetError, match="precision"):
        set_mixed_precision("int8")
