"""kdet.necks."""
