"""simclr-tui's library and runner. ``from core import load_encoder`` for notebooks
(imported on first use, so the command line starts without torch)."""


def __getattr__(name: str):
    if name == "load_encoder":
        from core.evaluation.export import load_encoder
        return load_encoder
    raise AttributeError(f"module 'core' has no attribute {name!r}")
