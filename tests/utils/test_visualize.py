"""draw_detections / save_grid: boxes and pasted masks land on the right pixels."""
import numpy as np
import pytest

from kdet.errors import KdetError
from kdet.utils.visualize import PALETTE, denormalize, draw_detections, save_grid


def test_draws_box_and_mask(tmp_path):
    image = np.zeros([40, 50, 3], np.uint8)
    boxes = np.array([[10, 5, 30, 25], [0, 0, 5, 5]], np.float32)
    masks = np.ones([2, 28, 28], np.float32)
    out = np.asarray(draw_detections(image, boxes, np.array([1, -1]), np.array([0.9, 0.9]),
                                     masks, class_names=["a", "b"], alpha=0.5))
    colour = np.asarray(PALETTE[1])
    inside = out[22, 26].astype(int)  # mask-tinted interior (away from the label text)
    np.testing.assert_allclose(inside, colour * 0.5, atol=1)
    np.testing.assert_array_equal(out[5, 20], colour)  # top edge of the box
    assert not out[35:, :].any()  # outside everything stays black
    assert not out[1, 1].any()  # padding detection (label -1) not drawn
    path = save_grid([draw_detections(image, boxes[:0], [], [])] * 3, str(tmp_path / "g.png"),
                     columns=2)
    from PIL import Image
    assert Image.open(path).size == (100, 80)


def test_denormalize_and_errors():
    pre = {"mean": [10, 20, 30], "std": [2, 2, 2], "to_rgb": True}
    img = denormalize(np.zeros([2, 2, 3]), pre)
    assert img.dtype == np.uint8 and img[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(KdetError, match="RGB"):
        draw_detections(np.zeros([4, 4]), np.zeros([0, 4]), [], [])
