"""kdet.convert."""
