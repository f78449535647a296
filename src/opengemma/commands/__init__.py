"""One module per CLI verb; each exposes a Typer app named `app`."""
