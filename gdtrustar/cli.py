"""The command line: parses flags, builds settings, calls the library, sets exit codes. No logic."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import click

from gdtrustar import __version__, environment
from gdtrustar.boundary import run_command
from gdtrustar.deploy.command import deploy_lambda
from gdtrustar.deployed import DEFAULT_FUNCTION_NAME
from gdtrustar.logs import setup_logging
from gdtrustar.options import criteria_from, filter_options, settings_from, station_options, verbosity_options

if TYPE_CHECKING:
    from gdtrustar.app import RunOptions  # imported when a command runs: the SDKs are slow to import


def run_options(func: Callable) -> Callable:
    """Flags shared by ``send`` and ``backfill``."""
    options = (
        click.option("--dry-run", is_flag=True,
                     help="Map and show the reports; send nothing, no credentials needed."),
        click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
                     help="Parallel Station writes (all share the --max-rate budget)."),
        click.option("--failures", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Write undelivered findings here (JSON Lines that `gdtrustar send` replays)."),
        click.option("--exclude-samples", is_flag=True, help="Skip GuardDuty's generated sample findings."),
        click.option("--state", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Ledger of delivered findings (default: $XDG_STATE_HOME/gdtrustar/ledger.sqlite3)."),
        click.option("--force", is_flag=True, help="Write findings even if the ledger says they are unchanged."),
        click.option("--json", "json_mode", is_flag=True,
                     help="JSON Lines on stdout, one record per finding and enclave."),
    )
    for option in reversed(options):
        func = option(func)
    return func


def run_options_from(kwargs: dict) -> RunOptions:
    """Pop the shared run flags into a RunOptions."""
    from gdtrustar.app import RunOptions

    return RunOptions(
        dry_run=kwargs.pop("dry_run"),
        concurrency=kwargs.pop("concurrency"),
        failures=kwargs.pop("failures"),
        exclude_samples=kwargs.pop("exclude_samples"),
        state=kwargs.pop("state"),
        force=kwargs.pop("force"),
        json=kwargs.pop("json_mode"),
        verbosity=click.get_current_context().meta.get("gdtrustar.verbosity", 0),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gdtrustar")
@click.option("-v", "--verbose", count=True, help="More output (-vv: debug, incl. the SDKs).")
@click.option("-q", "--quiet", count=True, help="Less output.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int, debug: bool) -> None:
    """Move AWS GuardDuty findings into TruSTAR Station as incident reports."""
    ctx.meta["gdtrustar.verbosity"] = verbose - quiet
    ctx.meta["gdtrustar.debug"] = debug


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@filter_options
@click.option("--region", "regions", multiple=True, metavar="R",
              help="Only findings of this region (repeatable); for s3:// only its region folders are listed.")
@click.option("--profile", metavar="P", help="AWS profile (for s3:// sources).")
@run_options
@station_options
@verbosity_options
def send(sources: tuple[str, ...], regions: tuple[str, ...], profile: Optional[str], **kwargs: Any) -> int:
    """Send findings from files, directories (recursive), - (stdin) or GuardDuty's S3 export (s3://BUCKET[/PREFIX]).

    Accepts EventBridge events, camelCase or PascalCase findings, arrays, {"Findings": [...]},
    JSON Lines, gzip, and failures files written by earlier runs.
    """
    from gdtrustar.app import Run
    from gdtrustar.checkpoint import delivery_scope
    from gdtrustar.inputs import Inputs
    from gdtrustar.selection import Selection
    from gdtrustar.sources import document_limit

    selection = Selection(criteria_from(kwargs), regions)
    options = run_options_from(kwargs)
    setup_logging(options.verbosity)
    settings = settings_from(kwargs)
    inputs = Inputs(sources, selection, profile)
    inputs.check()
    document_limit()  # a bad GDTRUSTAR_MAX_DOCUMENT_BYTES stops the run before anything is attempted
    run = Run(settings, options)
    inputs.bind(run.ledger, delivery_scope(settings.enclave_ids), options.force)
    run.engine.summary.notes.extend(inputs.notes())
    run.deliver(inputs.items())
    return int(run.exit_status())


@cli.command()
@click.option("--detector", metavar="ID", help="One detector (default: every detector in each region).")
@click.option("--region", "regions", multiple=True, metavar="R",
              help="Region to read (repeatable; default: the profile's).")
@click.option("--all-regions", is_flag=True, help="Every region enabled for the account (asks EC2).")
@click.option("--profile", metavar="P", help="AWS profile.")
@filter_options
@click.option("--include-archived", is_flag=True, help="Also archived findings (default: excluded).")
@click.option("--via-queue", is_flag=True,
              help="Queue the findings for the deployed stack's function instead of calling Station from here.")
@click.option("--function-name", default=DEFAULT_FUNCTION_NAME, show_default=True,
              help="With --via-queue: the deploy-lambda stack (in the first --region, else the profile's).")
@run_options
@station_options
@verbosity_options
def backfill(detector: Optional[str], regions: tuple[str, ...], all_regions: bool, profile: Optional[str],
             via_queue: bool, function_name: str, **kwargs: Any) -> int:
    """Send every existing finding from the GuardDuty API (resumable; reruns skip unchanged).

    With --via-queue the findings go to the deployed stack's buffer queue (SendMessageBatch), and
    the stack's function delivers them at its budget, whether or not this machine stays on.
    """
    from gdtrustar import backfill as job
    from gdtrustar.app import Run
    from gdtrustar.aws import build_session
    from gdtrustar.guardduty import discover, enabled_regions

    criteria = criteria_from(kwargs, include_archived=kwargs.pop("include_archived"))
    options = run_options_from(kwargs)
    setup_logging(options.verbosity)
    settings = settings_from(kwargs)
    session = build_session(profile)
    stack_region = regions[0] if regions else session.region_name
    if all_regions:
        regions = tuple(enabled_regions(session))
    regions = regions or ((session.region_name,) if session.region_name else ())
    if not regions:
        raise click.UsageError("no region: pass --region, --all-regions, or set AWS_REGION")
    if via_queue and not options.dry_run:
        from gdtrustar.deployed import find_stack
        from gdtrustar.via_queue import backfill_via_queue

        stack = find_stack(session, function_name, stack_region)
        return int(backfill_via_queue(session, discover(session, list(regions), detector), criteria, stack, options))
    targets = discover(session, list(regions), detector)
    if not options.dry_run:  # before the progress bar starts
        job.warn_shared_budget(session, list(regions), settings, lambda line: click.echo(line, err=True))
    run = Run(settings, options)
    with run.finishing():
        job.backfill(run, targets, criteria, use_bookmarks=not options.force)
    return int(run.exit_status())


@cli.command()
@click.option("--function-name", default=DEFAULT_FUNCTION_NAME, show_default=True,
              help="The deploy-lambda stack whose dead-letter queue to move back.")
@click.option("--region", metavar="REGION", help="AWS Region (default: the AWS configuration's).")
@click.option("--profile", metavar="NAME", help="AWS profile.")
@click.option("--dry-run", is_flag=True, help="Only count the messages that would move.")
@click.option("--poll-seconds", type=click.FloatRange(min=0), default=5.0, hidden=True)
@verbosity_options
def redrive(function_name: str, region: Optional[str], profile: Optional[str], dry_run: bool,
            poll_seconds: float) -> int:
    """Move the stack's dead-letter queue back into its buffer queue (SQS StartMessageMoveTask).

    Shows progress until SQS reports the move finished. Fix what sent the findings there first:
    they get maxReceiveCount more tries.
    """
    from gdtrustar.aws import build_session
    from gdtrustar.deployed import aws_errors, find_stack
    from gdtrustar.redrive import redrive as move

    session = build_session(profile)
    stack = find_stack(session, function_name, region)
    with aws_errors("redrive"):
        sqs = session.client("sqs", region_name=stack.region)
        return int(move(sqs, stack, dry_run=dry_run, poll_seconds=poll_seconds,
                        echo=lambda line: click.echo(f"gdtrustar: {line}", err=True)))


cli.add_command(deploy_lambda)


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    cwd: Optional[environment.PathLike] = None,
) -> None:
    """Console-script entry point: the commands inside the error boundary (gdtrustar.boundary).

    The keywords replace the process's environment, working directory and standard streams for this
    run only (gdtrustar.environment), for in-process use; by default the run has the process's own.
    """
    args = list(argv if argv is not None else sys.argv[1:])
    with environment.applied(env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr):
        status = run_command(lambda: cli.main(args=args, prog_name="gdtrustar", standalone_mode=False),
                             "--debug" in args, args)
    sys.exit(status)
