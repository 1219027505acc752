"""Click options shared by several commands, and the parameter types they use."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from gdtrustar.settings import Settings, load_settings

if TYPE_CHECKING:
    from gdtrustar.guardduty import Criteria

SEVERITY_NAMES = {"low": 1.0, "medium": 4.0, "high": 7.0, "critical": 9.0}


class SeverityType(click.ParamType):
    """A severity number 0-10 or one of GuardDuty's labels (low, medium, high, critical)."""

    name = "severity"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, (int, float)):
            number = float(value)
        elif str(value).strip().lower() in SEVERITY_NAMES:
            return SEVERITY_NAMES[str(value).strip().lower()]
        else:
            try:
                number = float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number or one of low, medium, high, critical", param, ctx)
        if not 0 <= number <= 10:
            self.fail(f"{value!r} is outside GuardDuty's severity range 0-10", param, ctx)
        return number


SEVERITY = SeverityType()


class WhenType(click.ParamType):
    """ISO-8601 or a relative age (``7d``, ``12h``, ``30m``), as epoch milliseconds."""

    name = "when"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        from gdtrustar.guardduty import parse_when

        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WHEN = WhenType()

_FILTER_OPTIONS = (
    click.option("--since", type=WHEN, metavar="WHEN",
                 help="Findings updated at or after (ISO-8601, or 7d, 12h, 30m ago)."),
    click.option("--until", type=WHEN, metavar="WHEN", help="Findings updated at or before (same forms)."),
    click.option("--min-severity", type=SEVERITY, metavar="N|LABEL",
                 help="Minimum severity: number (rounded down, as GuardDuty does) or low|medium|high|critical."),
    click.option("--type", "types", multiple=True, metavar="T", help="Finding type, exact (repeatable)."),
    click.option("--account", "accounts", multiple=True, metavar="ID", help="Member account id (repeatable)."),
)


def filter_options(func: Callable) -> Callable:
    """The finding filters ``backfill`` and ``send`` share (same flags, same meaning)."""
    for option in reversed(_FILTER_OPTIONS):
        func = option(func)
    return func


def criteria_from(kwargs: dict, include_archived: bool = False) -> Criteria:
    """Pop the filter flags out of a command's kwargs."""
    from gdtrustar.guardduty import Criteria

    return Criteria(since_ms=kwargs.pop("since"), until_ms=kwargs.pop("until"),
                    min_severity=kwargs.pop("min_severity"), types=kwargs.pop("types"),
                    accounts=kwargs.pop("accounts"), include_archived=include_archived)


_STATION_OPTIONS = (
    click.option("--enclave-id", "enclave_ids", multiple=True, metavar="ID",
                 help="Enclave to write to (repeatable; or TRUSTAR_ENCLAVE_IDS)."),
    click.option("--api-endpoint", metavar="URL", help="TruSTAR API base (or TRUSTAR_API_ENDPOINT)."),
    click.option("--auth-endpoint", metavar="URL", help="OAuth token URL (or TRUSTAR_AUTH_ENDPOINT)."),
    click.option("--max-rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
                 help="Station calls per minute for this API key (or TRUSTAR_MAX_RATE; default 60)."),
    click.option("--trustar-config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
                 help="The SDK's trustar.conf file."),
    click.option("--trustar-role", "config_role", metavar="ROLE", help="Section of trustar.conf to use."),
)


def station_options(func: Callable) -> Callable:
    """Add the TruSTAR settings flags to a command."""
    for option in reversed(_STATION_OPTIONS):
        func = option(func)
    return func


def settings_from(kwargs: dict) -> Settings:
    """Pop the station flags out of a command's kwargs and resolve settings from them."""
    return load_settings(
        enclave_ids=kwargs.pop("enclave_ids", ()),
        api_endpoint=kwargs.pop("api_endpoint", None),
        auth_endpoint=kwargs.pop("auth_endpoint", None),
        max_rate=kwargs.pop("max_rate", None),
        config_file=kwargs.pop("config_file", None),
        config_role=kwargs.pop("config_role", None),
    )


def verbosity_options(func: Callable) -> Callable:
    """Accept -v/-q after the command name too (they add to the group's count)."""

    @click.option("-v", "--verbose", "cmd_verbose", count=True, help="More output (-vv: debug, incl. SDKs).")
    @click.option("-q", "--quiet", "cmd_quiet", count=True, help="Less output.")
    @functools.wraps(func)
    def wrapper(*args: Any, cmd_verbose: int = 0, cmd_quiet: int = 0, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta["gdtrustar.verbosity"] = ctx.meta.get("gdtrustar.verbosity", 0) + cmd_verbose - cmd_quiet
        return func(*args, **kwargs)

    return wrapper
