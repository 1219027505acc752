"""SQS message move tasks, which moto lacks, served in front of moto on 127.0.0.1.

moto 5.x implements SQS but not ``StartMessageMoveTask``, ``ListMessageMoveTasks`` or
``CancelMessageMoveTask``. botocore speaks SQS's JSON protocol (``POST /``, header
``X-Amz-Target: AmazonSQS.<Operation>``, JSON body), so this small server answers those three
operations itself and forwards every other request to moto unchanged. Point a client at it with
``AWS_ENDPOINT_URL_SQS``.

A task really moves messages between the moto queues (receive from the source, send the body to
the destination, delete), ``step`` messages each time ``ListMessageMoveTasks`` is called: a
client polling for progress sees it advance one poll at a time, with no timers. What it checks
is what the SQS API reference documents: the source must be the dead-letter queue of some queue
(some queue's ``RedrivePolicy`` names it), and only one task may run per source. ``fail_next``
makes the next task end ``FAILED`` after a number of messages; ``fail_batches_next`` makes whole
``SendMessageBatch`` calls come back with every entry failed, as SQS reports per-entry failures.
``operations`` lists, in order,
what clients called through the proxy, for call-sequence assertions.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

import boto3

_OWN = ("StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask")


@dataclass
class _Task:
    handle: str
    source_arn: str
    destination_arn: str
    to_move: int
    started: int = field(default_factory=lambda: int(time.time() * 1000))
    moved: int = 0
    status: str = "RUNNING"
    failure: Optional[str] = None
    fail_after: Optional[int] = None

    def result(self) -> dict:
        out = {"Status": self.status, "SourceArn": self.source_arn, "DestinationArn": self.destination_arn,
               "ApproximateNumberOfMessagesMoved": self.moved, "ApproximateNumberOfMessagesToMove": self.to_move,
               "StartedTimestamp": self.started}
        if self.status == "RUNNING":
            out["TaskHandle"] = self.handle
        if self.failure:
            out["FailureReason"] = self.failure
        return out


class SqsMoveProxy:
    """The proxy; use as a context manager. ``url`` is its endpoint."""

    def __init__(self, moto_url: str, region: str = "us-east-1", step: int = 3) -> None:
        self.moto_url, self.region, self.step = moto_url, region, step
        self.operations: list[str] = []
        self.tasks: list[_Task] = []
        self._fail: Optional[tuple[int, str]] = None
        self._batch_faults: list[bool] = []  # per coming SendMessageBatch: every entry fails (SenderFault)
        self._lock = threading.Lock()
        self._sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=region,
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
        self._server: Optional[ThreadingHTTPServer] = None
        self.url = ""

    def __enter__(self) -> SqsMoveProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                proxy._handle(self)

            def log_message(self, format, *args):  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail_batches_next(self, n: int, sender_fault: bool) -> None:
        """The next ``n`` SendMessageBatch calls fail every entry (not forwarded to moto)."""
        self._batch_faults += [sender_fault] * n

    def fail_next(self, after: int, reason: str) -> None:
        """The next task started ends FAILED after moving ``after`` messages."""
        self._fail = (after, reason)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        operation = (request.headers.get("X-Amz-Target") or "").split(".")[-1]
        with self._lock:
            self.operations.append(operation)
        fault = None
        if operation == "SendMessageBatch" and self._batch_faults:
            with self._lock:
                fault = self._batch_faults.pop(0) if self._batch_faults else None
        if operation in _OWN or fault is not None:
            params = json.loads(body or b"{}")
            status, payload = (200, _failed_batch(params, fault)) if fault is not None else self._own(operation, params)
            data = json.dumps(payload).encode()
            request.send_response(status)
            request.send_header("Content-Type", "application/x-amz-json-1.0")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
            return
        self._forward(request, body)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        target = urlsplit(self.moto_url)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        conn.request("POST", request.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        request.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
        conn.close()

    # -- the three operations -------------------------------------------------------------------------
    def _own(self, operation: str, params: dict) -> tuple[int, dict]:
        with self._lock:
            if operation == "StartMessageMoveTask":
                return self._start(params)
            if operation == "CancelMessageMoveTask":
                for task in self.tasks:
                    if task.handle == params.get("TaskHandle") and task.status == "RUNNING":
                        task.status = "CANCELLED"
                        return 200, {"ApproximateNumberOfMessagesMoved": task.moved}
                return 400, _error("ResourceNotFoundException", "no running task with that handle")
            results = [t for t in reversed(self.tasks) if t.source_arn == params.get("SourceArn")]
            for task in results:
                self._advance(task)
            return 200, {"Results": [t.result() for t in results[: int(params.get("MaxResults", 1))]]}

    def _start(self, params: dict) -> tuple[int, dict]:
        source = params.get("SourceArn", "")
        if not self._is_dead_letter_queue(source):
            return 400, _error("InvalidParameterValueException",
                               "Source queue must be configured as a Dead Letter Queue.")
        if any(t.source_arn == source and t.status == "RUNNING" for t in self.tasks):
            return 400, _error("UnsupportedOperation", "There is already a task running. Only one active task "
                                                       "is allowed for a source queue arn at a given time.")
        count = self._count(source)
        task = _Task(str(uuid.uuid4()), source, params.get("DestinationArn") or "", count)
        if self._fail:
            task.fail_after, task.failure = self._fail
            self._fail = None
        self.tasks.append(task)
        return 200, {"TaskHandle": task.handle}

    def _advance(self, task: _Task) -> None:
        if task.status != "RUNNING":
            return
        source, destination = self._url(task.source_arn), self._url(task.destination_arn)
        for _ in range(self.step):
            if task.fail_after is not None and task.moved >= task.fail_after:
                task.status = "FAILED"
                return
            got = self._sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=1, WaitTimeSeconds=0,
                                            MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                task.status, task.failure = "COMPLETED", None
                return
            self._sqs.send_message(QueueUrl=destination, MessageBody=got[0]["Body"])
            self._sqs.delete_message(QueueUrl=source, ReceiptHandle=got[0]["ReceiptHandle"])
            task.moved += 1
        if self._count(task.source_arn) == 0 and task.fail_after is None:
            task.status = "COMPLETED"

    def _url(self, arn: str) -> str:
        return self._sqs.get_queue_url(QueueName=arn.split(":")[-1])["QueueUrl"]

    def _count(self, arn: str) -> int:
        attributes = self._sqs.get_queue_attributes(QueueUrl=self._url(arn), AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def _is_dead_letter_queue(self, arn: str) -> bool:
        for url in self._sqs.list_queues().get("QueueUrls", []):
            policy = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get(
                "Attributes", {}).get("RedrivePolicy")
            if policy and json.loads(policy).get("deadLetterTargetArn") == arn:
                return True
        return False


def _failed_batch(params: dict, sender_fault: bool) -> dict:
    code = "InvalidMessageContents" if sender_fault else "InternalError"
    return {"Successful": [], "Failed": [{"Id": e["Id"], "SenderFault": sender_fault, "Code": code,
                                          "Message": "injected by the test proxy"} for e in params["Entries"]]}


def _error(code: str, message: str) -> dict:
    return {"__type": f"com.amazonaws.sqs#{code}", "message": message}
