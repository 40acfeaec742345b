"""The `pylon` command line: thin typer commands over the packages (nothing imports cli)."""
