"""``python -m paddlellm`` runs the ``llm`` command line."""
from .cli import main

main()
