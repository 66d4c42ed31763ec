"""MMDetection v2 detector checkpoints -> kdet detectors (``load_weights(model, sd, "mmdet")``).

The checkpoint key names and shapes are written here from MMDetection 2.x's module tree and the
architecture hyper-parameters (mmdet/models: backbones/regnet.py + resnet.py Bottleneck,
necks/fpn.py, dense_heads/{rpn,retina,atss,paa}_head.py, roi_heads/bbox_heads/
convfc_bbox_head.py, roi_heads/mask_heads/fcn_mask_head.py; mmcv ``ConvModule`` names its
parts ``conv`` / ``bn`` / ``gn``, and has no conv bias when a norm follows), never from kdet's
own map. Random tensors are ``torch.save``d as ``{"state_dict": ..., "meta": ...}`` (mmcv's
layout), read back with ``read_torch_checkpoint`` and loaded strictly.

Numerical checks against torch for the layout traps: the box head's first FC ((C, H, W)
flattening in PyTorch vs (H, W, C) in kdet), the class order (background last) and the
class-specific deltas, the mask head's transposed conv, a GN head with Scale (ATSS), and the
anchor order behind the anchor-major channels of rpn_cls / retina_cls.
"""
import collections

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch CPU is the test-only reference; install torch==2.13.0 "
    "(`pip install -e .[test]`) to run the mmdet checkpoint tests")

import tensorflow as tf  # noqa: E402

import kdet  # noqa: E402
from kdet.convert import export_state_dict, load_weights, read_torch_checkpoint  # noqa: E402
from kdet.errors import CheckpointError  # noqa: E402

pytestmark = pytest.mark.torch
TOL = 1e-4

# Small heads keep the file fast; the key structure is the real one.
NUM_CLASSES = 3
FPN_CH = 32          # neck.out_channels (mmdet: 256)
HEAD_CH = 32         # rpn / dense-head feat_channels (mmdet: 256; GN(32) needs a multiple of 32)
FC_CH = 64           # roi_head.bbox_head.fc_out_channels (mmdet: 1024)
MASK_CH = 32         # roi_head.mask_head.conv_out_channels (mmdet: 256)
STACKED = 2          # dense-head tower depth (mmdet: 4)
# mmdet RegNet arch 'regnetx_400mf' (w0=24, wa=24.48, wm=2.54, group_w=16, depth=22):
# stem 32, stage widths / depths below, bottleneck ratio 1, group width 16.
REGNET = dict(stem=32, widths=(32, 64, 160, 384), depths=(1, 2, 7, 12), group_w=16)


# -- mmdet state-dict structure (names + shapes) ---------------------------------------------

def _conv(keys, name, out, inp, k, bias=True):
    keys[f"{name}.weight"] = (out, inp, k, k)
    if bias:
        keys[f"{name}.bias"] = (out,)


def _bn(keys, name, c):
    for p in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{p}"] = (c,)
    keys[f"{name}.num_batches_tracked"] = ()


def _linear(keys, name, out, inp):
    keys[f"{name}.weight"] = (out, inp)
    keys[f"{name}.bias"] = (out,)


def mmdet_regnet(keys):
    """mmdet RegNet (ResNet layout): conv1/bn1 stem, layer{i}.{j}.conv1..bn3 + downsample."""
    _conv(keys, "backbone.conv1", REGNET["stem"], 3, 3, bias=False)
    _bn(keys, "backbone.bn1", REGNET["stem"])
    cin = REGNET["stem"]
    for i, (w, d) in enumerate(zip(REGNET["widths"], REGNET["depths"]), 1):
        for j in range(d):
            p = f"backbone.layer{i}.{j}"
            inp = cin if j == 0 else w
            _conv(keys, f"{p}.conv1", w, inp, 1, bias=False)
            _bn(keys, f"{p}.bn1", w)
            _conv(keys, f"{p}.conv2", w, REGNET["group_w"], 3, bias=False)  # groups w/16
            _bn(keys, f"{p}.bn2", w)
            _conv(keys, f"{p}.conv3", w, w, 1, bias=False)
            _bn(keys, f"{p}.bn3", w)
            if j == 0:  # stride 2 in every stage
                _conv(keys, f"{p}.downsample.0", w, inp, 1, bias=False)
                _bn(keys, f"{p}.downsample.1", w)
        cin = w


