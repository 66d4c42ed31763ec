"""Choosing between a custom C++/CUDA op and its pure-TF twin.

``"auto"`` (the default) picks the custom op when the op library is loaded and the call is not
being traced for XLA; ``"tf"`` always picks the twin; ``"custom"`` insists on the op and fails
with a clear error where it cannot run. XLA (``tf.function(jit_compile=True)``, Keras
``jit_compile=True``, which Keras' ``"auto"`` resolves to on GPU) refuses custom ops with
``No registered 'X' OpKernel for XLA_CPU_JIT``, hence the XLA-context check.

    kdet.ops.set_implementation("tf")          # process-wide
    with kdet.ops.use_implementation("tf"):    # for a block, e.g. while exporting
        tf.saved_model.save(...)               # -> the graph holds no kdet op
"""
import contextlib
import threading

from kdet.errors import KdetError

IMPLEMENTATIONS = ("auto", "custom", "tf")

_lock = threading.Lock()
# Process-wide rather than thread-local on purpose: tf.distribute runs replica functions in
# other threads, and they must see the setting of the thread that traces the model.
_setting = {"implementation": "auto"}


def _check(name):
    if name not in IMPLEMENTATIONS:
        raise KdetError(f"implementation must be one of {IMPLEMENTATIONS}, got {name!r}")
    return name


def set_implementation(name):
    """Set the process-wide default: ``"auto"``, ``"custom"`` or ``"tf"``."""
    with _lock:
        _setting["implementation"] = _check(name)


def get_implementation():
    """The process-wide default set by `set_implementation` / `use_implementation`."""
    return _setting["implementation"]


@contextlib.contextmanager
def use_implementation(name):
    """Within the block, kdet ops use ``name`` (``"tf"`` when exporting a SavedModel)."""
    _check(name)
    with _lock:
        previous = _setting["implementation"]
        _setting["implementation"] = name
    try:
        yield
    finally:
        with _lock:
            _setting["implementation"] = previous


def in_xla_context():
    """True while tracing a function that XLA will compile (this graph or an outer one)."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _library_op(op):
    from kdet.custom_ops import build
    module = build.load_library()
    if module is None:
        return None, f"the op library is unavailable ({build.info()['reason']})"
    if op is not None and not hasattr(module, op):
        return None, f"the op library has no op {op!r} (rebuild with `kdet ops build`)"
    return module, None


def select(implementation=None, op=None):
    """Resolve an implementation argument to ``"custom"`` or ``"tf"``.

    Args:
      implementation: ``None`` (use the process-wide setting), ``"auto"``, ``"custom"``, ``"tf"``.
      op: name of the Python wrapper in the op library (e.g. ``"kdet_roi_align"``); when given,
        ``"custom"`` also requires that the loaded library has it.
    Raises:
      KdetError: unknown name, or ``"custom"`` requested where it cannot run (inside an XLA
        context, or with no op library).
    """
    name = _check(get_implementation() if implementation is None else implementation)
    if name == "tf":
        return "tf"
    if in_xla_context():
        if name == "custom":
            raise KdetError(
                f"implementation='custom' was requested{f' for {op}' if op else ''} inside an "
                "XLA-compiled function (jit_compile=True); XLA cannot run custom ops. Use "
                "implementation='auto' or 'tf', or compile without XLA (jit_compile=False).")
        return "tf"
    module, why_not = _library_op(op)
    if module is None:
        if name == "custom":
            raise KdetError(f"implementation='custom' was requested but {why_not}")
        return "tf"
    return "custom"


def explain(op=None):
    """One line saying what ``"auto"`` picks here, outside XLA, and why (for ``kdet ops info``)."""
    name = get_implementation()
    if name == "tf":
        return "tf (set by set_implementation/use_implementation)"
    module, why_not = _library_op(op)
    if module is None:
        return f"tf, because {why_not}"
    return ("custom outside XLA, tf inside jit_compile=True functions "
            f"({'forced' if name == 'custom' else 'auto'})")
