"""kdet.evaluation."""
