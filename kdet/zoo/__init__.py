"""kdet.zoo."""
