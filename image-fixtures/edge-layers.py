#!/usr/bin/env python3
"""Write a set of edge-case OCI layer tars (uncompressed) into OUTDIR: layer1.tar, layer2.tar, layer3.tar.

Together they exercise everything layer application must get right: every entry type (files, dirs,
symlinks, hard links, fifo, char and block devices), owners, setuid/setgid/sticky modes, xattrs (user,
trusted, security.capability), sub-second PAX mtimes, long names (PAX and GNU, > 100 and > 255 bytes
in nested directories), long link targets, replacements across layers (file->dir, dir->symlink,
symlink->file, dir->file) and inside one layer, whiteouts, opaque directories, a whiteout followed by
a re-creation in the same layer, implicit parent directories, and a hard link into a lower layer.

Usage: edge-layers.py OUTDIR
The layers are meant to be stacked bottom-up 1, 2, 3; tests compare rimg's overlay-format result
(mounted with kernel overlayfs) with `umoci unpack` of the same layers.
"""
import io
import os
import sys
import tarfile

MTIME = 1_700_000_000


def add(tf, name, kind="file", data=b"", mode=0o644, uid=0, gid=0, link="", xattrs=None,
        mtime=MTIME, dev=(0, 0)):
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    if xattrs:
        # Binary-safe: tarfile writes hdrcharset=BINARY and the raw bytes for surrogate-escaped values.
        ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                          for k, v in xattrs.items()}
    if kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    ti.type = {
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "char": tarfile.CHRTYPE,
        "block": tarfile.BLKTYPE,
    }[kind]
    ti.linkname = link
    ti.devmajor, ti.devminor = dev
    tf.addfile(ti)


# struct vfs_cap_data, revision 2, effective, permitted = CAP_NET_RAW (13).
CAP_NET_RAW = bytes([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00] + [0] * 12)

LONG_DIR = "long/" + "d" * 60 + "/" + "e" * 70          # > 100 bytes of directories
LONG_FILE = LONG_DIR + "/" + "f" * 200 + ".txt"         # > 255 bytes in total, 204-byte component
LONG_TARGET = "../" * 10 + "t" * 120                    # a link target > 100 bytes


def layer1(tf):
    add(tf, "./", "dir", mode=0o755)
    for d in ["etc", "usr", "usr/bin", "usr/lib", "usr/share", "dev", "run", "home", "home/user",
              "r", "r/dir2link", "r/dir2file", "w", "w/gonedir", "w/gonedir/sub", "o", "o/sub",
              "hl", "long", "long/" + "d" * 60, LONG_DIR]:
        add(tf, d + "/", "dir", mode=0o755)
    add(tf, "tmp/", "dir", mode=0o1777)
    add(tf, "etc/hosts", data=b"127.0.0.1 localhost\n")
    add(tf, "etc/empty", data=b"")
    add(tf, "etc/shadow", data=b"root:*:1:0:99999:7:::\n", mode=0o640, gid=42)
    add(tf, "usr/bin/busybox", data=b"\x7fELF" + os.urandom(300_000), mode=0o755)
    add(tf, "usr/bin/ls", "hardlink", link="usr/bin/busybox")
    add(tf, "usr/bin/cat", "hardlink", link="/usr/bin/busybox")  # absolute link target
    add(tf, "usr/bin/sh", "symlink", link="busybox")
    add(tf, "usr/bin/su", data=b"suid", mode=0o4755)
    add(tf, "usr/bin/wall", data=b"sgid", mode=0o2755, gid=5)
    add(tf, "usr/bin/ping", data=b"ping", mode=0o755, xattrs={"security.capability": CAP_NET_RAW})
    add(tf, "usr/share/xattrs", data=b"x", xattrs={"user.mime": b"text/plain", "trusted.rimg": b"\x00\x01bin",
                                                   "user.empty": b""})
    add(tf, "usr/share/frac", data=b"t", mtime=MTIME + 0.25)
    add(tf, "lib", "symlink", link="usr/lib")
    add(tf, "abs", "symlink", link="/etc/hosts")
    add(tf, "dangling", "symlink", link="/no/such/file")
    add(tf, "run/fifo", "fifo", mode=0o620)
    add(tf, "dev/null", "char", mode=0o666, dev=(1, 3))
    add(tf, "dev/loop0", "block", mode=0o660, gid=6, dev=(7, 0))
    add(tf, "home/user/.profile", data=b"export PS1\n", mode=0o600, uid=1000, gid=1000)
    add(tf, "home/user/", "dir", mode=0o750, uid=1000, gid=1000)  # a dir entry after its content
    add(tf, LONG_FILE, data=b"long pax name\n")
    add(tf, "long/target-link", "symlink", link=LONG_TARGET)
    add(tf, "r/file2dir", data=b"i become a dir\n")
    add(tf, "r/dir2link/child", data=b"c")
    add(tf, "r/link2file", "symlink", link="../etc/hosts")
    add(tf, "r/dir2file/child", data=b"c")
    add(tf, "w/gone", data=b"gone")
    add(tf, "w/again", data=b"old")
    add(tf, "w/keep", data=b"keep")
    add(tf, "w/gonedir/sub/f", data=b"f")
    add(tf, "o/a", data=b"a")
    add(tf, "o/b", data=b"b")
    add(tf, "o/sub/c", data=b"c")
    add(tf, "hl/a", data=b"shared")
    add(tf, "hl/b", "hardlink", link="hl/a")


