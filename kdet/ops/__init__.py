"""kdet.ops."""
from kdet.ops._dispatch import (  # noqa: F401  (custom op <-> pure-TF twin switch)
    get_implementation, in_xla_context, set_implementation, use_implementation,
)
