"""The `lenstop` command line (Typer): it parses, calls the engine in `lenstop.models`, and prints
a rich table or one JSON document; `cli.main` is the console script."""
