#!/usr/bin/env python3
"""Write a deep image (one small layer per step) as an OCI image layout, in about a second.

Images of many layers break tools that hand every layer to one mount(2) call (its options must fit in a
page: ~45 layers of rimg's store paths, ~130 of podman's) or exceed kernel overlayfs's 500 lower layers.
This generator makes such images at test time instead of keeping them in the fixtures, and exercises what
goes wrong when layers are merged across those limits:

- layer 0: /bin/busybox (a static binary given on the command line) with applet symlinks, /etc/passwd;
- layer i > 0: /layers/NNNN (NNNN = i, content "layer i"), and across layers:
  - every 7th layer deletes the file of the layer 5 below it (a whiteout `/layers/.wh.NNNN`);
  - every 50th layer makes /opq opaque (`/opq/.wh..wh..opq`) and adds /opq/fNNNN, so only the files of the
    last opaque layer and those added after it stay;
  - every 10th layer adds /deep/a/b/c/NNNN with implicit parents (no directory entries);
  - layer 3 makes the directory /gone with files, layer 13 deletes it whole (`/.wh.gone`);
  - layer 2 makes the directory /swap, the middle layer replaces it with a regular file;
  - the last layer adds /top with a hard link /top-link to it.

Usage: deep-image.py OUT_DIR --layers N [--tag TAG] [--busybox /bin/busybox] [--gzip]
OUT_DIR becomes an OCI layout with one manifest tagged TAG (org.opencontainers.image.ref.name), for
`skopeo copy oci:OUT_DIR:TAG ...`, `umoci unpack --image OUT_DIR:TAG` or a tar of it for `rimg load`.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

MTIME = 1_717_200_000
CREATED = "2024-06-01T00:00:00Z"
APPLETS = ["sh", "cat", "ls", "find", "wc", "true", "echo", "test", "sort", "stat", "md5sum"]


def add(tf, name, kind="file", data=b"", mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.uname, ti.gname, ti.mtime = mode, 0, 0, "", "", MTIME
    if kind == "file":
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
    ti.linkname = link
    tf.addfile(ti)


def base_layer(tf, busybox):
    for d in ["bin", "etc", "layers", "opq", "tmp"]:
        add(tf, d + "/", "dir", mode=0o1777 if d == "tmp" else 0o755)
    with open(busybox, "rb") as f:
        add(tf, "bin/busybox", data=f.read(), mode=0o755)
    for a in APPLETS:
        add(tf, "bin/" + a, "symlink", link="busybox")
    add(tf, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    add(tf, "etc/group", data=b"root:x:0:\n")


def step_layer(tf, i, n):
    add(tf, f"layers/{i:04}", data=f"layer {i}\n".encode())
    if i >= 7 and i % 7 == 0:
        add(tf, f"layers/.wh.{i - 5:04}")
    if i % 50 == 0:
        add(tf, "opq/.wh..wh..opq")
        add(tf, f"opq/f{i:04}", data=b"opaque\n")
    elif i % 10 == 5:
        add(tf, f"opq/f{i:04}", data=b"kept\n")
    if i % 10 == 0:
        add(tf, f"deep/a/b/c/{i:04}", data=b"deep\n")
    if i == 2:
        add(tf, "swap/", "dir")
        add(tf, "swap/inside", data=b"dir\n")
    if i == 3:
        add(tf, "gone/", "dir")
        add(tf, "gone/x", data=b"x\n")
    if i == 13:
        add(tf, ".wh.gone")
    if i == n // 2:
        add(tf, "swap", data=b"now a file\n")
    if i == n - 1:
        add(tf, "top", data=b"top\n")
        add(tf, "top-link", "hardlink", link="top")


class Layout:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')

    def put(self, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest


def build(out, n, tag, busybox, compress):
    layout = Layout(out)
    layers, diff_ids = [], []
    for i in range(n):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            if i == 0:
                base_layer(tf, busybox)
            else:
                step_layer(tf, i, n)
        data = raw.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
        media = "application/vnd.oci.image.layer.v1.tar"
        if compress:
            data = gzip.compress(data, compresslevel=1, mtime=0)
            media += "+gzip"
        layers.append({"mediaType": media, "digest": layout.put(data), "size": len(data)})
    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"deep-image.py layer {i}"} for i in range(n)],
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layout.put(cfg),
                   "size": len(cfg)},
        "layers": layers,
    }
    man = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": manifest["mediaType"], "digest": layout.put(man), "size": len(man),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--tag", default="latest")
    p.add_argument("--busybox", default="/bin/busybox")
    p.add_argument("--gzip", action="store_true", help="compress the layers (default: plain tar)")
    a = p.parse_args()
    if a.layers < 2:
        p.error("--layers must be at least 2")
    build(a.out, a.layers, a.tag, a.busybox, a.gzip)


if __name__ == "__main__":
    main()
