"""Schemathesis against a running server's /openapi.json, with tests/interop/schemathesis.toml:
every check, schema-valid and schema-invalid data, a bounded number of cases per operation
(examples, boundary coverage, fuzzing, then stateful sequences along the document's links).

    conformance.py <base url> <admin token>

The seed is fixed so a CI run is repeatable; SCHEMATHESIS_SEED=<n> explores another. Prints
schemathesis' report; exits non-zero on any failure."""

import os
import subprocess
import sys
from pathlib import Path

base, token = sys.argv[1], sys.argv[2]
here = Path(__file__).parent
command = [
    str(Path(sys.executable).with_name("schemathesis")),
    "--config-file", str(here / "schemathesis.toml"),
    "run", base + "/openapi.json",
    "--header", "Authorization: Bearer " + token,
    "--phases", "examples,coverage,fuzzing,stateful",
    "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"),
    "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261202"),
    # One worker: CPython 3.11's `ast` is not thread-safe, and Hypothesis parses lambdas.
    "--workers", "1",
    "--no-color",
]
result = subprocess.run(command, capture_output=True, text=True)
print(result.stdout)
print(result.stderr, file=sys.stderr)
sys.exit(result.returncode)
