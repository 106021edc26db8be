#!/usr/bin/env python3
"""Writes an OCI image layout (one layer, reproducible: fixed mtimes, sorted entries) from
files on this machine, without any base image or outside registry.

  oci.py slurmlab CONTAINERFILE BINARY OUT   the slurmlab image: what the Containerfile's
                                             runtime stage says (binary path, USER,
                                             ENTRYPOINT, CMD) on a distroless-style base:
                                             the binary's shared libraries (ldd), CA
                                             certificates, passwd/group, /tmp
  oci.py pause BINARY OUT                    the pod sandbox image (a static binary)

Prints the manifest digest. Push the layout with skopeo (hack/image.sh)."""
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def runtime_stage(containerfile):
    """USER, ENTRYPOINT, CMD and the binary's destination from the last stage."""
    stages = re.split(r"(?m)^FROM\s", open(containerfile).read())
    last = stages[-1]
    user = re.search(r"(?m)^USER\s+(\S+)", last).group(1)
    entrypoint = json.loads(re.search(r"(?m)^ENTRYPOINT\s+(\[.*\])", last).group(1))
    cmd = json.loads(re.search(r"(?m)^CMD\s+(\[.*\])", last).group(1))
    dest = shlex.split(re.search(r"(?m)^COPY\s+--from=\S+\s+(.*)$", last).group(1))[-1]
    return user, entrypoint, cmd, dest


def shared_libraries(binary):
    """The files the dynamic loader needs for BINARY, as ldd resolves them here."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


class Layer:
    """A tar layer built in memory; directories are created on the way."""

    def __init__(self):
        self.entries = {}

    def dir(self, path, mode=0o755, uid=0):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.entries[p] = ("dir", None, 0o755, 0)
        self.entries[path.strip("/")] = ("dir", None, mode, uid)

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        self.entries[path.strip("/")] = ("file", data, mode, 0)

    def host_file(self, path, dest=None, mode=None):
        real = os.path.realpath(path)
        data = open(real, "rb").read()
        self.file(dest or path, data, mode if mode is not None else os.stat(real).st_mode & 0o777)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                kind, data, mode, uid = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.mode, info.uid, info.gid = 0, mode, uid, uid
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                else:
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def write_layout(out, layer, config):
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def blob(data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    raw = layer.tar()
    compressed = gzip.compress(raw, compresslevel=9, mtime=0)
    layer_desc = blob(compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }
    config_desc = blob(json.dumps(image_config, sort_keys=True).encode(),
                       "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest, sort_keys=True).encode(),
                         "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest_desc]}, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return manifest_desc["digest"], len(compressed), len(raw)


def slurmlab(containerfile, binary, out):
    user, entrypoint, cmd, dest = runtime_stage(containerfile)
    uid = int(user.split(":")[0])
    layer = Layer()
    layer.host_file(binary, dest, 0o755)
    for lib in shared_libraries(binary):
        layer.host_file(lib)
    layer.host_file(CA_BUNDLE)
    layer.file("/etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n".encode())
    layer.file("/etc/group", f"root:x:0:\nnonroot:x:{uid}:\n".encode())
    layer.dir("/home/nonroot", 0o700, uid)
    layer.dir("/tmp", 0o1777)
    config = {"User": user, "Entrypoint": entrypoint, "Cmd": cmd,
              "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", f"SSL_CERT_FILE={CA_BUNDLE}"]}
    return write_layout(out, layer, config)


def pause(binary, out):
    layer = Layer()
    layer.host_file(binary, "/pause", 0o755)
    return write_layout(out, layer, {"User": "65535:65535", "Entrypoint": ["/pause"]})


def main(argv):
    if argv[:1] == ["slurmlab"] and len(argv) == 4:
        digest, size, raw = slurmlab(*argv[1:])
    elif argv[:1] == ["pause"] and len(argv) == 3:
        digest, size, raw = pause(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{digest} {size} {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
