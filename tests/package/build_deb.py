# SPDX-License-Identifier: Apache-2.0
"""Builds the krtiot .deb from a clean copy of the source tree.

The copy is what git would see (tracked files plus untracked, not ignored
ones, as they are in the working tree), or, outside git, the tree without
build directories. dpkg-buildpackage runs in the copy, so the source tree is
never written to. Used by tests/package/test_package.py and by anything else
that needs the package (the system test):

    from build_deb import find_or_build_deb
    deb = find_or_build_deb()          # $KRTIOT_DEB if set, else a fresh build

or from a shell:

    /usr/bin/python3 tests/package/build_deb.py [OUT_DIR]   # prints the .deb path

OUT_DIR (default $KRTIOT_DEB_DIR, else /tmp/krtiot-deb) receives the .deb,
.changes, .buildinfo, the -dbgsym .deb, build.log, and deb-path.txt, which
holds the path of the .deb once a build has succeeded.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[2]
DEFAULT_OUT_DIR = Path(os.environ.get("KRTIOT_DEB_DIR", "/tmp/krtiot-deb"))
PACKAGE = "krtiot"


class BuildError(Exception):
    pass


def _git_files(src):
    """Paths git would commit from SRC (None outside a git work tree)."""
    if not (src / ".git").exists() or not shutil.which("git"):
        return None
    out = subprocess.run(
        ["git", "-C", str(src), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def clean_copy(src, dst):
    """Copies the source tree SRC to DST (which must not exist)."""
    files = _git_files(src)
    if files is None:
        def ignore(d, names):
            top = Path(d) == src
            return [n for n in names
                    if n in (".git", "__pycache__", ".pytest_cache")
                    or (top and (n.startswith("build") or n.startswith("obj-")))]
        shutil.copytree(src, dst, symlinks=True, ignore=ignore)
        return
    dst.mkdir(parents=True)
    for rel in files:
        s = src / rel
        if not os.path.lexists(s):          # deleted in the work tree, not yet in git
            continue
        d = dst / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def missing_build_deps(tree):
    """dpkg-checkbuilddeps' complaint for TREE, or '' when everything is there."""
    r = subprocess.run(["dpkg-checkbuilddeps"], cwd=tree, capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stderr or r.stdout).strip()


def build_deb(out_dir=DEFAULT_OUT_DIR, src=SOURCE_DIR):
    """Builds the binary packages into OUT_DIR; returns the path of the .deb.

    Raises BuildError (with the log's tail) when the build fails."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in list(out_dir.glob(f"{PACKAGE}_*")) + list(out_dir.glob(f"{PACKAGE}-dbgsym_*")):
        old.unlink()
    (out_dir / "deb-path.txt").unlink(missing_ok=True)
    tree = out_dir / "src"
    if tree.exists():
        shutil.rmtree(tree)
    clean_copy(Path(src), tree)

    missing = missing_build_deps(tree)
    if missing:
        raise BuildError(f"missing build dependencies: {missing}")
    version = _run(["dpkg-parsechangelog", "-S", "Version"], cwd=tree)
    arch = _run(["dpkg-architecture", "-qDEB_HOST_ARCH"])

    log = out_dir / "build.log"
    with open(log, "w") as f:
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree,
                           stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-60:])
        raise BuildError(f"dpkg-buildpackage failed (exit {r.returncode}), {log}:\n{tail}")
    shutil.rmtree(tree)

    deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    if not deb.is_file():
        raise BuildError(f"dpkg-buildpackage succeeded but {deb} is missing")
    (out_dir / "deb-path.txt").write_text(f"{deb}\n")
    return deb


def find_or_build_deb(out_dir=DEFAULT_OUT_DIR):
    """$KRTIOT_DEB when it names a file, else a fresh build_deb(OUT_DIR)."""
    given = os.environ.get("KRTIOT_DEB")
    if given:
        if not Path(given).is_file():
            raise BuildError(f"KRTIOT_DEB={given} is not a file")
        return Path(given)
    return build_deb(out_dir)


if __name__ == "__main__":
    try:
        print(build_deb(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT_DIR))
    except BuildError as e:
        sys.exit(str(e))
