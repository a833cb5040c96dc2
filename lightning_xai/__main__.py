"""``python -m lightning_xai`` is the ``lightning-xai`` command."""

from lightning_xai.cli import main

if __name__ == "__main__":
    main()
