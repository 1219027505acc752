"""How many indicators Station would extract from a report body, counted fast.

Station rejects a report with more than 500 indicators (docs/decisions.md#indicator-cap). ``count_indicators`` is the
exact-enough count the mapper trims against; ``indicator_bound`` is a C-speed upper bound that spares
the count for the common, small finding.
"""

from __future__ import annotations

import re

_SEPARATORS = str.maketrans(dict.fromkeys("\"',;()[]{}<>=/\\|*!?$^`&#~", " "))
_WHOLE_INDICATOR = re.compile(
    r"(?:(?:\d{1,3}\.){3}\d{1,3}"  # IPv4
    r"|(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}"  # domain names (file names like x.sh too: over-counting is safe)
    r"|[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}"  # e-mail addresses
    r"|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}"  # sha256 / sha1 / md5 (finding ids look like md5)
    r"|[0-9A-Fa-f:.]*::[0-9A-Fa-f:.]*|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){3,7}(?:\.\d{1,3}){0,3}"  # IPv6
    r")\Z"
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>,]+")


def count_indicators(text: str) -> int:
    """Count distinct indicator-like tokens (IPs, domains, hashes, URLs, e-mails) as Station might.

    Speed: indicators hold no separators, so the text is cut into distinct words by one C-level
    ``translate`` + ``split`` and only words with a dot, an @, a colon or hash length are matched.
    """
    found = set()
    for word in _candidates(text):
        word = word.strip(".-")
        if word[:2] != "::":  # a leading/trailing colon is punctuation unless it is IPv6's "::"
            word = word.lstrip(":")
        if word[-2:] != "::":
            word = word.rstrip(":")
        if _WHOLE_INDICATOR.match(word):
            found.add(word)
        elif ":" in word:  # host:port, arn:...:1.2.3.4 and the like
            found.update(part for part in word.split(":") if _WHOLE_INDICATOR.match(part))
    if "://" in text:
        found.update(_URL.findall(text))
    return len(found)


def _candidates(text: str) -> list[str]:
    words = set(text.translate(_SEPARATORS).split())
    return [word for word in words if "." in word or ":" in word or "@" in word or len(word) >= 32]


def indicator_bound(text: str) -> int:
    """A cheap upper bound of ``count_indicators(text)`` from C-level character counts.

    Each distinct IPv4, domain or e-mail holds its own dot or @, each IPv6 two colons, each hash
    at least 33 characters with its separator, each URL a "://".
    """
    return (text.count(".") + text.count("@") + text.count(":") // 2 + (len(text) + 1) // 33
            + text.count("://"))
