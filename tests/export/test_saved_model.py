"""kdet.export.export_saved_model: reload without kdet, same detections as the model, stock ops.

The reference is the model itself run on the image that kdet.data.coco_dataset(training=False)
prepares (an independent implementation of the resize/normalise/pad the export does in graph),
with its boxes divided by the pipeline's scale_factor.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdet.errors import KdetError

IMG_SCALE = (320, 256)
MAX_SIZE = 400

# Loads the SavedModel in a process that never imports kdet and runs a signature; prints json.
_LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry
    from tensorflow.core.protobuf import saved_model_pb2
    path, batches = sys.argv[1], [b.split(",") for b in sys.argv[2:]]
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(open(path + "/saved_model.pb", "rb").read())
    ops = {n.op for g in sm.meta_graphs for n in g.graph_def.node}
    ops |= {n.op for g in sm.meta_graphs for f in g.graph_def.library.function for n in f.node_def}
    unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
    m = tf.saved_model.load(path)
    fn = m.signatures["serving_default"]
    res = {"batches": []}
    for files in batches:
        out = fn(images=tf.constant([open(f, "rb").read() for f in files]))
        res["batches"].append({k: v.numpy().tolist() for k, v in out.items()})
    res["_unknown_ops"] = unknown
    res["_kdet_imported"] = any(k == "kdet" or k.startswith("kdet.") for k in sys.modules)
    res["_inputs"] = {k: [v.dtype.name, v.shape.as_list()]
                      for k, v in fn.structured_input_signature[1].items()}
    print("JSON" + json.dumps(res))
""")


def _run_without_kdet(path, batches):
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(path)] + [",".join(map(str, b)) for b in batches],
                          capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("JSON")][-1]
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras
    import kdet
    from kdet.models.base import default_preprocessing
    root = tmp_path_factory.mktemp("export")
    ds = kdet.data.make_shapes_dataset(root / "data", num_images=6, image_size=(200, 300), seed=3,
                                       val_fraction=0.5)
    keras.utils.set_random_seed(1)
    # score_thr 0 so a randomly initialised head still returns 100 ranked detections
    model = kdet.models.RetinaNet("regnetx_400mf", num_classes=3,
                                  preprocessing=default_preprocessing(img_scale=IMG_SCALE),
                                  head={"test_cfg": {"score_thr": 0.0}})
    model(np.zeros((1, 64, 64, 3), np.float32))
    # spread the random head's scores (init std 0.01 gives ~0.01 everywhere, with ties)
    cls = [w for w in model.bbox_head.weights if w.path.endswith("retina_cls/kernel")][0]
    cls.assign(cls.numpy() * 30.0)
    path = kdet.export.export_saved_model(model, root / "sm" / "1", max_image_size=MAX_SIZE,
                                          signatures=("serving_default",))
    return dict(model=model, path=path, ds=ds, root=root)


def _reference(model, ds, ann_file):
    """Model outputs on coco_dataset(training=False) images, boxes in original pixels."""
    import kdet
    data = kdet.data.coco_dataset(ann_file, ds.image_dir, training=False, batch_size=1,
                                  img_scale=IMG_SCALE)
    refs = []
    for images, gt in data:
        out = model(images, img_shape=gt["img_shape"])
        sy, sx = gt["scale_factor"].numpy()[0]
        boxes = out["boxes"].numpy()[0] / np.array([sx, sy, sx, sy], np.float32)
        refs.append((int(gt["image_id"].numpy()[0]), boxes, out["scores"].numpy()[0],
                     out["labels"].numpy()[0], int(out["num_detections"].numpy()[0])))
    return refs


def _assert_same_detections(got, ref, box_atol=0.05):
    """got / ref: (boxes [M, 4], scores [M], labels [M], num). Rows of near-equal score (a
    random head has many) may swap places, so rows are matched, not compared by position."""
    g_boxes, g_scores, g_labels, g_num = (np.asarray(v) for v in got)
    boxes, scores, labels, num = (np.asarray(v) for v in ref)
    assert int(g_num) == int(num) > 0
    np.testing.assert_allclose(g_scores, scores, atol=1e-4)   # both sorted by score
    for j in range(int(num)):
        close = ((np.abs(scores - g_scores[j]) < 1e-4) & (labels == g_labels[j])
                 & (np.abs(boxes - g_boxes[j]).max(-1) < box_atol))
        assert close.any(), (j, g_boxes[j], g_scores[j], g_labels[j])


def _png(path, arr):
    from PIL import Image
    Image.fromarray(arr).save(path)     # lossless: the pixels are known exactly
    return path


