"""kdet.models.ATSS: the Detector contract and MMDetection's ATSS configuration."""
import pytest

from kdet.models import ATSS

from .single_stage_common import check_fit_xla, check_predict_contract, check_save_load, tiny


def test_defaults_follow_the_mmdet_atss_config():
    model = tiny(ATSS)
    head = model.bbox_head
    assert model.neck.add_extra_convs == "on_output"
    assert head.assigner.topk == 9 and type(head.assigner).__name__ == "ATSSAssigner"
    assert head.loss_bbox.loss_weight == 2.0 and head.loss_centerness.use_sigmoid
    assert head.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)
    assert head.anchor_generator.num_base_anchors == [1] * 5 and head.norm == "GN"


def test_predict_and_save_load_round_trip(tmp_path):
    model = tiny(ATSS)
    check_predict_contract(model)
    check_save_load(model, ATSS, tmp_path)


@pytest.mark.slow  # XLA-compiles the whole train step (minutes on the shared 2-core CPU)
def test_fit_with_jit_compile():
    check_fit_xla(tiny(ATSS), ("loss_cls", "loss_bbox", "loss_centerness"))
