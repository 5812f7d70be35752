#!/usr/bin/env python3
"""An unsigned JWT for `make dev`: the dev gateway reads a bearer token's
claims without checking them (API Gateway's authorizer checks them on AWS).

    scripts/dev-token.py SUB [SCOPES]     e.g. scripts/dev-token.py smoke-user points:admin
"""
import base64
import json
import sys
import time


def part(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


if len(sys.argv) < 2:
    sys.exit(__doc__)
now = int(time.time())
claims = {"sub": sys.argv[1], "scope": " ".join(sys.argv[2:]), "iss": "dev-gateway", "iat": now, "exp": now + 3600}
print(f'{part({"alg": "none", "typ": "JWT"})}.{part(claims)}.')
