"""``python -m llm_from_scratch COMMAND ...``: train, generate or chat (see :mod:`.cli`)."""

from llm_from_scratch.cli import main

result = main()
# generate returns its exit status; train returns its result, and success
raise SystemExit(result if isinstance(result, int) else 0)