def mmdet_fpn(keys, start_level, num_outs, add_extra_convs):
    ins = REGNET["widths"]
    used = ins[start_level:]
    for i, c in enumerate(used):
        _conv(keys, f"neck.lateral_convs.{i}.conv", FPN_CH, c, 1)
    for i in range(len(used)):
        _conv(keys, f"neck.fpn_convs.{i}.conv", FPN_CH, FPN_CH, 3)
    for j in range(num_outs - len(used) if add_extra_convs else 0):
        inp = ins[-1] if (j == 0 and add_extra_convs == "on_input") else FPN_CH
        _conv(keys, f"neck.fpn_convs.{len(used) + j}.conv", FPN_CH, inp, 3)


def mmdet_two_stage(with_mask, num_classes=NUM_CLASSES):
    keys = collections.OrderedDict()
    mmdet_regnet(keys)
    mmdet_fpn(keys, 0, 5, False)
    a = 3  # RPN anchors: scales (8,) x ratios (0.5, 1, 2)
    _conv(keys, "rpn_head.rpn_conv", HEAD_CH, FPN_CH, 3)
    _conv(keys, "rpn_head.rpn_cls", a * 1, HEAD_CH, 1)  # sigmoid: cls_out_channels 1
    _conv(keys, "rpn_head.rpn_reg", a * 4, HEAD_CH, 1)
    b = "roi_head.bbox_head"
    _linear(keys, f"{b}.shared_fcs.0", FC_CH, FPN_CH * 7 * 7)
    _linear(keys, f"{b}.shared_fcs.1", FC_CH, FC_CH)
    _linear(keys, f"{b}.fc_cls", num_classes + 1, FC_CH)
    _linear(keys, f"{b}.fc_reg", 4 * num_classes, FC_CH)
    if with_mask:
        m = "roi_head.mask_head"
        for i in range(4):
            _conv(keys, f"{m}.convs.{i}.conv", MASK_CH, FPN_CH if i == 0 else MASK_CH, 3)
        keys[f"{m}.upsample.weight"] = (MASK_CH, MASK_CH, 2, 2)  # ConvTranspose2d [in, out, ..]
        keys[f"{m}.upsample.bias"] = (MASK_CH,)
        _conv(keys, f"{m}.conv_logits", num_classes, MASK_CH, 1)
    return keys


def mmdet_single_stage(kind, num_classes=NUM_CLASSES):
    keys = collections.OrderedDict()
    mmdet_regnet(keys)
    mmdet_fpn(keys, 1, 5, "on_input" if kind == "retina" else "on_output")
    gn = kind != "retina"
    for tower in ("cls_convs", "reg_convs"):
        for i in range(STACKED):
            _conv(keys, f"bbox_head.{tower}.{i}.conv", HEAD_CH, FPN_CH if i == 0 else HEAD_CH, 3,
                  bias=not gn)
            if gn:
                keys[f"bbox_head.{tower}.{i}.gn.weight"] = (HEAD_CH,)
                keys[f"bbox_head.{tower}.{i}.gn.bias"] = (HEAD_CH,)
    if kind == "retina":
        a = 9  # octave_base_scale 4, scales_per_octave 3, ratios (0.5, 1, 2)
        _conv(keys, "bbox_head.retina_cls", a * num_classes, HEAD_CH, 3)
        _conv(keys, "bbox_head.retina_reg", a * 4, HEAD_CH, 3)
    else:  # ATSS and PAA (PAAHead(ATSSHead): atss_centerness predicts the IoU)
        _conv(keys, "bbox_head.atss_cls", num_classes, HEAD_CH, 3)
        _conv(keys, "bbox_head.atss_reg", 4, HEAD_CH, 3)
        _conv(keys, "bbox_head.atss_centerness", 1, HEAD_CH, 3)
        for i in range(5):
            keys[f"bbox_head.scales.{i}.scale"] = ()  # mmcv Scale: 0-d parameter
    return keys


