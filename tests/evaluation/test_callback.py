"""COCOEvalCallback inside model.fit: a fake detector that predicts the ground truth."""
import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import IMAGES, gt_masks
from kdet.errors import KdetError
from kdet.evaluation import COCOEvalCallback, order_callbacks

CAT_IDS = [1, 3, 7]
SIZE = 80        # network input: every image at scale 1, padded to 80x80
MAX_GT = 4


def _tables(coco_dict):
    """Per image: padded gt boxes [I, N, 4], labels [I, N], full-size masks [I, N, 80, 80]."""
    n = len(IMAGES)
    boxes = np.zeros((n, MAX_GT, 4), np.float32)
    labels = np.full((n, MAX_GT), -1, np.int32)
    masks = np.zeros((n, MAX_GT, SIZE, SIZE), np.float32)
    for i, img in enumerate(IMAGES):
        mk, anns = gt_masks(coco_dict, img["id"])
        for j, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            boxes[i, j] = [x, y, x + w, y + h]
            labels[i, j] = CAT_IDS.index(a["category_id"])
            masks[i, j, :img["height"], :img["width"]] = mk[j]
    return boxes, labels, masks


def _dataset(coco_dict, batch_size=2):
    boxes, labels, _ = _tables(coco_dict)
    n = len(IMAGES)
    images = np.zeros((n, SIZE, SIZE, 3), np.float32)
    images[:, 0, 0, 0] = np.arange(n)          # the fake model reads the row index here
    gt = {"boxes": boxes, "labels": labels,
          "image_id": np.array([im["id"] for im in IMAGES], np.int64),
          "orig_size": np.array([[im["height"], im["width"]] for im in IMAGES], np.int32),
          "img_shape": np.array([[im["height"], im["width"]] for im in IMAGES], np.int32),
          "scale_factor": np.ones((n, 2), np.float32)}
    return tf.data.Dataset.from_tensor_slices((images, gt)).batch(batch_size)


class GroundTruthDetector(keras.Model):
    """Trains a throwaway Dense layer; predicts the ground truth stored in tables."""

    def __init__(self, boxes, labels, masks):
        super().__init__()
        self.head = keras.layers.Dense(1)
        self._boxes = tf.constant(boxes)
        self._labels = tf.constant(labels)
        self._masks = tf.constant(masks)

    def call(self, images):
        return self.head(tf.reduce_mean(images, axis=[1, 2]))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.reduce_mean(tf.square(y_pred - 1.0))

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        idx = tf.cast(images[:, 0, 0, 0], tf.int32)
        labels = tf.gather(self._labels, idx)
        return {"boxes": tf.gather(self._boxes, idx),
                "scores": tf.where(labels >= 0, 0.9, 0.0),
                "labels": labels,
                "num_detections": tf.reduce_sum(tf.cast(labels >= 0, tf.int32), axis=1),
                "masks": tf.gather(self._masks, idx)}


def test_fit_logs_coco_metrics_for_history_and_csvlogger(tmp_path, ann_file, coco_dict):
    model = GroundTruthDetector(*_tables(coco_dict))
    model.compile(optimizer="sgd")
    ds = _dataset(coco_dict)
    csv_path = tmp_path / "log.csv"
    cb = COCOEvalCallback(ds, ann_file, iou_types=("bbox", "segm"), interval=2, verbose=0,
                          outfile_prefix=str(tmp_path / "res" / "epoch{epoch}"))
    # Deliberately misordered: the CSVLogger first; order_callbacks fixes it.
    callbacks = order_callbacks([keras.callbacks.CSVLogger(str(csv_path)), cb])
    assert callbacks[0] is cb
    hist = model.fit(ds, epochs=2, callbacks=callbacks, verbose=0)
    assert "val_bbox_mAP" in hist.history and "val_segm_mAP" in hist.history
    # interval=2: epoch 1 is not evaluated (NaN keeps the CSV columns), epoch 2 is.
    assert np.isnan(hist.history["val_bbox_mAP"][0])
    assert hist.history["val_bbox_mAP"][1] == pytest.approx(1.0)
    assert hist.history["val_segm_mAP"][-1] == pytest.approx(1.0)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 2 and float(rows[1]["val_bbox_AR@100"]) == pytest.approx(1.0)
    assert (tmp_path / "res" / "epoch2.bbox.json").exists()
    assert (tmp_path / "res" / "epoch2.segm.json").exists()
    assert not (tmp_path / "res" / "epoch1.bbox.json").exists()


def test_bad_interval_and_dataset(ann_file, coco_dict):
    with pytest.raises(KdetError, match="interval"):
        COCOEvalCallback([], ann_file, interval=0)
    cb = COCOEvalCallback([np.zeros((1, 8, 8, 3))], ann_file, verbose=0)
    cb.set_model(GroundTruthDetector(*_tables(coco_dict)))
    with pytest.raises(KdetError, match=r"\(images, gt\)"):
        cb.evaluate()
