"""ImageClassifier: logits shape, serialisation, errors."""
import numpy as np
import pytest

import keras

from kdet.errors import KdetError
from kdet.models import ImageClassifier


def test_logits_and_roundtrip(tmp_path):
    m = ImageClassifier("regnety_400mf", num_classes=7)
    x = np.random.RandomState(0).randn(2, 64, 64, 3).astype("float32")
    y = m(x)
    assert tuple(y.shape) == (2, 7)
    path = tmp_path / "cls.keras"
    m.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(y), atol=1e-5)
    clone = ImageClassifier.from_config(m.get_config())
    assert clone.count_params() == m.count_params()


def test_torch_state_map_names():
    m = ImageClassifier("regnetx_400mf", num_classes=3)
    keys = m.torch_state_map()
    assert "backbone.layer1.0.conv1.weight" in keys and "head.fc.bias" in keys
    assert "backbone.bn1.running_var" in keys


def test_errors():
    with pytest.raises(KdetError, match="num_classes"):
        ImageClassifier("regnetx_400mf", num_classes=0)
    with pytest.raises(KdetError, match="unknown backbone"):
        ImageClassifier("regnetz_400mf")
    m = ImageClassifier("regnetx_400mf", num_classes=3)
    with pytest.raises(KdetError, match="input channels"):
        m(np.zeros((1, 32, 32, 1), "float32"))


def test_trains_one_step():
    m = ImageClassifier("regnetx_400mf", num_classes=4)
    m.compile(optimizer=keras.optimizers.SGD(0.1),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.RandomState(0).randn(4, 32, 32, 3).astype("float32")
    hist = m.fit(x, np.array([0, 1, 2, 3]), epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
