"""Script the launcher starts in every process: the ``llm`` command line (see ``launch.py``)."""
from paddlellm.api import main

if __name__ == "__main__":
    main()
