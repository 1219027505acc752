"""The one door to the trustar SDK: it must never be imported before ``quiet_sdk`` ran.

The SDK parses ``TRUSTAR_LOGGING_LEVEL`` with ``int()`` at import time (docs/decisions.md#sdk-logging), so a user's
``TRUSTAR_LOGGING_LEVEL=WARNING`` would crash any import of it; and unset, it logs INFO to stdout.
"""

from gdtrustar.logs import quiet_sdk

quiet_sdk()

from trustar import TruStar  # noqa: E402
from trustar.api_client import ApiClient  # noqa: E402

__all__ = ["ApiClient", "TruStar"]
