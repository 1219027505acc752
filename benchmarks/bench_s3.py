"""S3 export benchmark (issue 10): ``gdtrustar send --dry-run s3://...`` on moto, speed, memory and S3 calls.

Run from the repo root: ``python benchmarks/bench_s3.py [--findings 100000] [--objects 5000]`` (~6 min here).

The bucket is laid out as GuardDuty writes it (2 accounts x 2 regions x 25 days, objects of equal size) in
moto (server mode, S3 + KMS, SSE-KMS objects), in this process. Figures:

(a) the dry run of N findings in M objects, straight to moto: findings/s and the CLI's peak RSS (VmHWM),
    beside the same layout at 1/100 of the size (1,000 findings in 50 objects: goal flat);
(b) the same N findings as local ``.jsonl.gz`` files (the very same object bodies in a directory), dry run:
    the baseline for (a)'s speed, as a ratio;
(c) the dry run of (a) again through the counting proxy (tests/sims/s3proxy.py): ListObjectsV2 and GetObject
    calls against the floor (one List per 1,000 keys plus one Get per object).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import base_env, mb, rss_summary, run_cli, table  # noqa: E402

from tests.sims.export_bucket import CREDENTIALS, client  # noqa: E402
from tests.sims.guardduty import make_finding  # noqa: E402
from tests.sims.s3proxy import S3Proxy  # noqa: E402

ACCOUNTS = ("111122223333", "444455556666")
REGIONS = ("us-east-1", "eu-west-1")
DAYS = 25
SUMMARY = re.compile(r"done: (\d+) findings in ([\d.]+)s .*?(\d+) dry-run")


def layout(objects: int) -> list[tuple[str, str, date]]:
    """(account, region, day) of each object, spread evenly over the accounts, regions and days."""
    folders = [(a, r, date(2024, 5, 1) + timedelta(days=d)) for a in ACCOUNTS for r in REGIONS for d in range(DAYS)]
    return [folders[i % len(folders)] for i in range(objects)]


def seed(moto_url: str, bucket: str, findings: int, objects: int, local: Path) -> int:
    """Write the bucket (and the same bodies under ``local``); returns the number of keys."""
    s3 = client(moto_url)
    s3.create_bucket(Bucket=bucket)
    key_arn = client(moto_url, "kms").create_key()["KeyMetadata"]["Arn"]
    per = findings // objects
    local.mkdir(parents=True, exist_ok=True)

    def put(index_and_place: tuple) -> None:
        index, (account, region, day) = index_and_place
        rows = [make_finding(index * per + j, account_id=account, region=region) for j in range(per)]
        body = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0)
        key = f"AWSLogs/{account}/GuardDuty/{region}/{day:%Y/%m/%d}/{index:08d}-object.jsonl.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
        (local / f"{index:08d}.jsonl.gz").write_bytes(body)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, enumerate(layout(objects))))
    return objects


def dry_run(args: list[str], env: dict, tmp: Path, name: str, n: int) -> dict:
    run = run_cli(["send", "--dry-run", *args], env, tmp, name)
    match = SUMMARY.search(run.stderr)
    if run.code != 0 or not match or int(match.group(3)) != n:
        raise SystemExit(f"{name}: dry run failed ({run.code}): {run.stderr[-2000:]}")
    run.stdout.unlink()
    return {"seconds": run.seconds, "rate": n / run.seconds, "peak_rss_kb": run.peak_rss_kb,
            "rss": rss_summary(run.samples), "stderr": run.stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=5_000)
    opts = parser.parse_args()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    small_n, small_m = opts.findings // 100, max(1, opts.objects // 100)
    with tempfile.TemporaryDirectory() as tmp_name, S3Proxy(moto_url) as proxy:
        tmp = Path(tmp_name)
        started = time.monotonic()
        seed(moto_url, "bench-small", small_n, small_m, tmp / "small-files")
        seed(moto_url, "bench-big", opts.findings, opts.objects, tmp / "big-files")
        print(f"seeded {opts.findings + small_n:,} findings in {opts.objects + small_m:,} objects "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        env = {**base_env(tmp), "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"]}
        direct = {**env, "AWS_ENDPOINT_URL_S3": moto_url}
        small = dry_run(["s3://bench-small"], direct, tmp, "small", small_n)
        big = dry_run(["s3://bench-big"], direct, tmp, "big", opts.findings)
        files = dry_run([str(tmp / "big-files")], env, tmp, "files", opts.findings)
        proxy.reset()
        counted = dry_run(["s3://bench-big"], {**env, "AWS_ENDPOINT_URL_S3": proxy.url}, tmp, "counted", opts.findings)
        lists, gets = proxy.count("ListObjectsV2"), proxy.count("GetObject")
        flat_pages = sum(1 for c in proxy.calls if c.op == "ListObjectsV2" and "delimiter" not in c.query
                         and "max-keys" not in c.query)
    server.stop()
    floor_lists = math.ceil(opts.objects / 1000)
    print()
    print(table([
        (f"dry run s3://, {small_n:,} findings / {small_m:,} objects", f"{small['rate']:,.0f}/s",
         f"{small['seconds']:.1f} s", mb(small["peak_rss_kb"])),
        (f"dry run s3://, {opts.findings:,} findings / {opts.objects:,} objects", f"{big['rate']:,.0f}/s",
         f"{big['seconds']:.1f} s", mb(big["peak_rss_kb"])),
        ("dry run of the same objects as local files", f"{files['rate']:,.0f}/s", f"{files['seconds']:.1f} s",
         mb(files["peak_rss_kb"])),
    ], ("run", "findings/s", "wall", "peak RSS (VmHWM)")))
    print()
    print(f"s3 speed vs local files: {big['rate'] / files['rate']:.2f}x")
    print(f"peak RSS, {opts.findings:,} vs {small_n:,} findings: "
          f"{mb(big['peak_rss_kb'])} vs {mb(small['peak_rss_kb'])} "
          f"({(big['peak_rss_kb'] - small['peak_rss_kb']) / 1024:+.1f} MB, "
          f"{big['peak_rss_kb'] / small['peak_rss_kb']:.2f}x for {opts.findings // small_n}x the findings)")
    print(f"S3 calls: ListObjectsV2 {lists} (of which {flat_pages} key pages; floor {floor_lists}), "
          f"GetObject {gets} (floor {opts.objects}); total {lists + gets} vs floor {floor_lists + opts.objects} "
          f"= {(lists + gets) / (floor_lists + opts.objects):.4f}x")
    print(f"(through the proxy: {counted['rate']:,.0f}/s)")
    print("\n".join(line for line in big["stderr"].splitlines() if line.startswith("gdtrustar: s3:")))


if __name__ == "__main__":
    main()
