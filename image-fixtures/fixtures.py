#!/usr/bin/env python3
"""Helpers for image-fixtures/build.sh: layer tars and OCI image layouts assembled by hand.

Why by hand instead of `umoci repack`: we want byte-for-byte control over what ends up in the registry
(exact whiteout and opaque entries, owners, hardlinks, fixed mtimes) and reproducible digests, so that a
rebuilt fixture has the same digests as the cached one and tests can compare against stable values.

Subcommands (all paths are explicit; nothing here knows about the repo layout):
  mirror [--suite S]                         print the Debian mirror URL from the machine's apt sources
  busybox-layer --busybox BIN OUT.tar        /bin/busybox + applet symlinks + minimal /etc
  debian-layers BASE.tar ADD.tar DEL.tar     the "adds things" and "deletes/replaces things" layers
  large-layer BASE.tar OUT.tar --mib N       ~N MiB of mixed compressible/incompressible data
  layout SPEC.json                           write an OCI image layout from a JSON spec (see cmd_layout)
"""

import argparse
import glob
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import zlib

# Every file we author ourselves gets this mtime, so rebuilt layers hash identically.
FIXED_MTIME = 1717200000  # 2024-06-01T00:00:00Z
FIXED_CREATED = "2024-06-01T00:00:00Z"
CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------- mirror


def _deb822_stanzas(text):
    stanza = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
            continue
        if line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def find_mirror(suite):
    """Return the first http(s) URI that serves `suite`/main as a `deb` source, or None."""
    candidates = []
    one_line = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in one_line:
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            line = re.sub(r"\[[^\]]*\]", " ", line[4:])
            parts = line.split()
            if len(parts) >= 3 and parts[1] == suite and "main" in parts[2:]:
                candidates.append(parts[0])
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for st in _deb822_stanzas(text):
            if st.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in st.get("types", "").split():
                continue
            if suite not in st.get("suites", "").split():
                continue
            if "main" not in st.get("components", "").split():
                continue
            candidates.extend(st.get("uris", "").split())
    for uri in candidates:
        if uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return None


def cmd_mirror(args):
    uri = find_mirror(args.suite)
    if not uri:
        sys.exit(f"fixtures: no apt source serves '{args.suite} main' (looked in /etc/apt/sources.list*)")
    print(uri)


# --------------------------------------------------------------------------------------------- tar helpers


