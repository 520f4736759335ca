"""``python -m safethink.cli ...`` (used by ``accelerate launch -m safethink.cli train ...``)."""

from . import main

if __name__ == "__main__":
    main()
