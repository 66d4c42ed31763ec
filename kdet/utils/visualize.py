"""Draw detections (boxes, class names, scores and masks) on images and write PNGs."""
import numpy as np

from kdet.errors import KdetError

# Distinct colours (RGB) per class id, cycled.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


def denormalize(image, preprocessing):
    """A normalised network input [H, W, 3] -> uint8 RGB, undoing the model's preprocessing
    (mean / std, and BGR -> RGB for caffe-style inputs)."""
    image = np.asarray(image, np.float32)
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    out = image * std + mean
    if not preprocessing.get("to_rgb", True):
        out = out[..., ::-1]
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_detections(image, boxes, labels, scores, masks=None, class_names=None,
                    score_thr=0.5, mask_thr=0.5, alpha=0.45):
    """Draw one image's detections.

    Args:
        image: [H, W, 3] uint8 RGB.
        boxes: [M, 4] xyxy pixels; labels [M] int (-1 = padding); scores [M].
        masks: [M, mh, mw] box-relative probabilities (the detector's output) or None.
        class_names: names indexed by label, or None (ids are printed).
        score_thr: detections below are skipped. mask_thr: mask binarisation threshold.
    Returns:
        PIL.Image (RGB).
    """
    from PIL import Image, ImageDraw

    from kdet.ops import paste_masks_numpy
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise KdetError(f"draw_detections needs an [H, W, 3] RGB image, got {image.shape}")
    boxes, labels, scores = np.asarray(boxes), np.asarray(labels), np.asarray(scores)
    keep = (labels >= 0) & (scores >= score_thr)
    canvas = image.astype(np.float32).copy()
    h, w = image.shape[:2]
    if masks is not None and keep.any():
        full = paste_masks_numpy(np.asarray(masks)[keep], boxes[keep], (h, w), mask_thr)
        for m, lab in zip(full, labels[keep]):
            colour = np.asarray(PALETTE[int(lab) % len(PALETTE)], np.float32)
            sel = m.astype(bool)
            canvas[sel] = (1 - alpha) * canvas[sel] + alpha * colour
    out = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for box, lab, s in zip(boxes[keep], labels[keep], scores[keep]):
        colour = PALETTE[int(lab) % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        name = class_names[int(lab)] if class_names else str(int(lab))
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {s:.2f}", fill=colour)
    return out


def save_grid(images, path, columns=4):
    """Tile PIL images (same size) into one PNG at ``path``; returns the path."""
    from PIL import Image
    if not images:
        raise KdetError("save_grid needs at least one image")
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    cols = min(columns, len(images))
    grid = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    grid.save(path, format="PNG")
    return path
