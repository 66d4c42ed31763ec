"""kdet.core."""
