"""What a zoo config holds: the model to build, its training recipe and the seed's numbers.

A config file (``configs/<method>/<name>.py``) defines ``CONFIG = ZooConfig(...)``; the
registry (:mod:`kdet.zoo.registry`) only maps names to those files. Field values follow the
MMDetection 2.x config the file links to.
"""
import copy
import dataclasses
from typing import Optional

from kdet.errors import KdetError
from kdet.utils.config import jsonable

# img_norm_cfg of the MMDetection configs (mean/std in 0..255; to_rgb=False keeps BGR).
PYTORCH_NORM = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), to_rgb=True)
# RegNet configs: "The mean and std are used in PyCls when training RegNets" (BGR).
PYCLS_NORM = dict(mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395), to_rgb=False)
# mmdet configs/common/mstrain_3x / RegNet mstrain-poly: Resize(img_scale=[(1333, 640),
# (1333, 800)], multiscale_mode='range').
MSTRAIN_RANGE = ((1333, 640), (1333, 800))
# RegNet {faster,mask}_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco.py: six scales, mode 'value'.
MSTRAIN_VALUE = tuple((1333, s) for s in (640, 672, 704, 736, 768, 800))
MMDET = "https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/"


@dataclasses.dataclass
class Recipe:
    """MMDetection's training recipe: schedule, SGD, data transforms.

    ``schedule`` is a :func:`kdet.training.step_schedule` schedule ("1x", "1.5x", "2x", "3x",
    or ``{"max_epochs": E, "step": [...]}``); ``base_lr`` is for ``batch_size`` images per step
    (mmdet: 8 GPUs x 2); :meth:`lr` applies the linear scaling rule for other batch sizes.
    """
    schedule: object = "1x"
    base_lr: float = 0.02
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: Optional[float] = None        # optimizer_config.grad_clip.max_norm
    warmup_iters: int = 500                  # lr_config: warmup='linear', 500 iters, 0.001
                                             # (0: no warmup)
    warmup_ratio: float = 0.001
    img_scale: tuple = (1333, 800)           # test scale, and train scale without mstrain
    train_scales: Optional[tuple] = None     # mstrain: list of (long, short) scales
    multiscale_mode: Optional[str] = None    # 'range' or 'value'
    flip_ratio: float = 0.5
    img_norm: dict = dataclasses.field(default_factory=lambda: dict(PYTORCH_NORM))
    size_divisor: int = 32
    with_masks: bool = False
    poly2mask: bool = True                   # False in mstrain-poly configs (kdet decodes
                                             # polygons to bitmaps either way)

    def lr(self, batch_size=None):
        """Linear scaling rule (Goyal et al. 2017): base_lr * batch_size / self.batch_size."""
        b = self.batch_size if batch_size is None else int(batch_size)
        return self.base_lr * b / self.batch_size

    @property
    def max_epochs(self):
        from kdet.training import num_epochs
        return num_epochs(self.schedule)

    def optimizer(self, steps_per_epoch, batch_size=None, schedule=None):
        """``kdet.training.sgd`` with the warmup + step schedule of this recipe."""
        from kdet.training import sgd, step_schedule
        lr = step_schedule(self.lr(batch_size), int(steps_per_epoch),
                           schedule if schedule is not None else self.schedule,
                           warmup="linear" if self.warmup_iters else None,
                           warmup_iters=self.warmup_iters or 1, warmup_ratio=self.warmup_ratio)
        return sgd(lr, momentum=self.momentum, weight_decay=self.weight_decay,
                   clip_global_norm=self.grad_clip)

    def dataset_kwargs(self, training=True):
        """Keyword arguments of ``kdet.data.coco_dataset`` for this recipe (train or test)."""
        out = dict(img_scale=tuple(self.img_scale), size_divisor=self.size_divisor,
                   with_masks=self.with_masks)
        if training:
            out["flip_ratio"] = self.flip_ratio
            if self.train_scales:
                out["img_scales"] = [tuple(s) for s in self.train_scales]
                out["multiscale_mode"] = self.multiscale_mode or "range"
        return out

    def preprocessing(self):
        """The model's ``preprocessing`` dict (what export and checkpoint import replay)."""
        style = ("pytorch" if _same_norm(self.img_norm, PYTORCH_NORM) else
                 "pycls" if _same_norm(self.img_norm, PYCLS_NORM) else "custom")
        return dict(style=style, mean=list(self.img_norm["mean"]), std=list(self.img_norm["std"]),
                    to_rgb=bool(self.img_norm["to_rgb"]), img_scale=list(self.img_scale),
                    size_divisor=int(self.size_divisor))

    def replace(self, **changes):
        bad = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if bad:
            raise KdetError(f"unknown recipe field(s) {bad}; valid: "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return jsonable(dataclasses.asdict(self))


def _same_norm(a, b):
    return (list(a["mean"]) == list(b["mean"]) and list(a["std"]) == list(b["std"])
            and bool(a["to_rgb"]) == bool(b["to_rgb"]))


@dataclasses.dataclass
class SeedResult:
    """A row of a seed table: COCO val2017 numbers MMDetection reports (not measured here)."""
    box_ap: Optional[float] = None
    mask_ap: Optional[float] = None
    mem_gb: Optional[float] = None
    fps: Optional[float] = None
    table: str = ""                          # seed file and table the numbers come from


@dataclasses.dataclass
class ZooConfig:
    """One model-zoo entry.

    Args:
      name: MMDetection's config name (the file name without ``.py``).
      model: class name in :mod:`kdet.models` ("MaskRCNN", "FasterRCNN", "RetinaNet", "PAA").
      backbone: backbone name for :func:`kdet.backbones.build_backbone`.
      backbone_kwargs: mmdet backbone options (frozen_stages, norm_eval, style, dcn, ...).
      fpn_in_channels: the config's ``neck.in_channels``; checked against the backbone.
      model_kwargs: other constructor arguments (``head``, ``test_cfg``, ...).
      recipe: the :class:`Recipe`; seed: the :class:`SeedResult`; source: the mmdet URL.
      not_implemented: reason this entry cannot be built yet (``build`` raises it).
    """
    name: str
    model: str
    backbone: str
    recipe: Recipe
    seed: SeedResult
    source: str
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    fpn_in_channels: Optional[tuple] = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    not_implemented: Optional[str] = None

    @property
    def method(self):
        return self.source.rstrip("/").split("/")[-2] if "/" in self.source else ""

    def model_arguments(self, num_classes=80, recipe=None, **overrides):
        """The constructor keyword arguments (json-able) of ``kdet.models.<model>``."""
        recipe = recipe or self.recipe
        kwargs = dict(backbone=self.backbone, num_classes=int(num_classes),
                      backbone_kwargs=copy.deepcopy(self.backbone_kwargs),
                      preprocessing=recipe.preprocessing())
        kwargs.update(copy.deepcopy(self.model_kwargs))
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                kwargs[key] = _deep_merge(kwargs[key], value)
            else:
                kwargs[key] = value
        return jsonable(kwargs)

    def build(self, num_classes=None, **overrides):
        """``(model, recipe)``. ``overrides``: constructor arguments (dicts merge), plus
        ``img_scale=(long, short)`` (model preprocessing and recipe) and ``recipe=dict(...)``
        (recipe fields, e.g. ``schedule``)."""
        if self.not_implemented:
            raise KdetError(f"{self.name}: {self.not_implemented}")
        import kdet.models
        recipe = self.recipe
        if "recipe" in overrides:
            recipe = recipe.replace(**dict(overrides.pop("recipe") or {}))
        if "img_scale" in overrides:
            scale = tuple(int(v) for v in overrides.pop("img_scale"))
            if len(scale) != 2 or min(scale) < 32:
                raise KdetError(f"img_scale must be (long, short) edges >= 32, got {scale}")
            recipe = recipe.replace(img_scale=scale, train_scales=None, multiscale_mode=None)
        cls = getattr(kdet.models, self.model)
        model = cls(**self.model_arguments(80 if num_classes is None else num_classes, recipe,
                                           **overrides))
        if not model.built:                      # single-stage detectors build lazily
            model.build((None, None, None, 3))
        if self.fpn_in_channels is not None:
            got = tuple(int(c) for c in model.backbone.out_channels)
            if got != tuple(self.fpn_in_channels):
                raise KdetError(f"{self.name}: backbone {self.backbone} gives channels {got}, "
                                f"but the config's FPN in_channels are {self.fpn_in_channels}")
        return model, recipe

    def to_dict(self):
        out = jsonable(dataclasses.asdict(self))
        out["method"] = self.method
        return out


def _deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                              dict) else v
    return out
