"""{{name}}: an OmniFlow piece in Python."""

from omniflow_piece import InvalidInput, Piece, log

piece = Piece("{{name}}", "0.1.0", "Greets someone")


@piece.action(
    "greet",
    "Greet `name`",
    input_schema={
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "description": "Who to greet"}},
    },
    output_schema={
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}},
    },
)
def greet(ctx, input):
    # InvalidInput and Fatal are never retried, Retryable is; any other
    # exception becomes a fatal error with its traceback in the step log.
    name = input["name"].strip()
    if not name:
        raise InvalidInput("name is empty")
    log.info(f"greeting {name} (attempt {ctx.attempt})")
    return {"text": f"Hello, {name}!"}


Handler = piece.handler()  # componentize-py exports the class named Handler
