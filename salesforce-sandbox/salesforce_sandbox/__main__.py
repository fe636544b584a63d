"""``python -m salesforce_sandbox``: the same as the ``salesforce-sandbox`` command."""

from .cli import main

raise SystemExit(main())
