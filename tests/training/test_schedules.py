"""Step schedules with linear warmup: mmcv's formulas, MMDetection's epoch tables."""
import keras
import numpy as np
import pytest

from kdet.errors import KdetError
from kdet.training import StepWarmupSchedule, num_epochs, step_schedule


def _mmcv_lr(i, base_lr, steps_per_epoch, steps, warmup_iters=500, ratio=0.001, gamma=0.1):
    """mmcv StepLrUpdaterHook(by_epoch=True, warmup='linear'), written from its source."""
    epoch = i // steps_per_epoch
    exp = len(steps)
    for k, s in enumerate(steps):
        if epoch < s:
            exp = k
            break
    regular = base_lr * gamma ** exp
    if i < warmup_iters:
        k = (1 - i / warmup_iters) * (1 - ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("name,epochs,steps", [("1x", 12, [8, 11]), ("1.5x", 18, [12, 16]),
                                               ("2x", 24, [16, 22]), ("3x", 36, [27, 33]),
                                               ("20e", 20, [16, 19])])
def test_named_schedules_follow_mmcv(name, epochs, steps):
    spe = 37
    sch = step_schedule(0.02, spe, name)
    assert num_epochs(name) == epochs
    its = np.unique(np.concatenate([np.arange(0, 600, 7), [499, 500, 501],
                                    [s * spe - 1 for s in steps], [s * spe for s in steps],
                                    [epochs * spe - 1]]))
    got = np.asarray(sch(its))   # the schedule is elementwise: all iterations at once
    want = np.array([_mmcv_lr(int(i), 0.02, spe, steps) for i in its])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[0] == pytest.approx(0.02 * 0.001, rel=1e-4)
    assert got[-1] == pytest.approx(0.02 * 0.01, rel=1e-5)


def test_warmup_longer_than_an_epoch_multiplies_the_decayed_rate():
    sch = step_schedule(0.01, 10, [1], warmup_iters=50)
    for i in (5, 15, 49, 50):
        assert float(sch(i)) == pytest.approx(_mmcv_lr(i, 0.01, 10, [1], warmup_iters=50), rel=1e-5)


def test_custom_schedule_and_serialisation():
    sch = step_schedule(0.02, 100, {"max_epochs": 36, "step": [28, 34]}, warmup_iters=1000)
    assert num_epochs({"max_epochs": 36, "step": [28, 34]}) == 36
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sch))
    assert isinstance(again, StepWarmupSchedule)
    assert again.get_config() == sch.get_config()
    for i in (0, 999, 2800, 3400):
        assert float(again(i)) == pytest.approx(float(sch(i)))
    opt = keras.optimizers.SGD(learning_rate=sch)
    opt2 = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert float(opt2.learning_rate) == pytest.approx(float(sch(0)))


def test_no_warmup_and_other_warmups():
    assert float(step_schedule(0.02, 10, "1x", warmup=None)(0)) == pytest.approx(0.02)
    assert float(step_schedule(0.02, 10, "1x", warmup="constant")(3)) == pytest.approx(2e-5)
    assert float(step_schedule(0.02, 10, "1x", warmup="exp")(0)) == pytest.approx(2e-5)


def test_bad_schedules():
    with pytest.raises(KdetError, match="unknown schedule"):
        step_schedule(0.02, 10, "4x")
    with pytest.raises(KdetError, match="increasing"):
        step_schedule(0.02, 10, [11, 8])
    with pytest.raises(KdetError, match="does not say how long"):
        num_epochs([8, 11])
    with pytest.raises(KdetError, match="steps_per_epoch"):
        step_schedule(0.02, 0, "1x")
    with pytest.raises(KdetError, match="warmup"):
        step_schedule(0.02, 10, "1x", warmup="cosine")
    with pytest.raises(KdetError, match="max_epochs"):
        num_epochs({"max_epochs": 10, "step": [8, 11]})
