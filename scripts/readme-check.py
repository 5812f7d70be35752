#!/usr/bin/env python3
"""Runs the README's walkthroughs as written and compares the answers.

Every ```sh block right after a `<!-- readme: run -->` line runs, in the
order the README has them, against one fresh dev gateway (a table and queues
of its own on the emulator AWS_ENDPOINT_URL names), as a reader would type
them into a shell next to `make dev`.

In a block, a command is a line that is not a comment (with its `\\`
continuations). The comment lines right after it that start with `{`, `[`,
a status (`202 {...}`) or a continuation indent are the answer the README
shows; it must match what the command prints:
- `...` stands for anything;
- RFC 3339 times are masked (any time matches any time);
- two spaces and a parenthesis end the answer: `# {...}   (a note)`;
- white space between JSON tokens is free.
Commands with no answer shown must succeed (curl: a 2xx). A GET whose answer
does not match is retried for up to 15 s: the README says which reads are
eventually consistent, and they are.

Usage: scripts/readme-check.py [README.md]   (needs target/debug/dev-gateway)
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- readme: run -->"
DEV_URL = "http://127.0.0.1:3000"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
RETRY_SECONDS = 15
# The dev gateway's stack (its names, and its event bus), for it and the commands.
STACK_NAME = f"tally-readme-{secrets.token_hex(4)}"


def blocks(text):
    """The runnable blocks: (line number, lines) for each marked ```sh block."""
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARKER:
            j = i + 1
            if j >= len(lines) or lines[j].strip() != "```sh":
                sys.exit(f"README line {i + 1}: {MARKER} must be followed by a ```sh block")
            k = j + 1
            while k < len(lines) and lines[k].strip() != "```":
                k += 1
            found.append((j + 2, lines[j + 1 : k]))
            i = k
        i += 1
    return found


def is_answer(comment):
    return bool(re.match(r"(\{|\[|\d{3} |\s)", comment))


def steps(start, lines):
    """(line number, command, shown answer or None) for each command of a block."""
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        number = start + i
        command = line
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        i += 1
        shown = []
        while i < len(lines) and lines[i].startswith("#"):
            comment = lines[i][1:]
            comment = comment[1:] if comment.startswith(" ") and not shown else comment
            if not shown and not is_answer(comment):
                break
            if shown and not comment.startswith(" "):
                break
            shown.append(comment.strip())
            i += 1
        answer = " ".join(shown) if shown else None
        if answer is not None:
            answer = re.split(r"\s{2,}\(", answer)[0].strip()
        out.append((number, command, answer))
    return out


def pattern(answer):
    """A regex that matches what `answer` shows."""
    status = None
    m = re.match(r"(\d{3}) (.*)", answer)
    if m:
        status, answer = m.group(1), m.group(2)
    regex = ""
    for token in re.split(rf"(\.\.\.|\s+|{TIMESTAMP})", answer):
        if token == "...":
            regex += ".*?"
        elif token.isspace():
            regex += r"\s*"
        elif re.fullmatch(TIMESTAMP, token):
            regex += TIMESTAMP
        else:
            regex += re.escape(token)
    return status, re.compile(regex, re.S)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_gateway():
    gateway = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "dev-gateway")
    if not os.access(gateway, os.X_OK):
        sys.exit(f"readme: {gateway} is missing; build it first (cargo build -p dev-gateway)")
    port = free_port()
    os.makedirs(os.path.join(ROOT, ".tally"), exist_ok=True)
    log_path = os.path.join(ROOT, ".tally", f"readme-gateway-{port}.log")
    env = dict(os.environ)
    env.update(
        TALLY_DEV_ADDR=f"127.0.0.1:{port}",
        TALLY_STACK_NAME=STACK_NAME,
        RUST_LOG=env.get("RUST_LOG", "warn"),
        # The walkthrough's `make reconcile` is the run it shows; no other runs between.
        TALLY_RECONCILE_INTERVAL_SECS="3600",
    )
    log = open(log_path, "w")
    process = subprocess.Popen([gateway], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            sys.exit(f"readme: the dev gateway exited; its log ({log_path}):\n" + open(log_path).read())
        try:
            urllib.request.urlopen(url + "/v1/me/points", timeout=1)
        except urllib.error.HTTPError:
            return process, url, log_path
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit(f"readme: the dev gateway did not answer on {url}; its log: {log_path}")


def run(command, url):
    """Runs one README command as bash would; answers (status or None, output)."""
    command = command.replace(DEV_URL, url)
    # curl prints its status after the body, so the README's `202 {...}` can be checked.
    prelude = (
        "curl() { command curl --noproxy '*' -sS -w '\\n%{http_code}' \"$@\"; }\n"
        f"export TALLY_DEV_URL={url}\n"
        f"export TALLY_STACK_NAME={STACK_NAME}\n"
    )
    # As typed into a shell, not as a step of `make test`: a sub-make would
    # otherwise print "make[1]: Entering directory" around the answer.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(
        ["bash", "-c", prelude + command], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env
    )
    output = done.stdout.rstrip("\n")
    if done.returncode != 0:
        return None, output + done.stderr, False
    if command.lstrip().startswith("curl"):
        body, _, status = output.rpartition("\n")
        return status, body, True
    return None, output, True


def main():
    readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "README.md")
    text = open(readme).read()
    found = blocks(text)
    if not found:
        sys.exit(f"readme: no {MARKER} blocks in {readme}")
    process, url, log_path = start_gateway()
    failures = 0
    checked = 0
    try:
        for start, lines in found:
            for number, command, answer in steps(start, lines):
                is_get = command.lstrip().startswith("curl") and not re.search(r"-X\s*(POST|PUT|DELETE)", command)
                deadline = time.time() + (RETRY_SECONDS if is_get else 0)
                while True:
                    status, output, ran = run(command, url)
                    if answer is None:
                        ok = ran and (status is None or status.startswith("2"))
                        problem = f"expected success, got {status}: {output}"
                    else:
                        want_status, regex = pattern(answer)
                        ok = ran and regex.fullmatch(output.strip()) is not None and (
                            want_status is None or want_status == status
                        )
                        problem = f"README shows {answer!r}\n        got {status} {output.strip()!r}"
                    if ok or time.time() >= deadline:
                        break
                    time.sleep(0.5)
                checked += 1
                if ok:
                    print(f"ok   README.md:{number}")
                else:
                    failures += 1
                    print(f"FAIL README.md:{number}: {command.strip()}\n        {problem}")
    finally:
        process.terminate()
        process.wait(timeout=10)
    if failures:
        print(f"readme: {failures} of {checked} commands do not answer as the README shows (gateway log: {log_path})")
        sys.exit(1)
    os.remove(log_path)
    print(f"readme: {checked} commands in {len(found)} blocks answer as the README shows")


if __name__ == "__main__":
    main()
