"""What the receiver accepts as a webhook, and which webhooks are guests (pure logic)."""

from __future__ import annotations

import json
from typing import Any

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: a Didomi webhook is a few kilobytes


class BadWebhook(ValueError):
    """The body is not a Didomi webhook; the message says why."""


def parse_webhook(body: bytes) -> dict[str, Any]:
    """The webhook as a JSON object with a string ``type``, or BadWebhook."""
    try:
        webhook = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadWebhook(f"the body is not JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(webhook, dict):
        raise BadWebhook("the body is not a JSON object: a Didomi webhook is "
                         '{"type": ..., "parameters": {...}}')
    if not isinstance(webhook.get("type"), str) or not webhook["type"]:
        raise BadWebhook('the body has no string "type" (e.g. "user.updated")')
    return webhook


def has_organization_user_id(value: Any) -> bool:
    """Whether a non-blank ``organization_user_id`` appears anywhere in the webhook.

    Also matches the keys of Didomi's flattened payloads (``entity__user__organization_user_id``).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if (isinstance(key, str) and key.endswith("organization_user_id")
                        and isinstance(inner, str) and inner.strip()):
                    return True
                if isinstance(inner, (dict, list)):
                    stack.append(inner)
        elif isinstance(item, list):
            stack.extend(i for i in item if isinstance(i, (dict, list)))
    return False
