"""The evaluator on kdet.data's real pipeline output: ground truth fed back scores AP 1."""
import numpy as np
import pytest

from kdet.evaluation import COCOEvaluator


def test_pipeline_ground_truth_round_trips_through_the_evaluator(tmp_path):
    from kdet.data import coco_dataset, make_shapes_dataset
    shapes = make_shapes_dataset(str(tmp_path / "shapes"), num_images=8, image_size=(96, 128),
                                 seed=3, val_fraction=0.5)
    # Resize to a different scale (x1.25) so that boxes and masks must be mapped back.
    ds = coco_dataset(shapes.val_ann, shapes.image_dir, training=False, batch_size=2,
                      img_scale=(160, 120), with_masks=True)
    ev = COCOEvaluator(shapes.val_ann, iou_types=("bbox", "segm"), verbose=False)
    for images, gt in ds:
        labels = np.where(gt["ignore"].numpy(), -1, gt["labels"].numpy())   # crowd: not a detection
        preds = {"boxes": gt["boxes"], "labels": labels,
                 "scores": (labels >= 0).astype(np.float32),
                 "num_detections": np.full((labels.shape[0],), labels.shape[1]),
                 "masks": gt["masks"].numpy().astype(np.float32)}
        assert not np.allclose(gt["scale_factor"].numpy(), 1.0)
        ev.update(preds, gt)
    metrics = ev.evaluate()
    assert len(ev.image_ids) == shapes.num_val
    assert metrics["bbox_mAP"] == pytest.approx(1.0, abs=1e-6)
    # Masks go through the pipeline's resize and back (bilinear): edges may move a pixel.
    assert metrics["segm_mAP"] > 0.9
