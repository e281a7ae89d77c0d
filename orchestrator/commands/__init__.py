"""One module per command family; each takes the `App` and plain arguments and returns plain
data for the CLI to render."""
