"""COCO bbox / segm evaluation of detector outputs (MMDetection's ``CocoDataset.evaluate``).

Flow: ``update(predictions, meta)`` per batch turns the detector's padded outputs into
COCO result dicts in original-image pixels (boxes divided by the scale factor and
clipped; masks pasted at full resolution and RLE-encoded; labels 0..C-1 mapped to the
dataset's category ids), then ``evaluate()`` runs COCOeval per IoU type and returns the
12 standard COCO numbers with MMDetection's metric names.
"""
import contextlib
import copy
import io
import json
import os

import numpy as np

from kdet.errors import KdetError
from kdet.ops.masks import paste_masks_numpy, resize_masks_numpy

IOU_TYPES = ("bbox", "segm")
BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
# Names of COCOeval.stats[0..11] (default params: IoU .50:.05:.95, maxDets 1/10/100).
# The AP names are MMDetection's; mmdet evaluates with maxDets=(100, 300, 1000), which
# gives the same AP for detectors that keep <= 100 boxes per image, but its AR entries
# are AR@100/300/1000. kdet reports COCO's standard AR@1/10/100.
STAT_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
              "AR@1", "AR@10", "AR@100", "AR_s@100", "AR_m@100", "AR_l@100")


def metric_names(iou_types=("bbox",)):
    """The metric keys ``evaluate()`` returns, e.g. ``bbox_mAP``, ``segm_AR@100``."""
    return [f"{t}_{n}" for t in iou_types for n in STAT_NAMES]


