#!/usr/bin/env python3
"""Write hostile (and tricky-but-legal) layer tars into OUTDIR, aimed at the absolute path OUTSIDE.

Each `refuse-*.tar` tries one way out of the layer directory and must be refused with an error that
names the entry; each `allow-*.tar` looks dangerous but is legal and must apply without writing
anything outside the layer. Tests put sentinels around the layer directory and check that nothing
outside it changed either way.

Usage: hostile-layers.py OUTDIR OUTSIDE
"""
import io
import os
import sys
import tarfile


def add(tf, name, kind="file", data=b"pwned\n", link="", mode=0o644, pax=None):
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    ti.mtime = 1_700_000_000
    if pax:
        ti.pax_headers = pax
    if kind == "file":
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
               "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE}[kind]
    ti.linkname = link
    if kind == "char":
        ti.devmajor, ti.devminor = 1, 3
    tf.addfile(ti)


def layers(outside):
    return {
        # `..` escapes, relative and absolute.
        "refuse-dotdot": [("../pwned-dotdot", "file", "")],
        "refuse-deep-dotdot": [("a/", "dir", ""), ("a/b/../../../pwned-deep", "file", "")],
        "refuse-abs-dotdot": [("/../pwned-abs", "file", "")],
        "refuse-abs-dotdot2": [("/etc/../../pwned-abs2", "file", "")],
        # Writes through a symlink in a parent position.
        "refuse-symlink-abs": [("evil", "symlink", outside), ("evil/pwned", "file", "")],
        "refuse-symlink-rel": [("evil", "symlink", "../outside"), ("evil/pwned", "file", "")],
        "refuse-symlink-dotdot": [("d/", "dir", ""), ("d/up", "symlink", "../../.."),
                                  ("d/up/x/pwned", "file", "")],
        "refuse-symlink-chain": [("c1", "symlink", "c2"), ("c2", "symlink", outside),
                                 ("c1/pwned", "file", "")],
        "refuse-symlink-inside": [("real/", "dir", ""), ("alias", "symlink", "real"),
                                  ("alias/file", "file", "")],
        "refuse-symlink-dir-entry": [("evil", "symlink", outside), ("evil/sub/", "dir", "")],
        "refuse-symlink-whiteout": [("evil", "symlink", outside), ("evil/.wh.victim", "file", "")],
        "refuse-symlink-opaque": [("evil", "symlink", outside), ("evil/.wh..wh..opq", "file", "")],
        # Hard links out of the layer.
        "refuse-hardlink-dotdot": [("shadow", "hardlink", "../../etc/shadow")],
        "refuse-hardlink-abs": [("shadow", "hardlink", "/etc/shadow")],
        "refuse-hardlink-via-symlink": [("evil", "symlink", "/etc"), ("shadow", "hardlink", "evil/shadow")],
        # Special files in a parent position must be refused, not opened (a fifo would block).
        "refuse-fifo-parent": [("p", "fifo", ""), ("p/x", "file", "")],
        "refuse-device-parent": [("c", "char", ""), ("c/x", "file", "")],
        # Whiteouts that name the parent.
        "refuse-whiteout-dotdot": [("d/", "dir", ""), ("d/.wh..", "file", "")],
        "refuse-whiteout-escape": [("../.wh.victim", "file", "")],
        # Legal: a symlink replaced by a directory, a file replacing a hard link to an outside-pointing
        # symlink, symlinks pointing anywhere (never followed), overlay xattrs (dropped).
        "allow-symlink-then-dir": [("evil", "symlink", outside), ("evil/", "dir", ""),
                                   ("evil/inside", "file", "")],
        "allow-file-over-symlink": [("lnk", "symlink", outside + "/victim"), ("hl", "hardlink", "lnk"),
                                    ("hl", "file", ""), ("lnk", "file", "")],
        "allow-dangling": [("x", "symlink", outside + "/victim"), ("y", "symlink", "../../../../etc/passwd")],
        "allow-overlay-xattrs": [("f", "file", "overlay")],
    }


def main():
    out, outside = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name, entries in layers(outside).items():
        with tarfile.open(os.path.join(out, name + ".tar"), "w", format=tarfile.PAX_FORMAT) as tf:
            for path, kind, link in entries:
                if link == "overlay":
                    add(tf, path, pax={"SCHILY.xattr.trusted.overlay.redirect": "/../../etc",
                                       "SCHILY.xattr.trusted.overlay.opaque": "y",
                                       "SCHILY.xattr.user.overlay.metacopy": "",
                                       "SCHILY.xattr.user.ok": "1"})
                else:
                    add(tf, path, kind, link=link)


if __name__ == "__main__":
    main()
