"""mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco: Mask R-CNN, regnetx_3.2gf + FPN.

Seed: seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x).
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/regnet/mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco.py
"""
from kdet.zoo.recipe import MMDET, MSTRAIN_VALUE, PYCLS_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco',
    model='MaskRCNN',
    source=MMDET + 'regnet/mask_rcnn_regnetx-3.2GF_fpn_mstrain_3x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='regnetx_3.2gf',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[96, 192, 432, 1008], out_channels=256, num_outs=5)
    fpn_in_channels=(96, 192, 432, 1008),
    recipe=Recipe(
        schedule={'max_epochs': 36, 'step': [28, 34]},  # lr_config = dict(step=[28, 34]); total_epochs = 36
        base_lr=0.02, batch_size=16,  # 8 GPUs x 2 images; optimizer=dict(type='SGD', lr=0.02, momentum=0.9, ...)
        weight_decay=5e-05,  # RegNet notice 1: weight_decay=5e-5 (ImageNet setting)
        grad_clip=35.0,  # optimizer_config grad_clip=dict(max_norm=35, norm_type=2)
        img_norm=PYCLS_NORM,  # img_norm_cfg: 'The mean and std are used in PyCls' (BGR)
        train_scales=MSTRAIN_VALUE, multiscale_mode='value',  # Resize(img_scale=[(1333, 640), ..., (1333, 800)] step 32, 'value')
        with_masks=True,  # LoadAnnotations(with_mask=True)
    ),
    seed=SeedResult(box_ap=43.1, mask_ap=38.7, mem_gb=5.0,
                    table='seed 000_f00d3e4ef827aa2d.txt, RegNet: Pre-trained models (mstrain 3x)'),
)
