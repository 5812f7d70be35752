"""moto server for Tally's local runs and tests.

    moto_server.py -H 127.0.0.1 -p PORT

moto's own `moto_server` command, with the changes below, which make it behave
more like AWS for what Tally does. Every condition, transaction and queue rule
is still evaluated by moto; 5 and 6 add the IAM checks AWS makes.

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
   the table copy did (a transaction writes only the items it names). A
   cancelled transaction leaves nothing in the table's stream either: moto
   records each item as it writes it, so the records of the items written
   before the failing one (and of the rollback) are taken back out, and a
   stream is read only between DynamoDB requests (DynamoDB Streams shows a
   transaction's records once it commits, and never a cancelled one's).

5. IAM is enforced from the first request, as on AWS. Before serving, an
   operator user is created (allowed everything) and its keys are written to
   the file `--operator-env` names: the person at the shell, the scripts and
   the tests' setup act as it. The local stack gives each function a role
   holding exactly its template policy (dev-gateway/src/stack.rs).

6. DynamoDB is authorized per table and index, and a transaction per item, as
   AWS does. moto checks DynamoDB actions against the resource `*` only, so a
   policy naming a table would allow nothing; and it authorizes
   TransactWriteItems as an action of its own, where AWS checks each item's own
   action (`PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem`) on its
   table (TransactGetItems: `GetItem`; BatchGetItem and BatchWriteItem: the
   batch action on each table named). moto evaluates actions and resources, not
   condition keys: a condition on `dynamodb:LeadingKeys` is not checked here.

7. EventBridge `PutEvents` is authorized per event bus, as AWS does: each
   entry's bus (`EventBusName`, a name or an ARN; `default` when absent) is
   the resource `events:PutEvents` is checked on. moto checks `*` only.
"""

import argparse
import copy
import json
import os
import threading
import types

import waitress
from moto import settings
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import AccessDeniedError, JsonRESTError
from moto.core.utils import unix_time
from moto.iam.models import iam_backends
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.events.responses import EventsHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs.models import Queue, SQSBackend

_dynamodb_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialized_call_action(self):
    # IAM checks (a signature and policies) need no lock: done first, they do
    # not hold up other requests. A refused request is checked again inside
    # call_action, which answers the refusal as moto does.
    try:
        _authorize_dynamodb(self)
        self._tally_authorized = True
    except Exception:
        pass
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
    # Each stream's length before: a cancelled transaction writes nothing.
    streams = {}
    for table_name, _, _ in touched:
        shard = getattr(self.tables.get(table_name), "stream_shard", None)
        if shard is not None:
            streams[table_name] = (shard, len(shard.items))
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
        # Neither the writes moto made before the failing item nor this
        # rollback reach the stream, as on DynamoDB.
        for shard, length in streams.values():
            del shard.items[length:]
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

_streams_call_action = DynamoDBStreamsHandler.call_action


def _serialized_streams_call_action(self):
    # A stream is read between DynamoDB requests, never during one: a reader
    # never sees a transaction's writes before it commits (or is rolled back).
    with _dynamodb_lock:
        return _streams_call_action(self)


DynamoDBStreamsHandler.call_action = _serialized_streams_call_action
SQSBackend.send_message = _send_message_without_counting
SQSBackend.is_message_valid_based_on_retention_period = _retained
DynamoDBBackend.transact_write_items = _item_snapshot_transact_write_items

# What AWS checks for each DynamoDB action: (IAM action, table key in the item).
_PER_ITEM = {
    "TransactWriteItems": {
        "Put": "PutItem",
        "Update": "UpdateItem",
        "Delete": "DeleteItem",
        "ConditionCheck": "ConditionCheckItem",
    },
    "TransactGetItems": {"Get": "GetItem"},
}


def _dynamodb_checks(action, body, region, account):
    """(IAM action, resource ARN) pairs AWS would authorize for one request."""

    def table_arn(name):
        return f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    if action in _PER_ITEM:
        checks = []
        for entry in body.get("TransactItems") or []:
            for kind, item in entry.items():
                iam_action = _PER_ITEM[action].get(kind, action)
                checks.append((iam_action, table_arn(item.get("TableName", "*"))))
        return checks or [(action, "*")]
    if action in ("BatchGetItem", "BatchWriteItem"):
        tables = list((body.get("RequestItems") or {}).keys())
        return [(action, table_arn(table)) for table in tables] or [(action, "*")]
    table = body.get("TableName")
    if not table:
        return [(action, "*")]
    resource = table_arn(table)
    if body.get("IndexName"):
        resource += "/index/" + body["IndexName"]
    return [(action, resource)]


def _authorize_dynamodb(self, resource="*"):
    if getattr(self, "_tally_authorized", False):
        return
    try:
        body = json.loads(self.raw_body or b"{}")
    except ValueError:
        body = {}
    action = self._get_action()
    for iam_action, arn in _dynamodb_checks(action, body, self.region, self.current_account):
        self._get_action = lambda name=iam_action: name  # what the IAM request names
        try:
            ActionAuthenticatorMixin._authenticate_and_authorize_normal_action(self, arn)
        except AccessDeniedError as denied:
            # As DynamoDB answers it (JSON, 400), so clients read its code.
            raise JsonRESTError("AccessDeniedException", f"{denied.message} on resource: {arn}") from None
        finally:
            del self._get_action


DynamoHandler._authenticate_and_authorize_normal_action = _authorize_dynamodb

def _authorize_events(self, resource="*"):
    action = self._get_action()
    if action != "PutEvents":
        return ActionAuthenticatorMixin._authenticate_and_authorize_normal_action(self, resource)
    try:
        body = json.loads(self.raw_body or b"{}")
    except ValueError:
        body = {}
    buses = {entry.get("EventBusName") or "default" for entry in body.get("Entries") or []}
    for bus in sorted(buses) or ["default"]:
        arn = bus if bus.startswith("arn:") else f"arn:aws:events:{self.region}:{self.current_account}:event-bus/{bus}"
        ActionAuthenticatorMixin._authenticate_and_authorize_normal_action(self, arn)


EventsHandler._authenticate_and_authorize_normal_action = _authorize_events

OPERATOR = "tally-operator"


def create_operator(endpoint, path):
    """The operator user (allowed everything) and its keys, written to `path`."""
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region_name="us-east-1", user_name=OPERATOR)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(OPERATOR, "operator", json.dumps(everything))
    key = iam.create_access_key(OPERATOR)
    lines = [
        f"AWS_ACCESS_KEY_ID={key.access_key_id}",
        f"AWS_SECRET_ACCESS_KEY={key.secret_access_key}",
        "AWS_REGION=us-east-1",
        "AWS_DEFAULT_REGION=us-east-1",  # what older SDKs and CLIs read
        f"AWS_ENDPOINT_URL={endpoint}",
    ]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--operator-env", required=True, help="where to write the operator's keys")
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    create_operator(f"http://{args.host}:{args.port}", args.operator_env)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every request from now on is authorized
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
