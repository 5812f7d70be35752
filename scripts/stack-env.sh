#!/bin/sh
# A deployed stack's resource names, as the variables tally-admin (and the
# functions) read, from the stack's outputs:
#
#   eval "$(scripts/stack-env.sh tally)"
#   target/release/tally-admin status
set -eu
stack="${1:?usage: scripts/stack-env.sh STACK}"
aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].Outputs' --output json |
    python3 -c '
import json, shlex, sys
names = {
    "TableName": "TALLY_TABLE_NAME",
    "LikesQueueUrl": "TALLY_LIKES_QUEUE_URL",
    "LikesDeadLetterQueueUrl": "TALLY_LIKES_DEAD_LETTER_QUEUE_URL",
    "PointsQueueUrl": "TALLY_POINTS_QUEUE_URL",
    "PointsDeadLetterQueueUrl": "TALLY_POINTS_DEAD_LETTER_QUEUE_URL",
    "EventsDeadLetterQueueUrl": "TALLY_EVENTS_DEAD_LETTER_QUEUE_URL",
}
outputs = {o["OutputKey"]: o["OutputValue"] for o in json.load(sys.stdin)}
missing = [key for key in names if key not in outputs]
if missing:
    sys.exit("stack-env: the stack has no output " + ", ".join(missing))
for key, variable in names.items():
    print(f"export {variable}={shlex.quote(outputs[key])}")
'
