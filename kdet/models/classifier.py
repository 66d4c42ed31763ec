"""Image classifier: backbone -> global average pool -> linear head (MMClassification's
``ImageClassifier`` with ``GlobalAveragePooling`` neck and ``LinearClsHead``; pycls' AnyHead)."""
import keras

from kdet.backbones.registry import build_backbone
from kdet.errors import KdetError
from kdet.models.base import deserialize_backbone


@keras.saving.register_keras_serializable(package="kdet")
class ImageClassifier(keras.Model):
    """images [B, H, W, 3] (normalised) -> logits [B, num_classes].

    Args:
        backbone: a backbone name ("regnetx_400mf", "resnet50", ...), config dict or instance.
        num_classes: output classes (1000 for ImageNet).
        backbone_kwargs: options for a backbone given by name (e.g. {"rounding": "torchvision"}).
        dropout: dropout rate before the linear layer (0 = none, as the RegNet recipes).
    """

    def __init__(self, backbone="regnetx_400mf", num_classes=1000, backbone_kwargs=None,
                 dropout=0.0, name=None, **kwargs):
        if int(num_classes) < 1:
            raise KdetError(f"num_classes must be >= 1, got {num_classes}")
        backbone_kwargs = dict(backbone_kwargs or {})
        backbone_kwargs.setdefault("out_indices", (3,))
        if isinstance(backbone, keras.Model):
            net = build_backbone(backbone)
            backbone_cfg = keras.saving.serialize_keras_object(net)
        else:
            net = build_backbone(backbone, **backbone_kwargs)
            backbone_cfg = backbone
        inputs = keras.Input((None, None, net.input_shape[-1]), name="images")
        feats = net(inputs)
        x = feats[-1] if isinstance(feats, (list, tuple)) else feats
        x = keras.layers.GlobalAveragePooling2D(name="neck.gap")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="head.dropout")(x)
        logits = keras.layers.Dense(num_classes, name="head.fc")(x)
        super().__init__(inputs=inputs, outputs=logits, name=name or f"{net.name}_cls", **kwargs)
        self.backbone = net
        self.num_classes = int(num_classes)
        self._kdet_config = dict(backbone=backbone_cfg, num_classes=int(num_classes),
                                 backbone_kwargs=backbone_kwargs, dropout=dropout)

    def __call__(self, inputs, *args, **kwargs):
        shape = getattr(inputs, "shape", None)
        if shape is not None:
            self.backbone.get_layer("input_check")._check(tuple(shape))
        return super().__call__(inputs, *args, **kwargs)

    def torch_state_map(self):
        """{key: variable} in MMClassification naming: ``backbone.*`` and ``head.fc.*``."""
        out = {f"backbone.{k}": v for k, v in self.backbone.torch_state_map().items()}
        fc = self.get_layer("head.fc")
        out["head.fc.weight"], out["head.fc.bias"] = fc.kernel, fc.bias
        return out

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._kdet_config}

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_backbone(config))
