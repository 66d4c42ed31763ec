"""mask_rcnn_regnetx-800MF_fpn_mstrain-poly_3x_coco: Mask R-CNN, regnetx_800mf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x).
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/mask_rcnn_regnetx-800MF_fpn_mstrain-poly_3x_coco.py
(_base_ = ['../common/mstrain-poly_3x_coco_instance.py', '../_base_/models/mask_rcnn_r50_fpn.py'])
"""
from kdet.zoo.recipe import MMDET, MSTRAIN_RANGE, PYTORCH_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='mask_rcnn_regnetx-800MF_fpn_mstrain-poly_3x_coco',
    model='MaskRCNN',
    source=MMDET + 'regnet/mask_rcnn_regnetx-800MF_fpn_mstrain-poly_3x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_800mf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[64, 128, 288, 672], out_channels=256, num_outs=5)
    fpn_in_channels=(64, 128, 288, 672),
    recipe=Recipe(
        schedule={'max_epochs': 36, 'step': [27, 33]},  # common/mstrain-poly_3x: RepeatDataset(times=3), 12 epochs, step [9, 11]
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        grad_clip=35.0,  # optimizer_config grad_clip=dict(max_norm=35, norm_type=2)
        img_norm=PYTORCH_NORM,  # img_norm_cfg inherited from configs/common/mstrain-poly_3x_coco_instance.py
        train_scales=MSTRAIN_RANGE, multiscale_mode='range',  # Resize(img_scale=[(1333, 640), (1333, 800)], multiscale_mode='range')
        with_masks=True,  # LoadAnnotations(with_mask=True, poly2mask=False)
        poly2mask=False,
    ),
    seed=SeedResult(box_ap=39.5, mask_ap=36.1, mem_gb=2.9,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x)'),
)
