"""What the OpenAPI schema says beyond what drf-spectacular reads from the serializers, so that
it tells the truth about what the server accepts (checked with schemathesis)."""

# Text may not hold a NUL character (core.text_guard); unpaired surrogates cannot be sent as
# UTF-8 at all.
NO_NUL = "^[^\\u0000]*$"


def _strings(node):
    """Every schema of a string without its own format, pattern or choices."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "format", "enum"} & set(node):
            yield node
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def state_input_rules(result, generator, request, public):
    """A postprocessing hook: request bodies refuse unknown fields (every input serializer is a
    ``core.serializers.StrictInputSerializer``), and no text holds a NUL character."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    for schema in _strings(result.get("paths", {})):
        schema["pattern"] = NO_NUL
    for schema in _strings(result.get("components", {})):
        schema["pattern"] = NO_NUL
    return result