def random_state(keys, seed):
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.int64)
        elif k.endswith("running_var"):
            sd[k] = torch.from_numpy(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif k.endswith(".scale"):
            sd[k] = torch.tensor(float(rng.uniform(0.5, 2.0)))
        else:
            sd[k] = torch.from_numpy((rng.standard_normal(shape) * 0.1).astype(np.float32))
    return sd


def save_mmdet(path, keys, seed=0):
    sd = random_state(keys, seed)
    torch.save({"state_dict": sd, "meta": {"mmdet_version": "2.28.2", "epoch": 12,
                                           "CLASSES": ("a", "b", "c")}}, path)
    return sd


# -- kdet models (module-scoped: building them is most of the cost) --------------------------

def _build(name):
    bb = dict(backbone="regnetx_400mf", num_classes=NUM_CLASSES)
    if name in ("faster_rcnn", "mask_rcnn"):
        cls = kdet.models.FasterRCNN if name == "faster_rcnn" else kdet.models.MaskRCNN
        return cls(**bb, neck=dict(out_channels=FPN_CH), rpn_head=dict(feat_channels=HEAD_CH),
                   roi_head=dict(fc_out_channels=FC_CH, mask_conv_channels=MASK_CH))
    cls = {"retinanet": kdet.models.RetinaNet, "atss": kdet.models.ATSS,
           "paa": kdet.models.PAA}[name]
    model = cls(**bb, neck=dict(out_channels=FPN_CH),
                head=dict(feat_channels=HEAD_CH, stacked_convs=STACKED))
    model.build((None, None, None, 3))
    return model


_MODELS = {}


def model(name):
    if name not in _MODELS:
        _MODELS[name] = _build(name)
    return _MODELS[name]


KEYS = {"faster_rcnn": lambda: mmdet_two_stage(False), "mask_rcnn": lambda: mmdet_two_stage(True),
        "retinanet": lambda: mmdet_single_stage("retina"),
        "atss": lambda: mmdet_single_stage("atss"), "paa": lambda: mmdet_single_stage("paa")}


SENTINEL = 1234.5  # no random value equals it: every variable must be overwritten


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """{name: (model, torch state dict, LoadResult)}: each model's variables set to SENTINEL,
    then a torch-saved mmdet checkpoint read with read_torch_checkpoint and loaded strictly."""
    out = {}
    for seed, name in enumerate(KEYS):
        path = tmp_path_factory.mktemp("ckpt") / f"{name}.pth"
        sd = save_mmdet(path, KEYS[name](), seed=seed)
        m = model(name)
        for v in m.weights:
            v.assign(np.full(v.shape, SENTINEL, v.dtype))
        state = read_torch_checkpoint(path)
        assert set(state) == set(sd)
        out[name] = (m, sd, load_weights(m, state, "mmdet", verbose=False))
    return out


@pytest.mark.parametrize("name", list(KEYS))
def test_strict_load_of_a_torch_saved_mmdet_checkpoint(name, loaded):
    m, sd, result = loaded[name]
    counters = [k for k in sd if k.endswith("num_batches_tracked")]
    assert result.ok
    assert len(result.loaded) == len(sd) - len(counters) == len(m.weights)
    assert sorted(k for k, _ in result.skipped) == sorted(counters)
    for v in m.weights:
        assert not np.any(np.asarray(v.numpy()) == SENTINEL), f"{v.path} was not loaded"
    back = export_state_dict(m)  # kdet -> PyTorch layout: exactly the checkpoint
    assert set(back) == set(sd) - set(counters)
    for k, arr in back.items():
        np.testing.assert_array_equal(arr, sd[k].numpy(), err_msg=k)


def test_layouts_of_loaded_variables(loaded):
    """Spot checks against layouts written here (not through kdet's transforms)."""
    m, sd, _ = loaded["mask_rcnn"]
    lateral = sd["neck.lateral_convs.1.conv.weight"].numpy()  # [O, I, kh, kw]
    np.testing.assert_array_equal(m.neck.lateral_convs[1].kernel.numpy(),
                                  lateral.transpose(2, 3, 1, 0))
    w = sd["roi_head.bbox_head.shared_fcs.0.weight"].numpy()  # [O, C*7*7], input (c, h, w)
    want = w.reshape(FC_CH, FPN_CH, 7, 7).transpose(2, 3, 1, 0).reshape(-1, FC_CH)
    np.testing.assert_array_equal(m.roi_head.bbox_head.shared_fcs[0].kernel.numpy(), want)
    up = sd["roi_head.mask_head.upsample.weight"].numpy()  # [in, out, kh, kw]
    np.testing.assert_array_equal(m.roi_head.mask_head.upsample.kernel.numpy(),
                                  up.transpose(2, 3, 1, 0))  # Keras [kh, kw, out, in]
    a, sd_a, _ = loaded["atss"]
    assert float(a.bbox_head.scales[3].scale.numpy()) == float(sd_a["bbox_head.scales.3.scale"])
    np.testing.assert_array_equal(a.bbox_head.cls_norms[1].gamma.numpy(),
                                  sd_a["bbox_head.cls_convs.1.gn.weight"].numpy())


def test_bbox_head_matches_torch(loaded):
    """Shared2FC box head: torch Linear on (C, H, W)-flattened RoI features == kdet on NHWC;
    the softmax score of class k (background last) and the deltas of class k agree."""
    m, sd, _ = loaded["faster_rcnn"]
    head = m.roi_head.bbox_head
    b = "roi_head.bbox_head"
    lin = {}
    for name in ("shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg"):
        w = sd[f"{b}.{name}.weight"]
        lin[name] = torch.nn.Linear(w.shape[1], w.shape[0])
        lin[name].load_state_dict({"weight": w, "bias": sd[f"{b}.{name}.bias"]})
    g = torch.Generator().manual_seed(3)
    k = 5
    x = torch.randn(k, FPN_CH, 7, 7, generator=g)
    with torch.no_grad():  # mmdet ConvFCBBoxHead.forward
        h = x.flatten(1)
        h = torch.relu(lin["shared_fcs.1"](torch.relu(lin["shared_fcs.0"](h))))
        cls_t, reg_t = lin["fc_cls"](h).numpy(), lin["fc_reg"](h).numpy()
    cls_k, reg_k = (np.asarray(t) for t in head(x.permute(0, 2, 3, 1).numpy()))
    assert np.abs(cls_k - cls_t).max() < TOL and np.abs(reg_k - reg_t).max() < TOL
    # regression: mmdet reads class j's deltas as bbox_pred.view(K, -1, 4)[:, j]
    labels = np.array([0, 2, 1, 2, 0], np.int32)
    got = np.asarray(head._class_deltas(reg_k, labels))
    np.testing.assert_allclose(got, reg_t.reshape(k, -1, 4)[np.arange(k), labels], atol=TOL)
    # classification through kdet's inference path: one RoI per image; each detection of
    # label j must carry torch's softmax probability of class j (mmdet: BG is the last logit)
    probs_t = torch.softmax(torch.from_numpy(cls_t), -1).numpy()
    rois = tf.constant([[[10.0, 12.0, 60.0, 70.0]]] * k)
    img_shape = tf.constant([[100.0, 100.0]] * k)
    dets = head.predict(rois, tf.ones([k, 1], tf.bool), cls_k, reg_k, img_shape,
                        dict(score_thr=0.0, iou_threshold=0.5, max_per_img=NUM_CLASSES))
    lab, sc = dets["labels"].numpy(), dets["scores"].numpy()
    assert (lab >= 0).all()
    for i in range(k):
        np.testing.assert_allclose(sc[i], probs_t[i, lab[i]], atol=1e-5)
        assert sorted(lab[i]) == list(range(NUM_CLASSES))


def test_mask_head_matches_torch(loaded):
    """FCN mask head: 4 convs, ConvTranspose2d(2, stride 2), conv_logits; channel k = class k."""
    m, sd, _ = loaded["mask_rcnn"]
    p = "roi_head.mask_head"
    convs = []
    for i in range(4):
        c = torch.nn.Conv2d(FPN_CH if i == 0 else MASK_CH, MASK_CH, 3, padding=1)
        c.load_state_dict({"weight": sd[f"{p}.convs.{i}.conv.weight"],
                           "bias": sd[f"{p}.convs.{i}.conv.bias"]})
        convs.append(c)
    up = torch.nn.ConvTranspose2d(MASK_CH, MASK_CH, 2, stride=2)
    up.load_state_dict({"weight": sd[f"{p}.upsample.weight"], "bias": sd[f"{p}.upsample.bias"]})
    logits = torch.nn.Conv2d(MASK_CH, NUM_CLASSES, 1)
    logits.load_state_dict({"weight": sd[f"{p}.conv_logits.weight"],
                            "bias": sd[f"{p}.conv_logits.bias"]})
    x = torch.randn(3, FPN_CH, 14, 14, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = x
        for c in convs:
            h = torch.relu(c(h))
        out_t = logits(torch.relu(up(h)))  # [K, C, 28, 28]
    out_k = np.asarray(m.roi_head.mask_head(x.permute(0, 2, 3, 1).numpy()))
    assert out_k.shape == (3, 28, 28, NUM_CLASSES)
    assert np.abs(out_k - out_t.permute(0, 2, 3, 1).numpy()).max() < TOL
    labels = np.array([2, 0, 1], np.int32)  # mmdet: mask_pred[range(N), labels].sigmoid()
    want = torch.sigmoid(out_t[torch.arange(3), torch.from_numpy(labels).long()]).numpy()
    got = np.asarray(m.roi_head.mask_head.predict(out_k, labels))
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("name", ["atss", "paa"])
def test_gn_head_with_scales_matches_torch(name, loaded):
    """ATSSHead.forward_single (ConvModule conv + GN(32) + ReLU towers, Scale on the deltas,
    centerness / IoU branch) on one level equals kdet's head."""
    m, sd, _ = loaded[name]

    def conv(key, inp, out, bias=True):
        c = torch.nn.Conv2d(inp, out, 3, padding=1, bias=bias)
        c.load_state_dict({"weight": sd[f"{key}.weight"], **({"bias": sd[f"{key}.bias"]}
                                                              if bias else {})})
        return c

    def tower(name_):
        layers = []
        for i in range(STACKED):
            gn = torch.nn.GroupNorm(32, HEAD_CH)
            gn.load_state_dict({"weight": sd[f"bbox_head.{name_}.{i}.gn.weight"],
                                "bias": sd[f"bbox_head.{name_}.{i}.gn.bias"]})
            layers += [conv(f"bbox_head.{name_}.{i}.conv", FPN_CH if i == 0 else HEAD_CH,
                            HEAD_CH, bias=False), gn, torch.nn.ReLU()]
        return torch.nn.Sequential(*layers)

    level = 2
    x = torch.randn(1, FPN_CH, 6, 9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cf, rf = tower("cls_convs")(x), tower("reg_convs")(x)
        want = {"cls_scores": conv("bbox_head.atss_cls", HEAD_CH, NUM_CLASSES)(cf),
                "bbox_preds": conv("bbox_head.atss_reg", HEAD_CH, 4)(rf)
                * sd[f"bbox_head.scales.{level}.scale"],
                "score_factors": conv("bbox_head.atss_centerness", HEAD_CH, 1)(rf)}
    got = m.bbox_head.forward_single(tf.constant(x.permute(0, 2, 3, 1).numpy()), level,
                                     training=False)
    for key, t in want.items():
        assert np.abs(np.asarray(got[key]) - t.permute(0, 2, 3, 1).numpy()).max() < TOL, key


def _mmdet_grid_anchors(stride, scales, ratios, h, w):
    """mmdet v2 AnchorGenerator (center_offset 0, scale_major): base anchors ratio-major with
    scales inner, then ``base[None] + shifts[:, None]`` over the row-major grid."""
    h_ratios = np.sqrt(np.asarray(ratios, np.float32))
    w_ratios = 1.0 / h_ratios
    ws = (stride * w_ratios[:, None] * np.asarray(scales, np.float32)[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * np.asarray(scales, np.float32)[None, :]).reshape(-1)
    base = np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=-1)
    xx, yy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], axis=-1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def test_anchor_order_matches_mmdet(loaded):
    """rpn_cls / retina_cls channels are anchor-major (channel = anchor * C + class) in mmdet;
    kdet reads them the same way, so the A anchors of a location must be in mmdet's order."""
    retina = loaded["retinanet"][0].bbox_head
    rpn = model("faster_rcnn").rpn_head
    for head, scales, ratios, stride in (
            (retina, [4 * 2 ** (i / 3) for i in range(3)], [0.5, 1.0, 2.0], 8),
            (rpn, [8], [0.5, 1.0, 2.0], 4)):
        sizes = [(3, 4), (2, 3), (2, 2), (1, 2), (1, 1)]
        for level, got in enumerate(head.anchor_generator.grid_anchors(sizes)):
            want = _mmdet_grid_anchors(stride * 2 ** level, scales, ratios, *sizes[level])
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)
    # mmdet: cls_score.permute(0, 2, 3, 1).reshape(B, -1, C) pairs row i with anchor i
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 9 * NUM_CLASSES)).astype(np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)  # the NCHW map torch would hold
    want = t.permute(0, 2, 3, 1).reshape(1, -1, NUM_CLASSES).numpy()
    from kdet.heads.dense.base import flatten_level
    np.testing.assert_array_equal(flatten_level(tf.constant(x), NUM_CLASSES).numpy(), want)


def test_wrong_checkpoints_are_refused_with_a_useful_message(tmp_path):
    m = model("faster_rcnn")
    before = m.roi_head.bbox_head.fc_cls.kernel.numpy().copy()
    path = tmp_path / "five_classes.pth"
    save_mmdet(path, mmdet_two_stage(False, num_classes=5))
    with pytest.raises(CheckpointError) as err:
        load_weights(m, read_torch_checkpoint(path), "mmdet", verbose=False)
    msg = str(err.value)
    assert "4 shape-mismatched" in msg and "roi_head.bbox_head.fc_cls.weight" in msg
    assert "(6, 64)" in msg and "num_classes" in msg and "nothing was loaded" in msg
    np.testing.assert_array_equal(m.roi_head.bbox_head.fc_cls.kernel.numpy(), before)
    # a Mask R-CNN checkpoint into Faster R-CNN: the mask head is unexpected
    path = tmp_path / "mask.pth"
    save_mmdet(path, mmdet_two_stage(True))
    with pytest.raises(CheckpointError, match="12 unexpected") as err:
        load_weights(m, read_torch_checkpoint(path), "mmdet", verbose=False)
    assert any(k.startswith("roi_head.mask_head.") for k in err.value.result.unexpected)
