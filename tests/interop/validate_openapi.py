"""Validates the server's /openapi.json with openapi-spec-validator; prints the error count and
the first errors, and exits non-zero on any."""

import json
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator

with urllib.request.urlopen(sys.argv[1] + "/openapi.json") as response:
    spec = json.load(response)
errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
print(len(errors))
for error in errors[:20]:
    print(error.message, file=sys.stderr)
sys.exit(1 if errors else 0)
