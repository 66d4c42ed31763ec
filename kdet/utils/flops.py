"""FLOPs (multiply-adds) and parameter counts, counted the way MMClassification's tables are.

MMClassification's model-zoo "Flops(G)" come from mmcv's ``get_model_complexity_info``, which
counts one multiply-add as one FLOP and adds, per module:

* Conv: ``out_h * out_w * k_h * k_w * in_ch / groups * out_ch`` (+ ``out_h*out_w*out_ch``
  when the conv has a bias);
* transposed conv: ``in_h * in_w * k_h * k_w * in_ch * out_ch`` (per *input* position, mmcv's
  ``deconv_flops_counter_hook``; + ``out_h*out_w*out_ch`` with a bias);
* Linear: ``in_features * out_features`` (bias not counted);
* BatchNorm/GroupNorm: ``numel(input)``, doubled when affine;
* ReLU / activations: ``numel(input)``; pooling: ``numel(input)``;
* element-wise functional ops (residual add, SE multiply): not counted (they are not modules).

and ``tools/analysis_tools/get_flops.py`` replaces the classifier's forward by ``extract_feat``
(backbone + neck), so the classification head is not counted (its parameters are). Layers whose
name starts with ``head.`` are skipped unless ``include_head=True``. With these rules all eight
RegNetX rows of the table reproduce to the printed digits (tests/utils/test_flops.py).

``count_flops`` walks the Keras layers of a model called on one image of ``input_shape`` and
applies the same rules, so RegNetX-400MF at 224x224 gives 0.41 G as in the table.
"""
import numpy as np

from kdet.errors import KdetError


def _numel(shape):
    return int(np.prod([d for d in shape if d is not None]))


def _layer_flops(layer, in_shape, out_shape):
    import keras
    kind = type(layer)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw, cout, cin = layer.kernel.shape        # Keras: [kh, kw, out, in]
        flops = _numel(in_shape[1:-1]) * (in_shape[0] or 1) * kh * kw * cin * cout
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            flops += _numel(out_shape[1:-1]) * (out_shape[0] or 1) * cout
        return flops
    if isinstance(layer, keras.layers.Conv2D) or kind.__name__.endswith("DeformConv2D"):
        kh, kw, cin_g, cout = layer.kernel.shape
        spatial = _numel(out_shape[1:-1]) * (out_shape[0] or 1)
        flops = spatial * kh * kw * cin_g * cout
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            flops += spatial * cout
        return flops
    if isinstance(layer, keras.layers.Dense):
        return _numel(in_shape) * layer.units
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.GroupNormalization,
                          keras.layers.LayerNormalization)):
        affine = getattr(layer, "scale", True) or getattr(layer, "center", True)
        return _numel(in_shape) * (2 if affine else 1)
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU)):
        return _numel(in_shape)
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                          keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        return _numel(in_shape)
    return 0


def _leaf_layers(model):
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer._flatten_layers(include_self=False, recursive=False) or \
                type(layer).__name__.endswith("DeformConv2D"):
            out.append(layer)
    return out


def count_flops(model, input_shape=(224, 224, 3), by_layer=False, include_head=False):
    """Multiply-adds of one forward pass on one image of ``input_shape`` (H, W, C).

    Returns an int (or ``(total, {layer_name: flops})`` with ``by_layer=True``). The model must
    be built from Keras layers called functionally (every kdet backbone and classifier is).
    """
    if len(input_shape) != 3:
        raise KdetError(f"input_shape must be (H, W, C), got {input_shape}")
    records = []

    def wrap(layer):
        original = layer.call

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            first_in = args[0] if args else next(iter(kwargs.values()))
            if isinstance(first_in, (list, tuple)):
                first_in = first_in[0]
            first_out = out[0] if isinstance(out, (list, tuple)) else out
            records.append((layer, tuple(first_in.shape), tuple(first_out.shape)))
            return out
        return call

    layers = _leaf_layers(model)
    for layer in layers:
        layer.call = wrap(layer)
    try:
        model(np.zeros((1, *input_shape), dtype="float32"), training=False)
    finally:
        for layer in layers:
            del layer.call
    total, per_layer = 0, {}
    for layer, in_shape, out_shape in records:
        if not include_head and layer.name.startswith("head."):
            continue
        f = _layer_flops(layer, in_shape, out_shape)
        if f:
            per_layer[layer.name] = per_layer.get(layer.name, 0) + f
            total += f
    return (total, per_layer) if by_layer else total


def count_params(model, trainable_only=True):
    """Number of parameters as PyTorch counts them: BatchNorm moving statistics excluded."""
    weights = model.trainable_weights if trainable_only else model.weights
    if trainable_only:
        # frozen stages are still parameters; only BN moving statistics are not
        weights = [w for w in model.weights if not _is_moving_stat(w)]
    return int(sum(_numel(w.shape) for w in weights))


def _is_moving_stat(var):
    name = var.path.split("/")[-1] if var.path else var.name
    return name in ("moving_mean", "moving_variance")
