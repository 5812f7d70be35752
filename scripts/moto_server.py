"""moto server, with every DynamoDB request applied one at a time.

DynamoDB applies each request atomically: a conditional write's check and write
happen together, and a transaction is all-or-nothing and isolated. moto's
threaded server does not guarantee that under concurrent requests: its
TransactWriteItems snapshots the whole table and, on cancellation, restores the
snapshot, wiping writes that other threads made in between. Tally's tests race
transactions on purpose, so this launcher serializes DynamoDB requests (SQS
requests, long polls included, still run concurrently). Every condition is still
evaluated by moto's DynamoDB API.
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_dynamodb_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialized_call_action(self):
    with _dynamodb_lock:
        return _call_action(self)


DynamoHandler.call_action = _serialized_call_action

if __name__ == "__main__":
    main(sys.argv[1:])
