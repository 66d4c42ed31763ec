"""Small helpers for configs (plain dicts, lists and scalars)."""


def jsonable(value):
    """Tuples -> lists, recursively, so that a config compares equal after a JSON round trip."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
