"""Canary values and the scan that proves none of them reached an artifact."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

_DATA_URI = re.compile(rb"base64,([A-Za-z0-9+/=]{8,})")


#: Characters of a canary's random part that make a leaked prefix count as a leak.
PARTIAL = 4


def canaries(*names: str) -> dict[str, str]:
    """One unique, unmistakable value per name (``canary<name><hex>x``)."""
    tag = secrets.token_hex(5)
    return {name: f"canary{name}{tag}x" for name in names}


def _partial(name: str, value: str) -> str:
    """The shortest prefix of a canary that already gives part of its secret away:
    ``canary<name>`` and the first :data:`PARTIAL` characters of its random part.
    A prefix of a canary made by :func:`canaries` is unmistakable; other values
    are looked for whole."""
    head = f"canary{name}"
    return value[:len(head) + PARTIAL] if value.startswith(head) else value


def _texts(path: Path) -> Iterable[str]:
    """The file as text, and every base64 payload inside it decoded (pytest-html
    embeds extras and assets as data URIs)."""
    raw = path.read_bytes()
    yield raw.decode("utf-8", errors="replace")
    for m in _DATA_URI.finditer(raw):
        try:
            yield base64.b64decode(m.group(1) + b"==", validate=False).decode(
                "utf-8", errors="replace")
        except ValueError:
            continue


def find_leaks(values: dict[str, str], texts: dict[str, str],
               dirs: Iterable[Path] = ()) -> list[str]:
    """Every place a canary value, or a prefix of it, appears.

    ``"<canary> in <artifact>: ...context..."``. A message that cut a secret
    short still leaks what it kept (issue 11: 36 of 49 characters of a key),
    so a canary counts as leaked from its first :data:`PARTIAL` random
    characters on.
    """
    sources: list[tuple[str, str]] = list(texts.items())
    for d in dirs:
        for f in sorted(p for p in d.rglob("*") if p.is_file()):
            sources += [(str(f), t) for t in _texts(f)]
    leaks = []
    for name, value in values.items():
        for where, text in sources:
            i = text.find(_partial(name, value))
            if i >= 0:
                leaks.append(f"{name} in {where}: ...{text[max(0, i - 120):i + 40]!r}...")
    return leaks
