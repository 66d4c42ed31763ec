"""kdet.models.PAA: the Detector contract (the GMM assignment runs in graph, under XLA),
MMDetection's PAA configuration, score voting on / off."""
import numpy as np
import pytest

from kdet.models import PAA

from .single_stage_common import (batch, check_fit_xla, check_predict_contract, check_save_load,
                                  tiny)


def test_defaults_follow_the_mmdet_paa_config():
    model = tiny(PAA)
    head = model.bbox_head
    assert model.neck.add_extra_convs == "on_output"
    assert type(head.assigner).__name__ == "MaxIoUAssigner"
    assert (head.assigner.pos_iou_thr, head.assigner.neg_iou_thr) == (0.1, 0.1)
    assert head.topk == 9 and head.score_voting and head.covariance_type == "diag"
    assert head.loss_bbox.loss_weight == 1.3 and head.loss_centerness.loss_weight == 0.5
    assert head.test_cfg["iou_threshold"] == 0.6


def test_predict_and_save_load_round_trip(tmp_path):
    model = tiny(PAA)
    check_predict_contract(model)
    check_save_load(model, PAA, tmp_path)


@pytest.mark.slow  # XLA-compiles the whole train step (minutes on the shared 2-core CPU)
def test_fit_with_jit_compile():
    check_fit_xla(tiny(PAA), ("loss_cls", "loss_bbox", "loss_iou"))


def test_score_voting_switch_is_a_constructor_argument():
    on, off = tiny(PAA), tiny(PAA, head={"score_voting": False})
    images, _ = batch()
    on(images)
    off(images)
    off.set_weights(on.get_weights())
    a, b = on.predict(images, verbose=0), off.predict(images, verbose=0)
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert off.get_config()["head"]["score_voting"] is False