def _np(x):
    if x is None:
        return None
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _coco_classes(backend):
    """(COCO class, COCOeval class) of the chosen backend."""
    if backend in ("auto", "faster_coco_eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
            return COCO, COCOeval_faster, "faster_coco_eval"
        except ImportError:
            if backend == "faster_coco_eval":
                raise KdetError("backend='faster_coco_eval' but the package is not installed "
                                "(pip install 'kdet[fast-eval]')") from None
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval, "pycocotools"


def _load_gt_dataset(ann_file):
    if isinstance(ann_file, (str, os.PathLike)):
        if not os.path.isfile(ann_file):
            raise KdetError(f"COCO annotation file not found: {ann_file}")
        try:
            with open(ann_file) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise KdetError(f"COCO annotation file {ann_file} is not valid json: {e}") from None
    if isinstance(ann_file, dict):
        return ann_file
    dataset = getattr(ann_file, "dataset", None)
    if isinstance(dataset, dict):
        return dataset
    raise KdetError("ann_file must be a path to a COCO json, a COCO dataset dict or a "
                    f"pycocotools COCO object, got {type(ann_file).__name__}")


class COCOEvaluator:
    """Accumulates detections over batches and evaluates them with COCOeval.

    Args:
      ann_file: path of the COCO annotation json, the loaded dict, or a ``COCO`` object.
      iou_types: subset of ``("bbox", "segm")``.
      backend: ``"pycocotools"``, ``"faster_coco_eval"`` (same numbers, faster) or
        ``"auto"`` (faster_coco_eval when installed).
      outfile_prefix: when set, ``evaluate()`` writes ``{prefix}.bbox.json`` /
        ``{prefix}.segm.json`` (the COCO results format, as mmdet's ``results2json``).
      cat_ids: category id of each class label 0..C-1; default the sorted category ids
        of the annotation file (the map kdet's data pipeline uses).
      mask_threshold: binarisation threshold of mask probabilities (mmdet
        ``mask_thr_binary=0.5``).
      mask_format: ``"box"`` (``[B, M, mh, mw]`` mask-head output covering each box),
        ``"image"`` (``[B, M, H, W]`` masks in network-input pixels) or ``"auto"``
        (``"image"`` when the masks are at least as large as the resized image).
      verbose: print COCOeval's summary table.
    """

    def __init__(self, ann_file, iou_types=("bbox",), backend="auto", outfile_prefix=None,
                 cat_ids=None, mask_threshold=0.5, mask_format="auto", verbose=True):
        if isinstance(iou_types, str):
            iou_types = (iou_types,)
        iou_types = tuple(iou_types)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad or not iou_types:
            raise KdetError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
        if backend not in BACKENDS:
            raise KdetError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if mask_format not in ("auto", "box", "image"):
            raise KdetError(f"mask_format must be 'auto', 'box' or 'image', got {mask_format!r}")
        self.iou_types = iou_types
        self.outfile_prefix = outfile_prefix
        self.mask_threshold = float(mask_threshold)
        self.mask_format = mask_format
        self.verbose = verbose
        self._coco_cls, self._eval_cls, self.backend = _coco_classes(backend)
        self._gt_dataset = _load_gt_dataset(ann_file)
        for key in ("images", "annotations", "categories"):
            if key not in self._gt_dataset:
                raise KdetError(f"COCO annotations have no '{key}' list")
        self._image_sizes = {img["id"]: (img.get("height"), img.get("width"))
                             for img in self._gt_dataset["images"]}
        all_cats = sorted(c["id"] for c in self._gt_dataset["categories"])
        self.cat_ids = list(all_cats if cat_ids is None else cat_ids)
        unknown = set(self.cat_ids) - set(all_cats)
        if unknown:
            raise KdetError(f"cat_ids {sorted(unknown)} are not categories of the annotation file")
        self._coco_gt = None
        self.summary = ""
        self.reset()

    @property
    def num_classes(self):
        return len(self.cat_ids)

    def reset(self):
        """Forget all accumulated detections."""
        self._results = {t: [] for t in self.iou_types}
        self._img_ids = []

    @property
    def results(self):
        """{iou_type: list of COCO result dicts} accumulated so far."""
        return self._results

    @property
    def image_ids(self):
        return sorted(set(self._img_ids))

    # ------------------------------------------------------------------ update

    def update(self, predictions, meta):
        """Adds one batch of detections.

        Args:
          predictions: the detector's ``predict`` dict: ``boxes`` [B, M, 4] xyxy in
            network-input pixels, ``scores`` [B, M], ``labels`` [B, M] int (0..C-1),
            ``num_detections`` [B] (entries past it are padding), optional ``masks``
            [B, M, mh, mw] (box-relative probabilities) or [B, M, H, W] (image).
          meta: per-image ``image_id`` [B], ``scale_factor`` [B, 2] (y, x: resized /
            original), ``orig_size`` [B, 2] (h, w); optional ``img_shape`` [B, 2] (h, w
            resized before padding). The data pipeline's ground-truth dict works as is.
        """
        for key in ("boxes", "scores", "labels"):
            if key not in predictions:
                raise KdetError(f"predictions have no '{key}' (keys: {sorted(predictions)})")
        for key in ("image_id", "scale_factor", "orig_size"):
            if key not in meta:
                raise KdetError(f"meta has no '{key}' (keys: {sorted(meta)}); pass the ground-"
                                "truth dict of the batch, which carries it")
        boxes = _np(predictions["boxes"]).astype(np.float32)
        scores = _np(predictions["scores"]).astype(np.float32)
        labels = _np(predictions["labels"]).astype(np.int64)
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise KdetError(f"predictions['boxes'] must be [B, M, 4], got {boxes.shape}")
        bsz, m = boxes.shape[:2]
        num = _np(predictions.get("num_detections"))
        num = np.full((bsz,), m) if num is None else num.reshape(-1).astype(np.int64)
        masks = _np(predictions.get("masks"))
        if "segm" in self.iou_types and masks is None:
            raise KdetError("segm evaluation needs predictions['masks'] ([B, M, mh, mw])")
        image_ids = _np(meta["image_id"]).reshape(-1).astype(np.int64)
        scale = _np(meta["scale_factor"]).astype(np.float32).reshape(bsz, -1)
        orig = _np(meta["orig_size"]).astype(np.int64).reshape(bsz, 2)
        img_shape = _np(meta.get("img_shape"))
        if len(image_ids) != bsz or scale.shape[1] != 2:
            raise KdetError(f"meta for {len(image_ids)} images / scale_factor {scale.shape} does "
                            f"not match a batch of {bsz} predictions")
        for b in range(bsz):
            img_id = int(image_ids[b])
            if img_id not in self._image_sizes:
                raise KdetError(f"image_id {img_id} is not in the annotation file")
            self._img_ids.append(img_id)
            n = int(min(num[b], m))
            keep = np.nonzero(labels[b, :n] >= 0)[0]
            if np.any(labels[b, keep] >= self.num_classes):
                raise KdetError(f"label {labels[b, keep].max()} out of range for "
                                f"{self.num_classes} classes")
            h, w = int(orig[b, 0]), int(orig[b, 1])
            sy, sx = float(scale[b, 0]), float(scale[b, 1])
            bb = boxes[b, keep] / np.array([sx, sy, sx, sy], np.float32)
            bb[:, 0::2] = np.clip(bb[:, 0::2], 0, w)
            bb[:, 1::2] = np.clip(bb[:, 1::2], 0, h)
            sc = scores[b, keep]
            cats = [self.cat_ids[int(c)] for c in labels[b, keep]]
            if "bbox" in self.iou_types:
                for box, s, c in zip(bb.tolist(), sc.tolist(), cats):
                    self._results["bbox"].append({
                        "image_id": img_id, "category_id": c, "score": s,
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            if "segm" in self.iou_types and len(keep):
                ishape = None if img_shape is None else img_shape[b]
                full = self._full_masks(masks[b, keep], bb, (h, w), (sy, sx), ishape)
                self._add_segm(img_id, full, sc, cats)

    def _full_masks(self, masks, boxes, orig_hw, scale_yx, img_shape):
        """[K, mh, mw] or [K, H, W] -> [K, h, w] uint8 masks on the original image."""
        if masks.ndim != 3:
            raise KdetError("predictions['masks'] must be [B, M, mh, mw], got per-image "
                            f"{masks.shape}")
        h, w = orig_hw
        if img_shape is None:
            img_shape = (int(round(h * scale_yx[0])), int(round(w * scale_yx[1])))
        ih, iw = int(img_shape[0]), int(img_shape[1])
        fmt = self.mask_format
        if fmt == "auto":
            fmt = "image" if masks.shape[1] >= ih and masks.shape[2] >= iw else "box"
        if fmt == "box":
            return paste_masks_numpy(masks, boxes, (h, w), threshold=self.mask_threshold)
        return resize_masks_numpy(masks[:, :ih, :iw], (h, w), threshold=self.mask_threshold)

    def _add_segm(self, img_id, full_masks, scores, cats):
        from pycocotools import mask as mask_utils
        rles = mask_utils.encode(np.asfortranarray(full_masks.transpose(1, 2, 0)))
        for rle, s, c in zip(rles, scores.tolist(), cats):
            rle["counts"] = rle["counts"].decode("utf-8")
            # No "bbox" key: COCO then takes the area from the mask for the s/m/l
            # ranges (mmdet >= 2.12 drops it for the same reason).
            self._results["segm"].append({"image_id": img_id, "category_id": c,
                                          "score": s, "segmentation": rle})

    # ---------------------------------------------------------------- evaluate

    def dump_results(self, outfile_prefix):
        """Writes ``{prefix}.{iou_type}.json`` for each IoU type; returns {type: path}."""
        paths = {}
        parent = os.path.dirname(os.path.abspath(outfile_prefix))
        os.makedirs(parent, exist_ok=True)
        for t in self.iou_types:
            paths[t] = f"{outfile_prefix}.{t}.json"
            with open(paths[t], "w") as f:
                json.dump(self._results[t], f)
        return paths

    def _gt(self):
        if self._coco_gt is None:
            gt = self._coco_cls()
            gt.dataset = copy.deepcopy(self._gt_dataset)
            with contextlib.redirect_stdout(io.StringIO()):
                gt.createIndex()
            self._coco_gt = gt
        return self._coco_gt

    def _dt(self, gt, results):
        with contextlib.redirect_stdout(io.StringIO()):
            if results:
                return gt.loadRes(copy.deepcopy(results))
            # loadRes([]) fails (it reads results[0]); an empty result set is legal:
            # COCOeval then scores 0 for classes with ground truth, -1 for the others.
            dt = self._coco_cls()
            dt.dataset = {"images": list(gt.dataset["images"]),
                          "categories": copy.deepcopy(gt.dataset["categories"]),
                          "annotations": []}
            dt.createIndex()
            return dt

    def evaluate(self):
        """Runs COCOeval on everything accumulated; returns {``bbox_mAP``: float, ...}.

        Metrics follow COCOeval: -1 where undefined (no ground truth in that area range
        or at all). Images seen by ``update`` (with or without detections) are the
        evaluated set.
        """
        if not self._img_ids:
            raise KdetError("COCOEvaluator.evaluate() called before any update()")
        if self.outfile_prefix:
            self.dump_results(self.outfile_prefix)
        gt = self._gt()
        metrics, summaries = {}, []
        for t in self.iou_types:
            dt = self._dt(gt, self._results[t])
            with contextlib.redirect_stdout(io.StringIO()):   # progress chatter
                kwargs = {"print_function": print} if self.backend == "faster_coco_eval" else {}
                ev = self._eval_cls(gt, dt, t, **kwargs)
                ev.params.imgIds = self.image_ids
                ev.params.catIds = list(self.cat_ids)
                ev.evaluate()
                ev.accumulate()
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                print(f"COCO {t} ({self.backend}, {len(self.image_ids)} images)")
                ev.summarize()
            summaries.append(buf.getvalue())
            for name, value in zip(STAT_NAMES, np.asarray(ev.stats).tolist()):
                metrics[f"{t}_{name}"] = float(value)
        self.summary = "\n".join(summaries)
        if self.verbose:
            print(self.summary)
        return metrics
