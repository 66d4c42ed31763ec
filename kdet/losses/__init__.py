"""kdet.losses."""
