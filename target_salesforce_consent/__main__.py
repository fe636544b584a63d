"""`python -m target_salesforce_consent`: the same command as `target-salesforce-consent`."""

from __future__ import annotations

from target_salesforce_consent.target import cli

if __name__ == "__main__":
    cli()
