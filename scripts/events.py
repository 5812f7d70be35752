#!/usr/bin/env python3
"""Tally's events on a local stack, as a subscriber sees them (docs/events.md).

    scripts/events.sh tail [PATTERN]                  every event as it happens, until Ctrl-C
    scripts/events.sh subscribe NAME [PATTERN]        a rule on the bus delivering to queue NAME
    scripts/events.sh wait NAME [--count N] [--timeout S]
                                                      print N events from queue NAME, then exit

PATTERN is an EventBridge event pattern (JSON); the default matches every
Tally event. Each event prints as one JSON line: its detail-type and detail.

The bus is the dev gateway's (`TALLY_STACK_NAME`, default `tally`); the
emulator is the one `AWS_ENDPOINT_URL` names, or the one in
`.tally/operator.env` (written by `make dev`), as its operator.
"""

import argparse
import json
import os
import sys
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVERY_EVENT = '{"source": [{"prefix": "tally."}]}'


def load_operator_env():
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    path = os.path.join(ROOT, ".tally", "operator.env")
    if not os.path.exists(path):
        sys.exit("events: no emulator: start `make dev` first (it writes .tally/operator.env)")
    for line in open(path):
        name, _, value = line.strip().partition("=")
        if name:
            os.environ[name] = value


def bus():
    return os.environ.get("TALLY_STACK_NAME", "tally")


def queue_name(name):
    return f"{bus()}-events-{name}"


def subscribe(name, pattern):
    """A queue named after `name`, and a rule on the bus that delivers to it."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    json.loads(pattern)  # a clear error for a pattern that is not JSON
    queue = queue_name(name)
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=queue, EventBusName=bus(), EventPattern=pattern)
    events.put_targets(Rule=queue, EventBusName=bus(), Targets=[{"Id": "queue", "Arn": arn}])
    return url


def unsubscribe(name):
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = queue_name(name)
    events.remove_targets(Rule=queue, EventBusName=bus(), Ids=["queue"])
    events.delete_rule(Name=queue, EventBusName=bus())
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])


def receive(url, count=None, timeout=None):
    """Prints events from the queue as they arrive: `count` of them, or until `timeout`."""
    sqs = boto3.client("sqs")
    printed = 0
    deadline = time.time() + timeout if timeout else None
    while count is None or printed < count:
        if deadline and time.time() > deadline:
            sys.exit(f"events: {printed} of {count} events within {timeout} s")
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            event = json.loads(message["Body"])
            print(json.dumps({"detail-type": event["detail-type"], "detail": event["detail"]}), flush=True)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            printed += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tail = commands.add_parser("tail", help="print every event as it happens, until Ctrl-C")
    tail.add_argument("pattern", nargs="?", default=EVERY_EVENT)
    sub = commands.add_parser("subscribe", help="a rule on the bus delivering to a queue of NAME")
    sub.add_argument("name")
    sub.add_argument("pattern", nargs="?", default=EVERY_EVENT)
    wait = commands.add_parser("wait", help="print events from NAME's queue")
    wait.add_argument("name")
    wait.add_argument("--count", type=int, default=1)
    wait.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    load_operator_env()
    if args.command == "subscribe":
        subscribe(args.name, args.pattern)
    elif args.command == "wait":
        url = boto3.client("sqs").get_queue_url(QueueName=queue_name(args.name))["QueueUrl"]
        receive(url, args.count, args.timeout)
    else:
        name = f"tail-{os.getpid()}"
        url = subscribe(name, args.pattern)
        print(f"events: on bus {bus()}, matching {args.pattern} (Ctrl-C stops)", file=sys.stderr)
        try:
            receive(url)
        except KeyboardInterrupt:
            pass
        finally:
            unsubscribe(name)


if __name__ == "__main__":
    main()
