"""Small two-stage models and data for the Faster / Mask R-CNN tests (64x64 images)."""
import numpy as np
import tensorflow as tf

IMG = 64
NUM_CLASSES = 3


def small_kwargs():
    """RegNetX-400MF with narrow heads and few RoIs: fast enough for the default suite."""
    return dict(backbone="regnetx_400mf", num_classes=NUM_CLASSES,
                backbone_kwargs=dict(frozen_stages=-1, norm_eval=False),
                neck=dict(out_channels=16), rpn_head=dict(feat_channels=16),
                roi_head=dict(fc_out_channels=32, mask_conv_channels=16),
                train_cfg=dict(rpn_proposal=dict(nms_pre=100, max_per_img=50),
                               rcnn=dict(sampler=dict(num=32))),
                test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=50),
                              rcnn=dict(max_per_img=20)))


def batch(b=2, with_masks=False, empty=False, seed=0):
    """(images [b, 64, 64, 3], gt) with one or two objects per image (none when empty)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=[b, IMG, IMG, 3]).astype("float32")
    boxes = np.zeros([b, 3, 4], "float32")
    labels = -np.ones([b, 3], "int32")
    masks = np.zeros([b, 3, IMG, IMG], "uint8")
    if not empty:
        for i in range(b):
            for j in range(1 + i % 2):
                x0, y0 = rng.integers(0, 30, 2)
                w, h = rng.integers(12, 30, 2)
                boxes[i, j] = [x0, y0, x0 + w, y0 + h]
                labels[i, j] = (i + j) % NUM_CLASSES
                masks[i, j, y0:y0 + h, x0:x0 + w] = 1
                images[i, y0:y0 + h, x0:x0 + w, labels[i, j]] += 2.0
    gt = {"boxes": tf.constant(boxes), "labels": tf.constant(labels),
          "img_shape": tf.constant([[IMG, IMG]] * b, tf.int32)}
    if with_masks:
        gt["masks"] = tf.constant(masks)
    return tf.constant(images), gt


def dataset(b=2, with_masks=False):
    images, gt = batch(b, with_masks)
    return tf.data.Dataset.from_tensors((images, gt)).repeat()
