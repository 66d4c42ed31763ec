"""kdet.training."""
