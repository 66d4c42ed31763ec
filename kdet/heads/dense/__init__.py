"""kdet.heads.dense."""
