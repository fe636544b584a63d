"""``python -m tap_didomi.receiver``: the same as the ``didomi-webhook-receiver`` command."""

from tap_didomi.receiver.cli import main

if __name__ == "__main__":
    main()
