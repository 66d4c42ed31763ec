"""A numpy RoIAlign reference, written from mmcv's roi_align CPU kernel (float32 arithmetic).

Loops per RoI, bin and sample exactly as mmcv does; slow, for small test cases only.
"""
import math

import numpy as np

f32 = np.float32


def _bilinear(img, y, x):
    """mmcv bilinear_interpolate on img [H, W, C] at (y, x); float32 result [C]."""
    h, w = img.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(img.shape[2], np.float32)
    y = max(y, f32(0))
    x = max(x, f32(0))
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = f32(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = f32(x_low)
    else:
        x_high = x_low + 1
    ly, lx = f32(y - y_low), f32(x - x_low)
    hy, hx = f32(1) - ly, f32(1) - lx
    return (hy * hx * img[y_low, x_low] + hy * lx * img[y_low, x_high]
            + ly * hx * img[y_high, x_low] + ly * lx * img[y_high, x_high])


def roi_align_ref(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0,
                  aligned=True):
    """features [B,H,W,C], rois [K,5] -> [K,oh,ow,C] float32 (mmcv avg RoIAlign)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    features = np.asarray(features, np.float32)
    rois = np.asarray(rois, np.float32)
    scale = f32(spatial_scale)
    out = np.zeros((len(rois), oh, ow, features.shape[3]), np.float32)
    offset = f32(0.5) if aligned else f32(0)
    for k, roi in enumerate(rois):
        img = features[int(roi[0])]
        start_w, start_h = roi[1] * scale - offset, roi[2] * scale - offset
        roi_w = (roi[3] * scale - offset) - start_w
        roi_h = (roi[4] * scale - offset) - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
        bin_h, bin_w = f32(roi_h / f32(oh)), f32(roi_w / f32(ow))
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(f32(roi_h / f32(oh))))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(f32(roi_w / f32(ow))))
        count = f32(max(gh * gw, 1))
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(features.shape[3], np.float32)
                for iy in range(gh):
                    y = f32(start_h + f32(ph) * bin_h) + f32(f32(f32(iy + 0.5) * bin_h) / f32(gh))
                    for ix in range(gw):
                        x = (f32(start_w + f32(pw) * bin_w)
                             + f32(f32(f32(ix + 0.5) * bin_w) / f32(gw)))
                        acc += _bilinear(img, y, x)
                out[k, ph, pw] = acc / count
    return out
