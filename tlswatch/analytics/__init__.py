"""Read the store and turn it into figures and plain language (no HTML, no Typer here)."""
