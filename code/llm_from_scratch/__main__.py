"""``python -m llm_from_scratch train ...``: the book's command line (see :mod:`.cli`)."""

from llm_from_scratch.cli import main

main()
