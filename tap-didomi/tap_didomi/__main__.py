"""``python -m tap_didomi``: the same as the ``tap-didomi`` command."""

from tap_didomi.tap import cli

if __name__ == "__main__":
    cli()
