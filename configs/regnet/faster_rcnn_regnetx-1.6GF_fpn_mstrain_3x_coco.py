"""faster_rcnn_regnetx-1.6GF_fpn_mstrain_3x_coco: Faster R-CNN, regnetx_1.6gf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x).
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/faster_rcnn_regnetx-1.6GF_fpn_mstrain_3x_coco.py
(_base_ = 'faster_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco.py')
"""
from kdet.zoo.recipe import MMDET, MSTRAIN_VALUE, PYCLS_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='faster_rcnn_regnetx-1.6GF_fpn_mstrain_3x_coco',
    model='FasterRCNN',
    source=MMDET + 'regnet/faster_rcnn_regnetx-1.6GF_fpn_mstrain_3x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_1.6gf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[72, 168, 408, 912], out_channels=256, num_outs=5)
    fpn_in_channels=(72, 168, 408, 912),
    recipe=Recipe(
        schedule={'max_epochs': 36, 'step': [28, 34]},  # lr_config = dict(step=[28, 34]); total_epochs = 36
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        img_norm=PYCLS_NORM,  # img_norm_cfg: 'The mean and std are used in PyCls' (BGR)
        train_scales=MSTRAIN_VALUE, multiscale_mode='value',  # Resize(img_scale=[(1333, 640), ..., (1333, 800)] step 32, 'value')
    ),
    seed=SeedResult(box_ap=40.5, mem_gb=3.4,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x)'),
)
