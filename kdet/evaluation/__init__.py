"""kdet.evaluation: COCO evaluator (bbox, segm) and its Keras callback."""
from kdet.evaluation.coco_evaluator import (  # noqa: F401
    COCOEvaluator, IOU_TYPES, STAT_NAMES, metric_names,
)
from kdet.evaluation.callback import COCOEvalCallback, order_callbacks  # noqa: F401
