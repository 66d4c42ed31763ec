"""kdet.heads.roi."""
