"""Keras callback that runs COCO evaluation every N epochs and logs ``val_bbox_mAP`` etc."""
import keras

from kdet.errors import KdetError
from kdet.evaluation.coco_evaluator import COCOEvaluator, metric_names


class COCOEvalCallback(keras.callbacks.Callback):
    """Evaluates ``self.model`` on a validation dataset with COCO metrics.

    Every ``interval`` epochs it predicts every batch of ``val_dataset`` (elements
    ``(images, gt)``; ``gt`` carries ``image_id``, ``scale_factor``, ``orig_size``),
    evaluates with :class:`COCOEvaluator` and writes the 12 metrics per IoU type into
    the epoch ``logs`` as ``val_bbox_mAP``, ``val_bbox_mAP_50``, ..., ``val_segm_mAP``.

    Keras hands one ``logs`` dict to the callbacks in list order, so callbacks that
    read these metrics (TensorBoard, CSVLogger, ModelCheckpoint(monitor=...),
    EarlyStopping) must come *after* this one; History and the progress bar are
    appended by Keras at the end and always see them. :func:`order_callbacks` (and
    ``kdet.training.fit_callbacks``) put it first.

    Args:
      val_dataset: iterable of ``(images, gt)`` batches (e.g. ``kdet.data.coco_dataset(...,
        training=False)``); iterated once per evaluation.
      ann_file: COCO annotation json of the same images (or dict / COCO object).
      interval: evaluate after epochs ``interval, 2*interval, ...`` (1-based).
      iou_types: ``("bbox",)`` or ``("bbox", "segm")``.
      outfile_prefix: write the results json to ``{prefix}.bbox.json`` etc.; a
        ``{epoch}`` field in it is filled with the 1-based epoch.
      verbose: 1 prints the COCO summary table; 0 is silent.
      backend, mask_format: passed to :class:`COCOEvaluator`.
      prefix: key prefix in the logs (``"val_"``).
      fill_skipped: on epochs without evaluation (``interval > 1``) write NaN for every
        metric, so that CSVLogger, which fixes its columns at the first epoch, has them.
    """

    def __init__(self, val_dataset, ann_file, interval=1, iou_types=("bbox",),
                 outfile_prefix=None, verbose=1, backend="auto", mask_format="auto",
                 prefix="val_", fill_skipped=True):
        super().__init__()
        if int(interval) < 1:
            raise KdetError(f"COCOEvalCallback interval must be >= 1, got {interval}")
        self.val_dataset = val_dataset
        self.interval = int(interval)
        self.outfile_prefix = outfile_prefix
        self.verbose = verbose
        self.prefix = prefix
        self.fill_skipped = fill_skipped
        self.evaluator = COCOEvaluator(ann_file, iou_types=iou_types, backend=backend,
                                       mask_format=mask_format, verbose=bool(verbose))
        self.last_metrics = {}

    def evaluate(self, epoch=None):
        """Predicts the whole validation set and returns the un-prefixed metrics."""
        ev = self.evaluator
        ev.reset()
        for batch in self.val_dataset:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise KdetError("COCOEvalCallback: val_dataset must yield (images, gt) pairs")
            images, gt = batch[0], batch[1]
            predictions = self.model.predict_on_batch(images)
            ev.update(predictions, gt)
        prefix = self.outfile_prefix
        ev.outfile_prefix = (prefix.format(epoch=(epoch or 0) + 1)
                             if prefix and "{epoch" in prefix else prefix)
        self.last_metrics = ev.evaluate()
        return self.last_metrics

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.interval:
            if self.fill_skipped and logs is not None:
                logs.update({self.prefix + k: float("nan")
                             for k in metric_names(self.evaluator.iou_types)})
            return
        metrics = self.evaluate(epoch)
        if logs is not None:
            logs.update({self.prefix + k: v for k, v in metrics.items()})


def order_callbacks(callbacks):
    """Returns ``callbacks`` with every :class:`COCOEvalCallback` moved first.

    Callbacks that read epoch logs (TensorBoard, CSVLogger, ModelCheckpoint, ...) then
    see the ``val_*`` COCO metrics. Relative order is otherwise kept.
    """
    callbacks = list(callbacks or [])
    evals = [c for c in callbacks if isinstance(c, COCOEvalCallback)]
    return evals + [c for c in callbacks if not isinstance(c, COCOEvalCallback)]