def test_reload_without_kdet_matches_model(exported):
    """serving_default in a process without kdet == the model on the pipeline's image; a
    batch mixing two image sizes == each image alone."""
    ds, root = exported["ds"], exported["root"]
    coco = json.load(open(ds.val_ann))
    files = {img["id"]: os.path.join(ds.image_dir, img["file_name"]) for img in coco["images"]}
    refs = _reference(exported["model"], ds, ds.val_ann)
    assert len(refs) == 3
    rng = np.random.RandomState(0)
    small = _png(root / "small.png", rng.randint(0, 255, (120, 90, 3), np.uint8))
    big = _png(root / "big.png", rng.randint(0, 255, (230, 310, 3), np.uint8))
    got = _run_without_kdet(exported["path"], [[files[r[0]] for r in refs], [small, big],
                                               [small], [big]])
    assert got["_kdet_imported"] is False
    assert got["_unknown_ops"] == []          # only ops stock TensorFlow (TF Serving) knows
    assert got["_inputs"] == {"images": ["string", [None]]}
    first, mixed, alone = got["batches"][0], got["batches"][1], got["batches"][2:]
    assert sorted(first) == ["boxes", "labels", "num_detections", "scores"]
    for i, (_, boxes, scores, labels, num) in enumerate(refs):
        _assert_same_detections([first[k][i] for k in ("boxes", "scores", "labels",
                                                       "num_detections")],
                                (boxes, scores, labels, num))
        # boxes in original-image pixels (200 x 300), clipped to it
        assert np.asarray(first["boxes"][i])[:, [0, 2]].max() <= 300
        assert np.asarray(first["boxes"][i])[:, [1, 3]].max() <= 200
        assert np.asarray(first["boxes"][i]).max() > 50      # not left in 256-px input space
    keys = ("boxes", "scores", "labels", "num_detections")
    # In a batch both images are padded to the batch's largest resized height and width (as
    # mmdet pads), and the portrait small image is taller than the landscape big one after the
    # resize, so neither sees exactly its lone input: the confident detections agree, the long
    # tail of near-tied random-head scores (~0.01) may reorder.
    for i in (0, 1):
        np.testing.assert_allclose(mixed["scores"][i][:10], alone[i]["scores"][0][:10], atol=0.05)
    top_mixed, top_alone = np.asarray(mixed["boxes"][1][:5]), np.asarray(alone[1]["boxes"][0][:5])
    assert all(np.abs(top_alone - b).max(-1).min() < 2.0 for b in top_mixed)
    for i, (h, w) in enumerate(((120, 90), (230, 310))):
        b = np.asarray(mixed["boxes"][i])
        assert b[:, [0, 2]].max() <= w and b[:, [1, 3]].max() <= h


def test_graph_has_no_kdet_custom_op(exported):
    from kdet.export import graph_op_types
    ops = graph_op_types(exported["path"])
    assert "DecodeImage" in ops and "ResizeBilinear" in ops
    assert not [op for op in ops if op.startswith("Kdet")]   # KdetRoiAlign, KdetDeformConv2d


def test_rest_request_shape_and_size_limit(exported):
    """The docs' TF Serving REST body fits the signature the way TF Serving maps it
    ("instances" -> batch, {"b64": ...} -> DT_STRING bytes, single named input); an image over
    max_image_size is refused with a message naming the limit."""
    import base64
    import tensorflow as tf
    m = tf.saved_model.load(str(exported["path"]))
    fn = m.signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.string and inputs["images"].shape.as_list() == [None]
    jpg = sorted(pathlib.Path(exported["ds"].image_dir).glob("*.jpg"))[0]
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [{"b64": base64.b64encode(jpg.read_bytes()).decode()}]})
    request = json.loads(body)
    batch = [base64.b64decode(inst["b64"]) for inst in request["instances"]]
    out = m.signatures[request["signature_name"]](images=tf.constant(batch))
    assert out["boxes"].shape == (1, 100, 4) and out["num_detections"].shape == (1,)
    big = tf.io.encode_png(tf.zeros((10, MAX_SIZE + 1, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_size=400"):
        fn(images=tf.reshape(big, [1]))


def test_bad_arguments(exported, tmp_path):
    from kdet.export import export_saved_model
    model = exported["model"]
    with pytest.raises(KdetError, match="not empty"):
        export_saved_model(model, exported["path"])
    with pytest.raises(KdetError, match="input_size"):
        export_saved_model(model, tmp_path / "a", input_size=(100, 128))
    with pytest.raises(KdetError, match="unknown signature"):
        export_saved_model(model, tmp_path / "b", signatures=("serving_bytes",))
    import keras
    with pytest.raises(KdetError, match="preprocessing"):
        export_saved_model(keras.Sequential([keras.layers.Dense(1)]), tmp_path / "c")


@pytest.mark.slow
def test_mask_rcnn_all_signatures_fixed_size(tmp_path):
    """Mask R-CNN, fixed padded input_size: masks come out of every signature, the pixel
    signature equals the bytes one, and no kdet op is in the graph."""
    import tensorflow as tf
    import kdet
    from kdet.models.base import default_preprocessing
    model = kdet.models.MaskRCNN("regnetx_400mf", num_classes=3,
                                 preprocessing=default_preprocessing(img_scale=IMG_SCALE),
                                 test_cfg={"rcnn": {"score_thr": 0.0}})
    model(np.zeros((1, 64, 64, 3), np.float32))
    path = kdet.export.export_saved_model(model, tmp_path / "sm", input_size=(320, 320))
    m = tf.saved_model.load(str(path))
    arr = np.random.RandomState(0).randint(0, 255, (150, 200, 3), np.uint8)
    png = tf.io.encode_png(arr)
    keys = ("boxes", "scores", "labels", "num_detections")
    by_bytes = m.signatures["serving_default"](images=tf.reshape(png, [1]))
    by_pixels = m.signatures["predict_pixels"](images=tf.constant(arr[None]))
    _assert_same_detections([by_pixels[k][0] for k in keys], [by_bytes[k][0] for k in keys])
    assert by_bytes["masks"].shape[:3] == (1, 100, 28)
    assert by_bytes["boxes"].numpy()[..., [0, 2]].max() <= 200
    x = np.random.RandomState(1).randn(1, 320, 320, 3).astype(np.float32)
    norm = m.signatures["predict_normalized"](images=tf.constant(x))
    ref = model(x)
    _assert_same_detections([norm[k][0] for k in keys], [ref[k][0] for k in keys])
    assert norm["masks"].shape == ref["masks"].shape
    from kdet.export import graph_op_types
    assert not [op for op in graph_op_types(path) if op.startswith("Kdet")]
