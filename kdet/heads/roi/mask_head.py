"""``FCNMaskHead``: the Mask R-CNN mask head (MMDetection v2 ``FCNMaskHead``,
mmdet/models/roi_heads/mask_heads/fcn_mask_head.py).

RoI features [K, 14, 14, C] -> ``convs.{0..3}`` (3x3, 256, ReLU) -> ``upsample`` (2x2
transposed conv, stride 2, ReLU) -> ``conv_logits`` (1x1, one channel per class) ->
[K, 28, 28, num_classes] logits.

Targets (mmdet ``mask_target`` with ``BitmapMasks.crop_and_resize``): the gt bitmap of each
positive RoI's matched object is RoIAligned (``aligned=True``, adaptive sampling) to 28x28 at
the RoI and binarised at >= 0.5. Loss: per-pixel sigmoid BCE on the gt class's channel, mean
over the positive RoIs' pixels (``CrossEntropyLoss(use_mask=True)``, weight 1).
"""
import keras
import tensorflow as tf

from kdet.errors import KdetError
from kdet.layers.torch_layout import conv_transpose, layer_params
from kdet.losses import mask_cross_entropy
from kdet.ops import roi_align


@keras.saving.register_keras_serializable(package="kdet")
class FCNMaskHead(keras.layers.Layer):
    """Class-specific FCN mask head.

    Args:
        num_classes: foreground classes.
        num_convs: 3x3 convs before upsampling (4).
        in_channels: RoI feature channels (256).
        conv_out_channels: conv width (256).
        roi_feat_size: RoI side (14); the output is twice that (28).
        class_agnostic: one mask for every class (False).
        loss_weight: mask loss weight (1.0).
    Call:
        roi_feats [K, S, S, C] -> logits [K, 2S, 2S, num_classes (or 1)].
    """

    def __init__(self, num_classes, num_convs=4, in_channels=256, conv_out_channels=256,
                 roi_feat_size=14, class_agnostic=False, loss_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise KdetError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.num_convs = int(num_convs)
        self.in_channels = int(in_channels)
        self.conv_out_channels = int(conv_out_channels)
        self.roi_feat_size = int(roi_feat_size)
        self.class_agnostic = bool(class_agnostic)
        self.loss_weight = float(loss_weight)
        # mmcv ConvModule / mmdet init: kaiming normal, fan_out, ReLU gain; zero bias.
        kaiming = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        self.convs = [keras.layers.Conv2D(self.conv_out_channels, 3, padding="same",
                                          activation="relu", kernel_initializer=kaiming,
                                          name=f"convs.{i}.conv", dtype=self.dtype_policy)
                      for i in range(self.num_convs)]
        self.upsample = keras.layers.Conv2DTranspose(
            self.conv_out_channels, 2, strides=2, activation="relu", kernel_initializer=kaiming,
            name="upsample", dtype=self.dtype_policy)
        self.out_channels = 1 if self.class_agnostic else self.num_classes
        self.conv_logits = keras.layers.Conv2D(self.out_channels, 1, kernel_initializer=kaiming,
                                               name="conv_logits", dtype=self.dtype_policy)

    @property
    def mask_size(self):
        return 2 * self.roi_feat_size

    def build(self, input_shape=None):
        s = self.roi_feat_size
        ch = self.in_channels
        for conv in self.convs:
            conv.build((None, s, s, ch))
            ch = self.conv_out_channels
        self.upsample.build((None, s, s, ch))
        self.conv_logits.build((None, 2 * s, 2 * s, self.conv_out_channels))
        self.built = True

    def call(self, roi_feats):
        x = roi_feats
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(self.upsample(x))

    def torch_state_map(self, prefix="roi_head.mask_head"):
        """{mmdet key: variable or TorchParam}: ``convs.{i}.conv.{weight,bias}`` (mmcv
        ``ConvModule`` without norm), ``upsample.{weight,bias}`` (``nn.ConvTranspose2d``: weight
        [in, out, 2, 2] -> Keras [2, 2, out, in], :func:`kdet.layers.torch_layout.conv_transpose`)
        and ``conv_logits.{weight,bias}`` (channel k = class k, as kdet's)."""
        out = {}
        for i, conv in enumerate(self.convs):
            out.update(layer_params(conv, f"{prefix}.convs.{i}.conv"))
        out[f"{prefix}.upsample.weight"] = conv_transpose(self.upsample.kernel)
        out[f"{prefix}.upsample.bias"] = self.upsample.bias
        out.update(layer_params(self.conv_logits, f"{prefix}.conv_logits"))
        return out

    # -- training ------------------------------------------------------------------------
    def get_targets(self, pos_boxes, pos_gt_index, gt_masks, image_size):
        """28x28 binary targets of positive RoIs.

        Args:
            pos_boxes: [B, P, 4] positive RoIs in input pixels.
            pos_gt_index: [B, P] int32 slot of the matched gt (0..N-1; anything for padding).
            gt_masks: [B, N, Hm, Wm] uint8/bool/float bitmaps on the padded input canvas (or a
                resized canvas of it: pipeline ``mask_size``).
            image_size: (H, W) of the network input the boxes refer to.
        Returns:
            [B, P, 28, 28] float32 in {0, 1}.
        """
        if gt_masks.shape.rank != 4:
            raise KdetError(f"gt['masks'] must be [B, N, H, W], got {gt_masks.shape}")
        b = tf.shape(gt_masks)[0]
        n = tf.shape(gt_masks)[1]
        hm, wm = gt_masks.shape[2], gt_masks.shape[3]
        # Masks may sit on a resized canvas: scale boxes by canvas / input size (1 normally).
        scale = 1.0 if hm is None or image_size[0] is None else float(hm) / float(image_size[0])
        canvas = tf.reshape(tf.cast(gt_masks, tf.float32), tf.concat(
            [[b * n], tf.shape(gt_masks)[2:], [1]], 0))
        p = tf.shape(pos_boxes)[1]
        batch = tf.repeat(tf.range(b), p)
        slot = tf.clip_by_value(tf.reshape(pos_gt_index, [-1]), 0, n - 1)
        rois = tf.concat([tf.cast(batch * n + slot, tf.float32)[:, None],
                          tf.reshape(tf.cast(pos_boxes, tf.float32), [-1, 4])], axis=1)
        crops = roi_align(canvas, rois, self.mask_size, spatial_scale=scale, sampling_ratio=0,
                          aligned=True)[..., 0]
        crops = tf.cast(crops >= 0.5, tf.float32)
        return tf.reshape(crops, [b, p, self.mask_size, self.mask_size])

    def loss(self, mask_logits, mask_targets, labels, weights):
        """{"loss_mask"}. mask_logits [K, 28, 28, C]; mask_targets [K, 28, 28]; labels [K]
        gt class (0 for class-agnostic); weights [K] (1 for real positives)."""
        labels = tf.cast(labels, tf.int32)
        if self.class_agnostic:
            labels = tf.zeros_like(labels)
        loss = mask_cross_entropy(mask_logits, mask_targets, labels, weights)
        return {"loss_mask": self.loss_weight * loss}

    # -- inference -----------------------------------------------------------------------
    def predict(self, mask_logits, labels):
        """Probabilities of each detection's class: [K, 28, 28, C], [K] -> [K, 28, 28]."""
        probs = tf.sigmoid(tf.cast(mask_logits, tf.float32))
        if self.class_agnostic:
            return probs[..., 0]
        labels = tf.clip_by_value(tf.cast(labels, tf.int32), 0, self.num_classes - 1)
        return tf.gather(probs, labels, axis=3, batch_dims=1)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "num_convs": self.num_convs,
                       "in_channels": self.in_channels,
                       "conv_out_channels": self.conv_out_channels,
                       "roi_feat_size": self.roi_feat_size,
                       "class_agnostic": self.class_agnostic, "loss_weight": self.loss_weight})
        return config
