"""kdet.ops."""
