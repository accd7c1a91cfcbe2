"""API key validation. Pure functions: never return or log a key's value."""

from __future__ import annotations

import re

EXPECTED_PREFIX: dict[str, str] = {
    "OPENROUTER_API_KEY": "sk-or-v1-",
    "OPENAI_API_KEY": "sk-",
    "ANTHROPIC_API_KEY": "sk-ant-",
    "STRIPE_SECRET_KEY": "sk_test_",
}

_PLACEHOLDER = re.compile(r"^your[-_].*[-_]here$", re.IGNORECASE)

CONNECTED = "connected"


def key_status(name: str, value: str | None) -> str:
    """One word describing a key: ``connected`` when usable, else what is wrong."""
    if value is None or value == "":
        return "missing"
    if value != value.strip() or value[:1] in "\"'" or value[-1:] in "\"'":
        return "malformed"
    if _PLACEHOLDER.match(value) or "placeholder" in value.lower():
        return "placeholder"
    prefix = EXPECTED_PREFIX.get(name)
    if prefix and not value.startswith(prefix):
        return "invalid_credentials"
    return CONNECTED


def combined_status(statuses: dict[str, str]) -> str:
    """The first non-connected word of several keys, or ``connected``."""
    for word in statuses.values():
        if word != CONNECTED:
            return word
    return CONNECTED
