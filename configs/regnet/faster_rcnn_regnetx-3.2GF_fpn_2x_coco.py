"""faster_rcnn_regnetx-3.2GF_fpn_2x_coco: Faster R-CNN, regnetx_3.2gf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Faster R-CNN.
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/faster_rcnn_regnetx-3.2GF_fpn_2x_coco.py
"""
from kdet.zoo.recipe import MMDET, PYCLS_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='faster_rcnn_regnetx-3.2GF_fpn_2x_coco',
    model='FasterRCNN',
    source=MMDET + 'regnet/faster_rcnn_regnetx-3.2GF_fpn_2x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_3.2gf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[96, 192, 432, 1008], out_channels=256, num_outs=5)
    fpn_in_channels=(96, 192, 432, 1008),
    recipe=Recipe(
        schedule='2x',  # _base_/schedules/schedule_2x.py: 24 epochs, x0.1 at 16 and 22
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        img_norm=PYCLS_NORM,  # img_norm_cfg: 'The mean and std are used in PyCls' (BGR)
    ),
    seed=SeedResult(box_ap=41.1, mem_gb=4.5,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Faster R-CNN'),
)
