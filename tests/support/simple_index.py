#!/usr/bin/env python3
"""Build a minimal PEP 503 simple index with one pure-Python wheel, for pip tests.

usage: simple_index.py DIR NAME VERSION
Creates DIR/packages/<wheel> and DIR/simple/<name>/index.html linking to it with its
sha256; prints the wheel's file name.
"""
import base64
import hashlib
import os
import sys
import zipfile

root, name, version = sys.argv[1:4]
dist = f"{name.replace('-', '_')}-{version}"
wheel = f"{dist}-py3-none-any.whl"
os.makedirs(os.path.join(root, "packages"), exist_ok=True)
os.makedirs(os.path.join(root, "simple", name), exist_ok=True)
files = {
    f"{name.replace('-', '_')}/__init__.py": b"VALUE = 42\n",
    f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: fetchgate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for path, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(data)}")
record.append(f"{dist}.dist-info/RECORD,,")
files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
path = os.path.join(root, "packages", wheel)
with zipfile.ZipFile(path, "w") as z:
    for p, data in files.items():
        z.writestr(p, data)
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
with open(os.path.join(root, "simple", name, "index.html"), "w") as f:
    f.write(f'<html><body><a href="../../packages/{wheel}#sha256={sha}">{wheel}</a></body></html>\n')
print(wheel)
