"""retinanet_regnetx-1.6GF_fpn_1x_coco: RetinaNet, regnetx_1.6gf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: RetinaNet.
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/retinanet_regnetx-1.6GF_fpn_1x_coco.py
(_base_ = './retinanet_regnetx-3.2GF_fpn_1x_coco.py')
"""
from kdet.zoo.recipe import MMDET, PYCLS_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='retinanet_regnetx-1.6GF_fpn_1x_coco',
    model='RetinaNet',
    source=MMDET + 'regnet/retinanet_regnetx-1.6GF_fpn_1x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_1.6gf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[72, 168, 408, 912], out_channels=256, num_outs=5)
    fpn_in_channels=(72, 168, 408, 912),
    recipe=Recipe(
        schedule='1x',  # _base_/schedules/schedule_1x.py: 12 epochs, x0.1 at 8 and 11
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; RegNet notice 2: lr=0.02 (the R-50 RetinaNet uses 0.01)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        grad_clip=35.0,  # RegNet notice 2: lr 0.02 with gradient clipping (max_norm=35)
        img_norm=PYCLS_NORM,  # img_norm_cfg: 'The mean and std are used in PyCls' (BGR)
    ),
    seed=SeedResult(box_ap=37.3, mem_gb=3.3,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: RetinaNet'),
)
