# The README's two commands are `make dev` and `make test`.
# Deploying needs AWS SAM CLI, cargo-lambda and ziglang (see README: Deploy).
.PHONY: admin events smoke destroy bench deploy sam-build dev test test-rust test-schemathesis test-readme test-simulate simulate lint-template lint-openapi lint build reconcile invoke-examples

# The whole system on 127.0.0.1:3000: emulator, table, queues, HTTP API, worker. Ctrl-C stops it.
dev:
	TALLY_OPERATOR_ENV=.tally/operator.env scripts/with-emulator.sh cargo run -p dev-gateway

# Every test; starts the emulator unless AWS_ENDPOINT_URL already names one.
test: test-rust test-schemathesis test-readme test-simulate lint-template lint-openapi

test-rust:
	scripts/with-emulator.sh cargo test --workspace

# The running service against openapi.yaml: schemathesis through the dev gateway
# (no 5xx, every answer as the document says; well under a minute once built).
test-schemathesis:
	cargo build --workspace --all-targets
	scripts/with-emulator.sh scripts/schemathesis.sh

# The README's walkthroughs, run as written against a fresh dev gateway, each
# answer compared with what the README shows (scripts/readme-check.py).
test-readme:
	cargo build --workspace --all-targets
	scripts/with-emulator.sh python3 scripts/readme-check.py

# The fault simulator (README: Fault simulation). `make simulate SEED=7 OPS=220`
# replays one seed exactly; SEEDS and OPS size a run (`SEEDS=200 OPS=5000`: the soak).
SEEDS ?= 3
OPS ?= 200
simulate:
	cargo build --workspace --all-targets
	scripts/with-emulator.sh target/debug/simulate $(if $(SEED),--seed $(SEED),--seeds $(SEEDS)) --ops $(OPS)

# The simulator's CI budget: every fault kind injected at least 50 times (~100 s once built).
test-simulate:
	cargo build --workspace --all-targets
	scripts/with-emulator.sh target/debug/simulate --seeds 5 --ops 240 --min-faults 50

lint-template:
	scripts/venv.sh
	.venv/bin/cfn-lint template.yaml

lint-openapi:
	scripts/venv.sh
	.venv/bin/openapi-spec-validator openapi.yaml

# `cargo lambda watch` + `cargo lambda invoke` with every example event in events/.
invoke-examples:
	scripts/with-emulator.sh scripts/invoke-examples.sh

# Formatting and clippy, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

build:
	cargo build --workspace

# A deployed stack (or `make dev`) tried end to end: make smoke URL=... TOKEN=...
smoke:
	scripts/smoke.sh "$(URL)" "$(TOKEN)"

# Every event the `make dev` stack publishes, as it happens (docs/events.md); Ctrl-C stops it.
events:
	scripts/events.sh tail

# tally-admin against the `make dev` stack (docs/operations.md): make admin ARGS='status'.
# Its erasure key is .tally/erasure.key, made on first use (a deployed stack's is a secret of yours).
admin:
	@test -f .tally/operator.env || { echo "no .tally/operator.env: start make dev first" >&2; exit 1; }
	@test -f .tally/erasure.key || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > .tally/erasure.key)
	@set -a; . ./.tally/operator.env; set +a; TALLY_ERASURE_KEY_FILE=.tally/erasure.key cargo run -q -p admin -- $(ARGS)

# One reconcile run now, against the `make dev` stack; prints the report.
reconcile:
	@curl --noproxy '*' -fsS -X POST $${TALLY_DEV_URL:-http://127.0.0.1:3000}/_dev/reconcile && echo

# Build every function for arm64 with cargo lambda, as template.yaml asks.
sam-build:
	sam build

# Deploy to the AWS account of your credentials, without questions: the
# parameters come from PARAMS (copy deploy/production.params and fill it in),
# the stack name from STACK. `make deploy PARAMS=deploy/trial.params STACK=tally-trial`
# deploys a throwaway stack that `make destroy STACK=tally-trial` removes whole.
PARAMS ?= deploy/my.params
STACK ?= tally
deploy: sam-build
	scripts/deploy.sh "$(PARAMS)" "$(STACK)"

# Delete a stack. A production stack keeps its table (Retain, deletion
# protection on); a trial stack deployed with deploy/trial.params leaves nothing.
destroy:
	sam delete --stack-name "$(STACK)" --no-prompts

# The benchmark (BENCHMARKS.md): release binaries, then every scenario against a
# fresh emulator (default --scale 0.2: see BENCHMARKS.md). BENCH_ARGS="--scale 1" runs the full sizes.
bench:
	cargo build --release -p bench -p like -p points -p sqs-worker -p reconcile
	scripts/with-emulator.sh target/release/bench --json bench-results.json $(BENCH_ARGS)
