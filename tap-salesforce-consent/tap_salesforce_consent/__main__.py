"""``python -m tap_salesforce_consent``: the same as the ``tap-salesforce-consent`` command."""

from tap_salesforce_consent.tap import cli

if __name__ == "__main__":
    cli()
