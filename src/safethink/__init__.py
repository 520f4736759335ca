"""safethink: teach language models to reason about safety before they answer, and measure it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
