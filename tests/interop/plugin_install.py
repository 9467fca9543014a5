"""Installs a plugin the way the Python SDK's install_plugin does: download the tarball with the
workspace token, open it with tarfile 'r:gz', refuse entries outside the staging dir, skip links,
extract, then record the install. Prints one line per extracted file: path, sha256, mode."""

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request

base, workspace_id, token, name = sys.argv[1:5]
headers = {"Authorization": f"Bearer {token}"}
request = urllib.request.Request(
    f"{base}/workspaces/{workspace_id}/plugins/{name}/download?source=local%3A%2F%2F{name}",
    headers=headers,
)
with urllib.request.urlopen(request) as response:
    body = response.read()
    assert response.headers["Content-Type"] == "application/gzip"
    assert response.headers["X-Plugin-Sha256"] == hashlib.sha256(body).hexdigest()

staging = tempfile.mkdtemp(prefix=".staging-")
with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
    members = []
    for member in archive.getmembers():
        if member.issym() or member.islnk():
            continue
        target = os.path.realpath(os.path.join(staging, member.name))
        if not target.startswith(os.path.realpath(staging) + os.sep):
            raise SystemExit(f"entry escapes the staging dir: {member.name}")
        members.append(member)
    archive.extractall(staging, members=members, filter="data")

for root, _dirs, files in os.walk(staging):
    for file in files:
        path = os.path.join(root, file)
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        mode = oct(os.stat(path).st_mode & 0o777)
        print(os.path.relpath(path, staging), digest, mode)

record = urllib.request.Request(
    f"{base}/workspaces/{workspace_id}/plugins",
    data=json.dumps({"source": f"local://{name}"}).encode(),
    headers={**headers, "Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(record) as response:
    print("RECORDED", json.loads(response.read())["status"])
