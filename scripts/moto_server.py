"""moto server for Tally's local runs and tests.

    moto_server.py -H 127.0.0.1 -p PORT

moto's own `moto_server` command, with three changes that make it behave more
like AWS for what Tally does. None of them changes what a request answers:
every condition, transaction and queue rule is still evaluated by moto.

1. DynamoDB requests are applied one at a time. DynamoDB applies each request
   atomically: a conditional write's check and write happen together, and a
   transaction is all-or-nothing and isolated. moto's threaded server does not
   guarantee that under concurrent requests: its TransactWriteItems snapshots
   the whole table and, on cancellation, restores the snapshot, wiping writes
   that other threads made in between. Tally's tests race transactions on
   purpose. SQS requests, long polls included, still run concurrently.

2. Connections are kept alive. moto's werkzeug server closes every connection
   after one response, so each SDK request paid a TCP connect and moto a new
   thread; AWS endpoints keep connections open. waitress (a pure-Python WSGI
   server) serves the same moto application with HTTP/1.1 keep-alive and a
   fixed thread pool.

3. ReceiveMessage's retention check reads the queue's retention period
   directly. moto computes every queue attribute (approximate counts included,
   a scan of the whole queue) for each message it receives, which made a
   receive cost grow with the square of the backlog; SQS has no such cost.
"""

import argparse
import os
import threading

import waitress
from moto.core.utils import unix_time
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs.models import SQSBackend

_dynamodb_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialized_call_action(self):
    with _dynamodb_lock:
        return _call_action(self)


def _retained(self, queue_name, message):
    queue = self.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()


DynamoHandler.call_action = _serialized_call_action
SQSBackend.is_message_valid_based_on_retention_period = _retained

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    waitress.serve(
        DomainDispatcherApplication(create_backend_app),
        host=args.host,
        port=args.port,
        # Long polls hold a thread for up to their wait time (the dev event
        # source mapping waits 1 s); tests run many pollers at once.
        threads=64,
        connection_limit=2000,
        asyncore_use_poll=True,
        _quiet=True,
    )