def layer2(tf):
    add(tf, "etc/", "dir", mode=0o750)                       # metadata-only update of a lower dir
    add(tf, "etc/hosts", data=b"127.0.0.1 localhost\n::1 localhost\n", mtime=MTIME + 100)
    add(tf, "r/", "dir", mode=0o755)
    add(tf, "r/file2dir/", "dir", mode=0o700, uid=7)
    add(tf, "r/file2dir/inner", data=b"inner")
    add(tf, "r/dir2link", "symlink", link="../etc")
    add(tf, "r/link2file", data=b"now a file")
    add(tf, "r/dir2file", data=b"now a file too")
    add(tf, "w/.wh.gone", data=b"")
    add(tf, "w/.wh.gonedir", data=b"")
    add(tf, "o/", "dir", mode=0o711)
    add(tf, "o/.wh..wh..opq", data=b"")
    add(tf, "o/new", data=b"new")
    add(tf, "hl/.wh.b", data=b"")
    g2 = LONG_DIR + "/" + "g" * 100 + "/" + "h" * 150
    add(tf, LONG_DIR + "/" + "g" * 100 + "/", "dir", mode=0o755)
    add(tf, g2, data=b"long gnu name\n")
    add(tf, "long/gnu-link", "symlink", link=LONG_TARGET + "/gnu")
    add(tf, "usr/lib/libc.so", data=b"libc", mode=0o755)      # through the dir, not the `lib` symlink


def layer3(tf):
    # Implicit parents: no entries for usr/ or usr/bin/ here; they must keep their lower metadata.
    add(tf, "usr/bin/newtool", data=b"new", mode=0o755)
    add(tf, "x/", "dir", mode=0o755)
    add(tf, "x/hosts-link", "hardlink", link="etc/hosts")    # target only in a lower layer
    add(tf, "w/.wh.again", data=b"")
    add(tf, "w/again", data=b"new")                            # re-created in the same layer
    add(tf, "same/", "dir", mode=0o755)
    add(tf, "same/x", data=b"file first")
    add(tf, "same/x/", "dir", mode=0o755)                      # file -> dir inside one layer
    add(tf, "same/x/y", data=b"y")
    add(tf, "same/z/", "dir", mode=0o755)
    add(tf, "same/z/inner", data=b"inner")
    add(tf, "same/z", "symlink", link="x")                     # dir -> symlink inside one layer
    add(tf, "r/file2dir/", "dir", mode=0o755, uid=7)
    add(tf, "r/file2dir/.wh..wh..opq", data=b"")               # opaque over an upper-layer dir
    add(tf, "r/file2dir/third", data=b"3")
    add(tf, "usr/bin/.wh.wall", data=b"")
    add(tf, "tmp/.wh..wh.plnk/", "dir", mode=0o700)            # aufs bookkeeping: ignored
    add(tf, "usr/share/xattrs", data=b"y", xattrs={"user.mime": b"text/x-changed"})
    add(tf, "home/.wh.user", data=b"")                         # whiteout, then the dir re-created:
    add(tf, "home/user/", "dir", mode=0o700, uid=1000, gid=1000)  # the lower .profile must be gone
    add(tf, "home/user/fresh", data=b"fresh", uid=1000, gid=1000)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, (fn, fmt) in enumerate([(layer1, tarfile.PAX_FORMAT), (layer2, tarfile.GNU_FORMAT),
                                   (layer3, tarfile.PAX_FORMAT)], start=1):
        with tarfile.open(os.path.join(out, f"layer{i}.tar"), "w", format=fmt) as tf:
            fn(tf)


if __name__ == "__main__":
    main()
