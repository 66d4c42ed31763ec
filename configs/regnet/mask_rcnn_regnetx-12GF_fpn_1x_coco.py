"""mask_rcnn_regnetx-12GF_fpn_1x_coco: Mask R-CNN, regnetx_12gf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Mask R-CNN.
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/mask_rcnn_regnetx-12GF_fpn_1x_coco.py
(_base_ = './mask_rcnn_regnetx-3.2GF_fpn_1x_coco.py')
"""
from kdet.zoo.recipe import MMDET, PYCLS_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='mask_rcnn_regnetx-12GF_fpn_1x_coco',
    model='MaskRCNN',
    source=MMDET + 'regnet/mask_rcnn_regnetx-12GF_fpn_1x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_12gf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[224, 448, 896, 2240], out_channels=256, num_outs=5)
    fpn_in_channels=(224, 448, 896, 2240),
    recipe=Recipe(
        schedule='1x',  # _base_/schedules/schedule_1x.py: 12 epochs, x0.1 at 8 and 11
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        img_norm=PYCLS_NORM,  # img_norm_cfg: 'The mean and std are used in PyCls' (BGR)
        with_masks=True,  # LoadAnnotations(with_mask=True)
    ),
    seed=SeedResult(box_ap=42.2, mask_ap=38.0, mem_gb=7.4,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Mask R-CNN'),
)
