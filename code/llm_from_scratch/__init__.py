"""LLM From Scratch: the shared package behind the textbook's lessons."""

__version__ = "0.1.0"
