"""The `vimbench` command line (Typer + rich). Commands are thin: they parse, call the library, print."""
