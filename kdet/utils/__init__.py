"""kdet.utils."""