class LayerWriter:
    """A PAX tar writer with explicit metadata for every entry (uid/gid 0 unless told, fixed mtime)."""

    def __init__(self, path):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0, mtime=FIXED_MTIME):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = mtime
        return ti

    def dir(self, name, mode=0o755, **kw):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def file(self, name, data, mode=0o644, **kw):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def fileobj(self, name, size, fobj, mode=0o644, **kw):
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = size
        self.tar.addfile(ti, fobj)

    def symlink(self, name, target, **kw):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target, mode=0o644, **kw):
        ti = self._info(name, tarfile.LNKTYPE, mode, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def copy_dir_meta(self, base_members, name):
        """Emit directory `name` with the metadata it has in the base layer (so a diff layer's parent
        directory entries don't silently change /usr's mode or owner), or defaults if it's new."""
        m = base_members.get(name)
        if m is not None and m.isdir():
            self.dir(name, m.mode, uid=m.uid, gid=m.gid, mtime=int(m.mtime))
        else:
            self.dir(name)

    def close(self):
        self.tar.close()


def base_index(base_tar):
    """name (no leading ./, no trailing /) -> TarInfo for every entry of a layer tar."""
    out = {}
    with tarfile.open(base_tar, "r:") as t:
        for m in t:
            out[norm(m.name)] = m
    return out


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


# --------------------------------------------------------------------------------------------- layers


def cmd_busybox_layer(args):
    applets = subprocess.run([args.busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    applets = sorted(a for a in set(applets) if a and "/" not in a and a != "busybox")
    if "sh" not in applets:
        sys.exit("fixtures: busybox has no 'sh' applet")
    w = LayerWriter(args.out)
    w.dir("bin")
    with open(args.busybox, "rb") as f:
        w.fileobj("bin/busybox", os.fstat(f.fileno()).st_size, f, mode=0o755)
    for a in applets:
        w.symlink(f"bin/{a}", "busybox")
    for d in ("dev", "etc", "home", "proc", "sys", "usr", "var", "var/spool", "var/www"):
        w.dir(d)
    w.dir("root", 0o700)
    w.dir("tmp", 0o1777)
    w.file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "nobody:x:65534:65534:nobody:/home:/bin/false\n",
    )
    w.file("etc/group", "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n")
    w.file("etc/hostname", "busybox\n")
    w.close()


def cmd_debian_layers(args):
    base = base_index(args.base)
    # Layer 2: adds an application tree, a config, replaces /etc/motd, owners other than root, a hardlink.
    w = LayerWriter(args.add)
    w.copy_dir_meta(base, "etc")
    w.file("etc/app.conf", "# rimg fixture: system-wide config added by layer 2\nmode=production\n")
    w.file("etc/motd", "rimg fixture: Debian bookworm minbase, layer 2 replaced this file\n")
    w.copy_dir_meta(base, "opt")
    w.dir("opt/app")
    w.dir("opt/app/bin")
    w.file("opt/app/bin/app", '#!/bin/sh\necho "rimg fixture app: $(cat /opt/app/conf/app.conf)"\n', mode=0o755)
    w.symlink("opt/app/current", "bin/app")
    w.dir("opt/app/conf")
    w.file("opt/app/conf/app.conf", "version=1\n")
    w.file("opt/app/conf/logging.conf", "level=debug\n")
    w.dir("opt/app/old")
    w.file("opt/app/old/legacy.txt", "this directory is deleted by layer 3 (whiteout .wh.old)\n")
    w.file("opt/app/old/legacy.bin", bytes(range(256)) * 64)
    w.dir("opt/app/data", 0o750, uid=1000, gid=1000)
    w.file("opt/app/data/records.txt", "".join(f"record {i}\n" for i in range(2000)), 0o640, uid=1000, gid=1000)
    w.hardlink("opt/app/data/records.hardlink", "opt/app/data/records.txt", 0o640, uid=1000, gid=1000)
    w.close()

    # Layer 3: whiteouts (a file, directories from the base, a directory from layer 2) and an opaque dir.
    doc_victims = [p for p in ("procps", "iproute2", "libc-bin") if f"usr/share/doc/{p}" in base]
    if not doc_victims:
        sys.exit("fixtures: base layer has none of the /usr/share/doc dirs layer 3 is meant to delete")
    w = LayerWriter(args.delete)
    w.copy_dir_meta(base, "etc")
    if "etc/issue.net" in base:
        w.file("etc/.wh.issue.net", b"")
    w.copy_dir_meta(base, "opt")
    w.dir("opt/app")
    w.file("opt/app/.wh.old", b"")
    w.dir("opt/app/conf")
    w.file("opt/app/conf/.wh..wh..opq", b"")
    w.file("opt/app/conf/app.conf", "version=2\n# /opt/app/conf was replaced wholesale by layer 3 (opaque)\n")
    w.file("opt/app/conf/site.conf", "site=fixture\n")
    for d in ("usr", "usr/share", "usr/share/doc"):
        w.copy_dir_meta(base, d)
    for p in doc_victims:
        w.file(f"usr/share/doc/.wh.{p}", b"")
    w.close()
    print(json.dumps({"deleted_docs": doc_victims}))


def cmd_large_layer(args):
    """Copies of the base's /usr (compressible: binaries, text) until ~70% of the target, then seeded
    pseudo-random files (incompressible) for the rest. Deterministic for a given base tar."""
    target = args.mib << 20
    with tarfile.open(args.base, "r:") as t:
        members = [m for m in t.getmembers() if norm(m.name) == "usr" or norm(m.name).startswith("usr/")]
    usr_bytes = sum(m.size for m in members if m.isreg()) or 1
    copies = max(1, int(target * 0.7) // usr_bytes)
    w = LayerWriter(args.out)
    w.dir("data")
    with tarfile.open(args.base, "r:") as t:
        for n in range(copies):
            prefix = f"data/usr{n}/"
            for m in members:
                name = prefix + norm(m.name)
                kw = dict(uid=m.uid, gid=m.gid, mtime=int(m.mtime))
                if m.isdir():
                    w.dir(name, m.mode, **kw)
                elif m.isreg():
                    w.fileobj(name, m.size, t.extractfile(m), m.mode, **kw)
                elif m.issym():
                    w.symlink(name, m.linkname, **kw)
                elif m.islnk():
                    w.hardlink(name, prefix + norm(m.linkname), m.mode, **kw)
    rest = max(0, target - copies * usr_bytes)
    rng = random.Random(20240601)
    w.dir("data/random")
    i = 0
    while rest > 0:
        size = min(rest, 16 << 20)
        w.file(f"data/random/blob{i:03}.bin", rng.randbytes(size))
        rest -= size
        i += 1
    w.close()
    print(json.dumps({"usr_copies": copies, "usr_bytes": usr_bytes, "random_files": i}))


# --------------------------------------------------------------------------------------------- layout

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def compressed_layer(tar_path, cache_dir, compression):
    """Compress a layer tar once; cache by (diff_id, compression). Returns (diff_id, digest, size, path)."""
    diff_hex = sha256_file(tar_path)
    os.makedirs(cache_dir, exist_ok=True)
    ext = {"gzip": "tar.gz", "zstd": "tar.zst"}[compression]
    blob = os.path.join(cache_dir, f"{diff_hex}.{ext}")
    meta = blob + ".json"
    if os.path.exists(blob) and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        if os.path.getsize(blob) == m["size"]:
            return "sha256:" + diff_hex, m["digest"], m["size"], blob
    tmp = blob + ".tmp"
    if compression == "gzip":
        # zlib with wbits=31 writes a gzip header with mtime 0 and no file name: reproducible output.
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        with open(tar_path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(comp.compress(chunk))
            dst.write(comp.flush())
    else:
        subprocess.run(["zstd", "-q", "-f", "-3", "--no-progress", tar_path, "-o", tmp], check=True)
    digest = "sha256:" + sha256_file(tmp)
    size = os.path.getsize(tmp)
    os.replace(tmp, blob)
    with open(meta, "w") as f:
        json.dump({"digest": digest, "size": size}, f)
    return "sha256:" + diff_hex, digest, size, blob


class Layout:
    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.manifests = []

    def blob_path(self, digest):
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def put_bytes(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(self.blob_path(digest), "wb") as f:
            f.write(data)
        return digest, len(data)

    def put_file(self, digest, src):
        dst = self.blob_path(digest)
        if os.path.exists(dst):
            return
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    def put_json(self, obj):
        return self.put_bytes(json.dumps(obj, separators=(",", ":")).encode())

    def write_index(self):
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests}
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump(idx, f, separators=(",", ":"))


def build_image(layout, image, cache_dir):
    """One image manifest (+config) into `layout`; returns its descriptor (without ref annotations)."""
    diff_ids, layer_descs, history = [], [], []
    for layer in image["layers"]:
        comp = layer.get("compression", "gzip")
        diff_id, digest, size, path = compressed_layer(layer["tar"], cache_dir, comp)
        layout.put_file(digest, path)
        diff_ids.append(diff_id)
        layer_descs.append(
            {"mediaType": OCI_LAYER_GZ if comp == "gzip" else OCI_LAYER_ZSTD, "digest": digest, "size": size}
        )
        history.append({"created": image.get("created", FIXED_CREATED), "created_by": layer["created_by"]})
    config = {
        "created": image.get("created", FIXED_CREATED),
        "architecture": image.get("architecture", "amd64"),
        "os": image.get("os", "linux"),
    }
    if image.get("variant"):
        config["variant"] = image["variant"]
    config["config"] = image["config"]
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = history
    cdigest, csize = layout.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": csize},
        "layers": layer_descs,
    }
    if image.get("annotations"):
        manifest["annotations"] = image["annotations"]
    mdigest, msize = layout.put_json(manifest)
    desc = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": msize}
    plat = {"architecture": config["architecture"], "os": config["os"]}
    if image.get("variant"):
        plat["variant"] = image["variant"]
    desc["platform"] = plat
    return desc


def cmd_layout(args):
    """SPEC: {"layout": DIR, "layer_cache": DIR, "images": [IMAGE...]} where IMAGE is
    {"tags": [..], "config": {Cmd, Env, Labels...}, "layers": [{"tar", "created_by", "compression"?}]}
    or a multi-platform index {"tags": [..], "index": [IMAGE...]} (each without tags).
    The layout is written to DIR.tmp and renamed over DIR, so a half-built layout is never visible."""
    with open(args.spec) as f:
        spec = json.load(f)
    final = spec["layout"]
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    layout = Layout(tmp)
    for image in spec["images"]:
        if "index" in image:
            children = []
            for child in image["index"]:
                desc = build_image(layout, child, spec["layer_cache"])
                if child.get("attestation") and children:
                    # as BuildKit writes them: the index descriptor says what the entry attests
                    desc["annotations"] = {
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": children[0]["digest"],
                    }
                children.append(desc)
            idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
            idigest, isize = layout.put_json(idx)
            desc = {"mediaType": OCI_INDEX, "digest": idigest, "size": isize}
        else:
            desc = build_image(layout, image, spec["layer_cache"])
        for tag in image["tags"]:
            d = dict(desc)
            d["annotations"] = {"org.opencontainers.image.ref.name": tag}
            layout.manifests.append(d)
    layout.write_index()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for d in layout.manifests:
        print(f"{final}:{d['annotations']['org.opencontainers.image.ref.name']} {d['digest']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mirror")
    s.add_argument("--suite", default="bookworm")
    s.set_defaults(fn=cmd_mirror)
    s = sub.add_parser("busybox-layer")
    s.add_argument("--busybox", default="/bin/busybox")
    s.add_argument("out")
    s.set_defaults(fn=cmd_busybox_layer)
    s = sub.add_parser("debian-layers")
    s.add_argument("base")
    s.add_argument("add")
    s.add_argument("delete")
    s.set_defaults(fn=cmd_debian_layers)
    s = sub.add_parser("large-layer")
    s.add_argument("base")
    s.add_argument("out")
    s.add_argument("--mib", type=int, default=1024)
    s.set_defaults(fn=cmd_large_layer)
    s = sub.add_parser("layout")
    s.add_argument("spec")
    s.set_defaults(fn=cmd_layout)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
