"""mask_rcnn_x101_32x4d_fpn_1x_coco: Mask R-CNN, resnext101_32x4d + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Mask R-CNN (X-101-32x4d baseline).
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/mask_rcnn/mask_rcnn_x101_32x4d_fpn_1x_coco.py
"""
from kdet.zoo.recipe import MMDET, PYTORCH_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='mask_rcnn_x101_32x4d_fpn_1x_coco',
    model='MaskRCNN',
    source=MMDET + 'mask_rcnn/mask_rcnn_x101_32x4d_fpn_1x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch', type='ResNeXt', depth=101, groups=32, base_width=4)
    backbone='resnext101_32x4d',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5)
    fpn_in_channels=(256, 512, 1024, 2048),
    recipe=Recipe(
        schedule='1x',  # _base_/schedules/schedule_1x.py: 12 epochs, x0.1 at 8 and 11
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=0.0001,  # optimizer weight_decay=0.0001 (RegNet notice 1: 5e-5 does not help R-50)
        img_norm=PYTORCH_NORM,  # img_norm_cfg: torchvision weights, RGB mean/std
        with_masks=True,  # LoadAnnotations(with_mask=True)
    ),
    seed=SeedResult(box_ap=41.9, mask_ap=37.5, mem_gb=7.6, fps=9.4,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Mask R-CNN (X-101-32x4d baseline)'),
)
