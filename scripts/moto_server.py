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

3. SendMessage and ReceiveMessage do not count the queue's messages. moto
   computes every queue attribute, the approximate message counts included (a
   scan of the whole queue each), on each send and for each message received,
   to read one setting; a send cost grew with the backlog and a receive with
   its square. SQS has no such cost. Inside a send the counts read 0 (moto
   does not use them there), and the receive's retention check reads the
   retention period directly. GetQueueAttributes still counts exactly.

4. TransactWriteItems snapshots the items it touches, not whole tables. moto
   deep-copies every table a transaction names so it can roll back, so a
   transaction cost grew with the table (a few per second on a benchmark's
   table). moto still applies the transaction and decides its outcome; when it
   fails, this puts back each touched item as it was, which is what restoring
   the table copy did (a transaction writes only the items it names).
"""

import argparse
import copy
import os
import threading
import types

import waitress
from moto.core.utils import unix_time
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs.models import Queue, SQSBackend

_dynamodb_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialized_call_action(self):
    with _dynamodb_lock:
        return _call_action(self)


def _retained(self, queue_name, message):
    queue = self.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()


_in_transaction = threading.local()
_transact_write_items = DynamoDBBackend.transact_write_items


def _deepcopy(value, *args, **kwargs):
    # Inside a transaction, moto's whole-table snapshot is skipped: the table
    # itself stands in, and its rollback (putting the table back) changes nothing.
    if getattr(_in_transaction, "active", False) and isinstance(value, Table):
        return value
    return copy.deepcopy(value, *args, **kwargs)


dynamodb_models.copy = types.SimpleNamespace(deepcopy=_deepcopy, copy=copy.copy)


def _touched_items(backend, transact_items):
    """(table, key, item as it is now or None) for each item the transaction names."""
    touched = []
    for entry in transact_items:
        for op_type, op in entry.items():
            table_name = op.get("TableName")
            if table_name not in backend.tables:
                continue  # moto answers this one itself
            table = backend.tables[table_name]
            if op_type == "Put":
                attrs = op.get("Item", {})
                names = [table.hash_key_attr, table.range_key_attr]
                key = {n: attrs[n] for n in names if n is not None and n in attrs}
            else:
                key = op.get("Key", {})
            try:
                current = backend.get_item(table_name, key)
            except Exception:  # a malformed key: moto rejects the transaction
                continue
            before = copy.deepcopy(current.to_json()["Attributes"]) if current else None
            touched.append((table_name, key, before))
    return touched


def _item_snapshot_transact_write_items(self, transact_items):
    touched = _touched_items(self, transact_items)
    _in_transaction.active = True
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        # Latest first, so an item named twice ends as it was before both.
        for table_name, key, before in reversed(touched):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before)
        raise
    finally:
        _in_transaction.active = False


_sending = threading.local()
_send_message = SQSBackend.send_message


def _send_message_without_counting(self, *args, **kwargs):
    _sending.active = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.active = False


def _not_counted_while_sending(count):
    def approximate(queue):
        return 0 if getattr(_sending, "active", False) else count.fget(queue)

    return property(approximate)


for _count in (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
):
    setattr(Queue, _count, _not_counted_while_sending(getattr(Queue, _count)))

DynamoHandler.call_action = _serialized_call_action
SQSBackend.send_message = _send_message_without_counting
SQSBackend.is_message_valid_based_on_retention_period = _retained
DynamoDBBackend.transact_write_items = _item_snapshot_transact_write_items

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
