#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target to corpus/<target>/seed-*: small valid
inputs like the ones the unit tests and tests/fixtures use, so that the fuzzer starts
from the formats' real structure instead of discovering it. Run from fuzz/; the output
is committed, so this only needs rerunning when a seed should change."""

import gzip
import hashlib
import io
import json
import lzma
import tarfile
import zipfile
import base64
from pathlib import Path

SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def seed(target, name, data):
    d = Path("corpus") / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


# Fixed times everywhere, so that rerunning this changes no committed byte.
def tar_of(files):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tar_gz(files):
    return gzip.compress(tar_of(files), mtime=0)


def zip_of(files):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            z.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def pkt(data):
    return b"%04x" % (len(data) + 4) + data


def pack(objects):
    p = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00" + objects
    return p + hashlib.sha1(p).digest()


packages = (
    "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\nSize: 3\n"
    f"SHA256: {SHA}\nTag: role::program, use::{{editing,viewing}}\n"
    "Description: says hello\n .\n more text\n\nPackage: vim\nVersion: 9\n"
)
seed("deb822", "plain", b"\x00" + packages.encode())
seed("deb822", "gzip", b"\x01" + gzip.compress(packages.encode(), mtime=0))
seed("deb822", "xz", b"\x02" + lzma.compress(packages.encode()))

fixture = Path("../tests/fixtures/debian/bookworm-security_InRelease").read_text()
release = fixture.split("\n\n", 1)[1].split("-----BEGIN PGP SIGNATURE-----")[0]
head, listing = release.split("SHA256:\n", 1)
seed("apt_release", "bookworm-security", head + "SHA256:\n" + "".join(listing.splitlines(True)[:6]))

seed("debtags", "tags", "role::program, use::{editing,viewing}, works-with::text")
seed("debtags", "overrides", "# comment\nhello, vim: role::program, use::editing\nbad line\nnano:\n")
seed("debtags", "packages", "Package: hello\nTag: role::program, use::{editing,\n viewing}\n\n"
     "Package: vim\n evil: x\nTag: a\n")
# The input that found the line break kept inside a tag (formats/src/debtags.rs).
seed("debtags", "crash-newline-in-tag", "# commento, v, usa::{editing,m: }# comment\nhello, vim: rrol")

dep5 = (
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    "Upstream-Name: x\n\nFiles: *\nCopyright: 2020 Jo Tester\nLicense: GPL-2+ or Artistic\n"
    " long text\n\nFiles: debian/*\nCopyright: 2021 Someone\nLicense: MIT\n"
)
seed("copyright", "dep5", dep5)


def ar_member(name, data):
    head = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return head + data + (b"\n" if len(data) % 2 else b"")


control = b"Package: hello\nVersion: 1:1.0-1\nArchitecture: all\nMaintainer: Jo <jo@example.org>\nDescription: hi\n there\n"
data_tar = tar_of([("./usr/share/doc/hello/copyright", dep5.encode())])
for name, compress in [("control.tar.gz", lambda b: gzip.compress(b, mtime=0)),
                       ("control.tar.xz", lzma.compress), ("control.tar", lambda b: b)]:
    deb = (b"!<arch>\n" + ar_member("debian-binary", b"2.0\n")
           + ar_member(name, compress(tar_of([("./control", control)])))
           + ar_member("data.tar", data_tar))
    seed("deb", name.replace(".", "-"), b"\x3f" + deb)

seed("basic_auth", "basic", "Basic " + base64.b64encode(b"craft:a:b").decode())

seed("pip_index", "html",
     '<!DOCTYPE html><html><body><a href="../../packages/fg_hello-1.0-py3-none-any.whl'
     f'#sha256={SHA}" data-dist-info-metadata="sha256={SHA}">fg_hello-1.0-py3-none-any.whl</a>'
     '<a href="https://files.example.org/fg-hello-1.0.tar.gz">fg-hello-1.0.tar.gz</a></body></html>')
seed("pip_index", "json", json.dumps({"meta": {"api-version": "1.1"}, "name": "fg-hello", "files": [
    {"filename": "fg_hello-1.0-py3-none-any.whl", "url": "/p/fg_hello-1.0-py3-none-any.whl",
     "hashes": {"sha256": SHA}, "core-metadata": {"sha256": SHA}}]}))

metadata = (b"Metadata-Version: 2.1\nName: fg-hello\nVersion: 1.0\nSummary: says hello\n"
            b"Author: Jo Tester\nAuthor-email: jo@example.org\nLicense: MIT\n\nLong description\n")
seed("pip_metadata", "metadata", metadata)


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


code = b"print('hello')\n"
files = [("fg_hello/__init__.py", code), ("fg_hello-1.0.dist-info/METADATA", metadata)]
record = "".join(record_line(p, d) for p, d in files) + "fg_hello-1.0.dist-info/RECORD,,\n"
seed("pip_wheel", "wheel", zip_of(files + [("fg_hello-1.0.dist-info/RECORD", record.encode())]))
# Found by the fuzzer: the central directory marks the first file encrypted (general
# purpose flags, 8 bytes into its record) and its local header does not.
encrypted = bytearray(zip_of(files + [("fg_hello-1.0.dist-info/RECORD", record.encode())]))
encrypted[encrypted.index(b"PK\x01\x02") + 8] |= 1
seed("pip_wheel", "crash-cd-encrypted", bytes(encrypted))

seed("pip_sdist", "sdist", tar_gz([("fg-hello-1.0/PKG-INFO", metadata), ("fg-hello-1.0/setup.py", b"")]))

seed("cargo_index", "index",
     f'{{"name":"fg-hello","vers":"0.1.0","deps":[],"cksum":"{SHA}","features":{{}},"yanked":false}}\n'
     f'{{"name":"fg-hello","vers":"0.2.0","deps":[],"cksum":"{SHA}","features":{{}},"yanked":false}}\n')
seed("cargo_index", "config", '{"dl": "https://static.crates.io/crates/{crate}/{version}/download"}')

manifest = (b'[package]\nname = "fg-hello"\nversion = "0.1.0"\nlicense = "MIT OR Apache-2.0"\n'
            b'authors = ["Jo Tester <jo@example.org>"]\ndescription = "says hello"\n')
seed("cargo_crate", "crate", tar_gz([("fg-hello-0.1.0/Cargo.toml", manifest)]))

sri = "sha512-" + base64.b64encode(bytes([5]) * 64).decode()
seed("npm_packument", "packument", json.dumps({"name": "@fg/hello", "versions": {"1.0.0": {
    "name": "@fg/hello", "version": "1.0.0",
    "dist": {"tarball": "/@fg/hello/-/hello-1.0.0.tgz", "integrity": sri, "shasum": "06" * 20}}}}))

package_json = json.dumps({"name": "@fg/hello", "version": "1.0.0", "license": {"type": "ISC"},
                           "author": "Jo Tester <jo@example.org>", "description": "hi"}).encode()
seed("npm_tarball", "tarball", tar_gz([("package/package.json", package_json)]))

seed("go_module", "go.mod", 'module "example.com/m" // c\n\ngo 1.21\n\nrequire example.com/x v1.0.0\n')
seed("go_module", "info", '{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}')
seed("go_module", "path", "github.com/!burnt!sushi/toml")

seed("go_zip", "zip", zip_of([("example.com/m@v1.0.0/go.mod", b"module example.com/m\n"),
                              ("example.com/m@v1.0.0/m.go", b"package m\n")]))

oid = b"c" * 40
advertisement = pkt(b"# service=git-upload-pack\n") + b"0000" + pkt(oid + b" HEAD\0side-band-64k\n") + b"0000"
seed("git", "advertisement", advertisement)
seed("git", "request", pkt(b"want " + oid + b" side-band-64k\n") + b"0000" + pkt(b"done\n"))
seed("git", "response", bytes([7]) + pkt(b"NAK\n") + pkt(b"\x02Counting\n") + pkt(b"\x01" + pack(b"objects")) + b"0000")

# The configuration formats (the packaged fetchgate.toml's keys, the reference's acl.yaml).
seed("config_toml", "full",
     '[control]\nauth = "craft:secret"\nmetrics-require-auth = true\n'
     '[sessions]\ndefault-timeout = 3600\nmax-timeout = 86400\nreaper-interval = 1\n'
     '[storage]\nretention = 604800\nsweep-interval = 60\n[logging]\nformat = "json"\n'
     '[proxy]\nheader-timeout = 30\nmax-header-bytes = 65536\ncert-cache-size = 16\n'
     '[acl]\npolicy = "deny"\nallow = ["10.1.2.3", "192.0.2.0/24"]\ndeny = ["10.0.0.0/8", "fd00::/8"]\n'
     'allow-hosts = ["*.debian.org", "pypi.org"]\ndeny-hosts = ["Bad.Example"]\n'
     '[[debtags.archive]]\nname = "main"\nroot = "/srv/debian"\nupstream = "http://u:p@127.0.0.1:1/base/"\n'
     '[cluster]\nredis = "redis://r:6379/"\nnode-id = "a"\npeers = ["http://b:9999"]\n'
     '[webhooks]\nurls = ["http://hooks.example:8080/events"]\ntimeout-ms = 500\nattempts = 3\n')
seed("config_toml", "invalid", '[sessions]\nmax-timeout = 10\ndefault-timeout = 11\n')

seed("acl_yaml", "reference",
     "http-proxy:\n  policy: deny\n  rules:\n    - dst: [10.1.0.0/16, 192.0.2.1]\n      access: deny\n"
     "    - dst: ['::1', fe80::/10]\n      access: allow\n"
     "  allow-hosts: ['*.example.org', mirror?.example.net]\n  deny-hosts: [Bad.Example]\n")
seed("acl_yaml", "empty", "# no rules yet\n")

inspectors_yaml = ("apt:\n  repositories:\n    - url: http://deb.debian.org/debian\n"
                   "      suites: [bookworm, bookworm-updates]\n      components: [main]\n"
                   "      keys:\n        - /usr/share/keyrings/debian-archive-keyring.gpg\n"
                   "pip:\n  indexes:\n    - https://pypi.org/simple\n"
                   "cargo:\n  registries:\n    - sparse+https://index.crates.io/\n"
                   "npm:\n  registries:\n    - https://registry.npmjs.org/\n"
                   "git:\n  hosts:\n    - https://github.com\n"
                   "go:\n  proxies:\n    - https://[::1]:8443/go/\n")
seed("inspectors_config", "yaml", b"\x00" + inspectors_yaml.encode())
seed("inspectors_config", "json", b"\x01" + json.dumps({
    "apt": {"repositories": [{"url": "https://Archive.Ubuntu.com:443/ubuntu/", "suites": ["noble"],
                              "keys": ["-----BEGIN PGP PUBLIC KEY BLOCK-----\n..."]}]},
    "pip": {"indexes": ["https://PyPI.org/simple/"]}, "conda": {"channels": ["x"]}}).encode())
# Found by CI's fuzzing: an `@` in a URL's path is not a credential.
seed("inspectors_config", "crash-at-in-path", b"\x01" + json.dumps({
    "pip": {"indexes": ["https://PyPI.org/simpl@e/"]}}).encode())

# Records are built from arbitrary bytes (see fuzz_targets/report_fold.rs), so any
# bytes will do; these make records of every kind from the start.
seed("report_fold", "records", bytes(range(256)) * 2)
seed("report_fold", "codec-tail", b"\x10\x00" + bytes(range(0, 256, 17)) + b"\x01\x01" + b"\x00" * 12)
