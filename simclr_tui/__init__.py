"""simclr-tui: a Textual experiment manager for SimCLR runs (see docs/TUI.md).

It reads run directories and launches `python -m core ...` subprocesses; it never imports
torch or trains in its own process.
"""
