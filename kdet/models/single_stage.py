"""``SingleStageDetector``: backbone -> FPN -> dense head (MMDetection v2's
``SingleStageDetector``), the base of RetinaNet, ATSS and PAA.

The detector wires the three stages and follows :class:`kdet.models.base.Detector`'s contract;
the loss and the post-processing live in the head (:mod:`kdet.heads.dense`).
"""
import keras
import tensorflow as tf

from kdet.backbones.registry import build_backbone
from kdet.errors import KdetError
from kdet.models.base import Detector, check_ground_truth, deserialize_backbone
from kdet.necks import FPN

# mmdet RetinaNet / ATSS / PAA configs: BN frozen in eval mode, stem + stage 1 frozen, C2..C5.
DEFAULT_BACKBONE_KWARGS = dict(out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True)


class SingleStageDetector(Detector):
    """Backbone + FPN + a dense head.

    Args:
        backbone: a backbone name ("regnetx_800mf", "resnet50", ...), config dict or instance.
        num_classes: foreground classes (COCO: 80).
        backbone_kwargs: options for a backbone given by name or dict (default
            :data:`DEFAULT_BACKBONE_KWARGS`: mmdet's frozen_stages=1, norm_eval=True).
        neck: FPN keyword arguments overriding the detector's defaults.
        head: head keyword arguments overriding the detector's defaults (e.g. ``test_cfg``,
            ``score_voting``, ``loss_bbox``).
        preprocessing: see :func:`kdet.models.base.default_preprocessing`.
    Call:
        ``model(images [B, H, W, 3], training=False, img_shape=None)`` -> padded detections
        (DESIGN.md); ``img_shape`` [B, 2] clips boxes to each image's valid area.
    """

    head_class = None
    torch_heads = ("bbox_head",)
    default_neck = dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_input")
    default_head = {}

    def __init__(self, backbone="resnet50", num_classes=80, backbone_kwargs=None, neck=None,
                 head=None, preprocessing=None, name=None, **kwargs):
        self.loss_names = tuple(self.loss_names)
        super().__init__(num_classes=num_classes, preprocessing=preprocessing,
                         name=name or type(self).__name__.lower(), **kwargs)
        # -- layers
        bb_kwargs = dict(DEFAULT_BACKBONE_KWARGS)
        bb_kwargs.update(backbone_kwargs or {})
        if isinstance(backbone, keras.Model):
            self.backbone = build_backbone(backbone)
            backbone_cfg = keras.saving.serialize_keras_object(self.backbone)
        else:
            self.backbone = build_backbone(backbone, **bb_kwargs)
            backbone_cfg = backbone
        neck_cfg = dict(self.default_neck)
        neck_cfg.update(neck or {})
        neck_cfg.setdefault("in_channels", list(self.backbone.out_channels))
        self.neck = FPN(**neck_cfg, name="neck")
        head_cfg = dict(self.default_head)
        head_cfg.update(head or {})
        head_cfg.setdefault("in_channels", neck_cfg["out_channels"])
        try:
            self.bbox_head = self.head_class(num_classes=self.num_classes, name="bbox_head",
                                             **head_cfg)
        except (TypeError, ValueError) as e:
            if isinstance(e, KdetError):
                raise
            raise KdetError(f"bad head arguments for {type(self).__name__}: {e}") from None
        if self.bbox_head.anchor_generator.num_levels != self.neck.num_outs:
            raise KdetError(f"the head has {self.bbox_head.anchor_generator.num_levels} anchor "
                            f"levels but the FPN gives {self.neck.num_outs} outputs")
        # -- config
        self._kdet_config = dict(backbone=backbone_cfg, backbone_kwargs=backbone_kwargs,
                                 neck=neck, head=head)

    def build(self, input_shape=None):
        shapes = [(None, None, None, c) for c in self.backbone.out_channels]
        if not self.neck.built:
            self.neck.build(shapes)
        if not self.bbox_head.built:
            self.bbox_head.build([(None, None, None, self.neck.out_channels)] * self.neck.num_outs)
        self.built = True

    # -- stages ---------------------------------------------------------------------------
    def extract_features(self, images, training=False):
        """images [B, H, W, 3] -> list of FPN maps [B, H/s, W/s, 256], s = 8 .. 128."""
        return self.neck(self.backbone(images, training=training))

    def call(self, images, training=False, img_shape=None):
        outputs = self.bbox_head(self.extract_features(images, training), training=training)
        return self.bbox_head.predict(outputs, img_shape=img_shape,
                                      input_shape=tf.shape(images)[1:3])

    def compute_losses(self, images, gt, training=True):
        gt = check_ground_truth(gt)
        if not self.built:
            self.build(images.shape)
        outputs = self.bbox_head(self.extract_features(images, training), training=training)
        img_shape = gt.get("img_shape")
        if img_shape is None:
            b = tf.shape(images)[0]
            img_shape = tf.tile(tf.cast(tf.shape(images)[1:3], tf.float32)[None], [b, 1])
        return self.bbox_head.loss(outputs, gt, img_shape)

    def get_config(self):
        config = super().get_config()
        config.update(self._kdet_config)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_backbone(config))
