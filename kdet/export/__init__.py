"""kdet.export: SavedModels for TF Serving (encoded image bytes -> detections)."""
from kdet.export.saved_model import (  # noqa: F401
    DEFAULT_MAX_IMAGE_SIZE, SIGNATURES, export_saved_model, graph_op_types,
)

__all__ = ["export_saved_model", "graph_op_types", "SIGNATURES", "DEFAULT_MAX_IMAGE_SIZE"]
