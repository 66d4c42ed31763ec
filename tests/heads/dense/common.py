"""Shared fixtures of the dense-head tests: small FPN-like inputs and padded ground truth."""
import numpy as np
import tensorflow as tf

IMG = 128  # input size of the head tests (levels 16, 8, 4, 2, 1 for strides 8 .. 128)
STRIDES = (8, 16, 32, 64, 128)


def features(batch=2, channels=16, size=IMG, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(batch, size // s, size // s, channels)), tf.float32)
            for s in STRIDES]


def gt_one_box(batch=2, box=(20.0, 30.0, 70.0, 90.0), label=1, slots=3):
    """Image 0 holds one box, the other images none (padding label -1)."""
    boxes = np.zeros((batch, slots, 4), np.float32)
    labels = -np.ones((batch, slots), np.int32)
    boxes[0, 0], labels[0, 0] = box, label
    return {"boxes": tf.constant(boxes), "labels": tf.constant(labels),
            "ignore": tf.zeros((batch, slots), tf.bool)}


def gt_empty(batch=2, slots=3):
    return {"boxes": tf.zeros((batch, slots, 4)), "labels": -tf.ones((batch, slots), tf.int32),
            "ignore": tf.zeros((batch, slots), tf.bool)}


def img_shape(batch=2, size=IMG):
    return tf.fill([batch, 2], float(size))


def train_head_on(head, feats, gt, steps=15, lr=0.05):
    """Plain SGD on the head's variables; returns the list of total losses."""
    import keras
    opt = keras.optimizers.SGD(lr)
    totals = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            losses = head.loss(head(feats, training=True), gt, img_shape(feats[0].shape[0]))
            total = tf.add_n(list(losses.values()))
        grads = tape.gradient(total, head.trainable_variables)
        assert all(g is None or np.isfinite(g.numpy()).all() for g in grads)
        opt.apply([g if g is not None else tf.zeros_like(v)
                   for g, v in zip(grads, head.trainable_variables)], head.trainable_variables)
        totals.append(float(total))
    return totals


def max_score(head, feats):
    """Highest foreground probability over all anchors / classes."""
    out = head(feats)
    return max(float(tf.reduce_max(tf.sigmoid(c))) for c in out["cls_scores"])
