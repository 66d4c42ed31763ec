"""paa_r50_fpn_2x_coco: PAA, resnet50 + FPN.

Seed: seed 004_20d547bd073a917b.txt, PAA.
MMDetection: https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/paa/paa_r50_fpn_2x_coco.py
"""
from kdet.zoo.recipe import MMDET, PYTORCH_NORM, Recipe, SeedResult, ZooConfig

CONFIG = ZooConfig(
    name='paa_r50_fpn_2x_coco',
    model='PAA',
    source=MMDET + 'paa/paa_r50_fpn_2x_coco.py',
    # backbone=dict(type=..., out_indices=(0, 1, 2, 3), frozen_stages=1,
    #               norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
    #               style='pytorch')
    backbone='resnet50',
    backbone_kwargs={'frozen_stages': 1, 'norm_eval': True, 'style': 'pytorch'},
    # neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5)
    fpn_in_channels=(256, 512, 1024, 2048),
    # bbox_head=dict(type='PAAHead', score_voting=True, topk=9, ...)
    # FPN start_level=1, add_extra_convs='on_output' (kdet.models.PAA defaults)
    model_kwargs={'head': {'score_voting': True}},
    recipe=Recipe(
        schedule='2x',  # lr_config = dict(step=[16, 22]); max_epochs=24
        base_lr=0.01, batch_size=16,  # 8 GPUs x 2 images; lr=0.01 (optimizer of paa_r50_fpn_1x_coco.py)
        weight_decay=0.0001,  # optimizer weight_decay=0.0001
        img_norm=PYTORCH_NORM,  # img_norm_cfg: torchvision weights, RGB mean/std
    ),
    seed=SeedResult(box_ap=41.6, mem_gb=3.7,
                    table='seed 004_20d547bd073a917b.txt, PAA'),
)
