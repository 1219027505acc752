"""Queue benchmark (issue 9): a burst of findings drained through the buffer queue vs today's direct path.

Run from the repo root: ``python benchmarks/bench_queue.py [--findings 1000] [--quota 600]``. Station
is the simulator on 127.0.0.1 (50 ms latency, ``--quota`` calls per sliding 60 s, 600 by default: the
real key's 60 scaled ten times so a run takes minutes); the stack's budget (TRUSTAR_MAX_RATE) is
the same number. SQS is moto in server mode.

(a) Queue path: the burst is sent to a buffer queue (redrive to a dead-letter queue after 10
    receives); 2 processes stand in for the event source mapping's copies
    (``tests/sims/lambda_sqs.py``: batches of 10, partial batch responses), each pacing at
    TRUSTAR_MAX_RATE / GDTRUSTAR_MAX_CONCURRENCY = quota / 2 a minute.
(b) Baseline, the direct path of stacks made before the queue: every finding is an asynchronous
    invoke (``tests/sims/lambda_async.py``): 20 concurrent copies, each pacing alone at the whole
    quota, 120 s timeout, Lambda's two retries about 1 and 2 minutes later, then the
    dead-letter queue.
Figures: 429s, share of the budget (admitted API calls in the run's whole 60 s windows over
the quota), findings in the dead-letter queue, duplicate reports, findings missing, wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import FINDING_KINDS, base_env, duplicates, pct, rate_share, table  # noqa: E402

from tests.sims.guardduty import make_finding, to_eventbridge  # noqa: E402
from tests.sims.lambda_async import AsyncLambda  # noqa: E402
from tests.sims.lambda_sqs import in_queue, run_copies  # noqa: E402
from tests.sims.station import StationSim  # noqa: E402

LATENCY, REGION = 0.05, "us-east-1"
QUOTA = 600  # set from --quota


def function_env(sim: StationSim, moto_url: str, copies: int) -> dict:
    """The function's environment as deploy-lambda sets it (credentials inline: no Secrets Manager call)."""
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "TRUSTAR_API_KEY": "test-key", "TRUSTAR_API_SECRET": "test-secret",
           "TRUSTAR_API_ENDPOINT": sim.api_endpoint, "TRUSTAR_AUTH_ENDPOINT": sim.auth_endpoint,
           "TRUSTAR_ENCLAVE_IDS": "enc-a", "TRUSTAR_MAX_RATE": str(QUOTA)}
    if copies:
        env["GDTRUSTAR_MAX_CONCURRENCY"] = str(copies)
    return env


def figures(sim: StationSim, n: int, dead: int, seconds: float) -> dict:
    admitted = [c.time for c in sim.calls if c.kind in (*FINDING_KINDS, "enclaves") and 200 <= c.status < 400]
    share = rate_share(admitted, QUOTA)
    reports = sim.reports_by_external_id()
    return {"429s": sim.count(status=429), "share": share["steady"], "fullest": share["max_window"],
            "dead": dead, "duplicates": duplicates(sim), "missing": n - len(reports), "seconds": seconds,
            "calls": len(admitted)}


def queue_path(moto_url: str, events: list, tmp: Path) -> dict:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"bench-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=f"{name}-buffer", Attributes={
        "VisibilityTimeout": "725",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 10})})["QueueUrl"]
    for start in range(0, len(events), 10):  # the burst: what EventBridge (or --via-queue) put there
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps(e)} for i, e in enumerate(events[start:start + 10])])
    with StationSim(latency=LATENCY, quota_per_minute=QUOTA) as sim:
        env = function_env(sim, moto_url, copies=2)
        spec = {"env": env, "endpoint": moto_url, "region": REGION, "queue_url": url, "timeout": 120,
                "stop_after": 3600}
        started = time.monotonic()
        stats = run_copies([spec, spec], tmp, {**base_env(tmp), **env}, timeout=4000)
        seconds = time.monotonic() - started
        out = figures(sim, len(events), in_queue(sqs, dlq), seconds)
    out["invocations"] = sum(s.get("invocations", 0) for s in stats)
    out["raised"] = sum(len(s.get("raised", [])) for s in stats)
    return out


def direct_path(moto_url: str, events: list, tmp: Path) -> dict:
    with StationSim(latency=LATENCY, quota_per_minute=QUOTA) as sim:
        env = {**base_env(tmp), **function_env(sim, moto_url, copies=0)}
        lam = AsyncLambda(env, copies=20)
        started = time.monotonic()
        lam.run(events)
        seconds = time.monotonic() - started
        out = figures(sim, len(events), len(lam.dead), seconds)
    out["invocations"], out["raised"] = lam.invocations, lam.invocations - lam.done
    out["timeouts"] = lam.timeouts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=1000)
    parser.add_argument("--quota", type=int, default=600, help="Station calls per minute (and the budget)")
    parser.add_argument("--only", choices=("queue", "direct"))
    args = parser.parse_args()
    global QUOTA
    QUOTA = args.quota
    from moto.server import ThreadedMotoServer

    events = [to_eventbridge(make_finding(i)) for i in range(args.findings)]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, run in (("queue", queue_path), ("direct", direct_path)):
                if args.only in (None, name):
                    path = Path(tmp) / name
                    path.mkdir()
                    results[name] = run(moto_url, events, path)
                    print(name, json.dumps(results[name]), flush=True)
    finally:
        server.stop()
    rows = [(name, r["429s"], pct(r["share"]), pct(r["fullest"]), r["dead"], r["duplicates"], r["missing"],
             r["invocations"], r["raised"], f"{r['seconds']:.0f} s") for name, r in results.items()]
    print(table(rows, ("path", "429s", "share of budget", "fullest window", "dead-lettered", "duplicates",
                       "missing", "invocations", "errors", "wall")))
    if len(results) == 2 and results["queue"]["seconds"]:
        print(f"wall time direct / queue: {results['direct']['seconds'] / results['queue']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
