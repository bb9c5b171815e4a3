#!/usr/bin/env python3
"""Checks that deploy/Containerfile's runtime image installs every shared library a built imgpipe loads.

No container engine runs here, so the image is never built in the tests; this keeps its runtime package list honest
instead: each library `ldd` names for the binary is owned by a Debian package (dpkg -S), and that package must be in
the image, i.e. be Priority required (the slim base has those), or be listed in the last stage's `apt-get install`,
or be a dependency of one that is (apt-cache depends, recursively). A library the image lacks fails the check with
the package to add.

    check_containerfile.py --imgpipe build/release/src/cli/imgpipe [--containerfile deploy/Containerfile]
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path


def runtime_packages(containerfile):
    """The packages the last stage's `apt-get install` lines name."""
    text = containerfile.read_text()
    last_stage = re.split(r"(?m)^FROM\s", text)[-1]
    joined = re.sub(r"\\\n", " ", last_stage)
    packages = []
    for line in joined.splitlines():
        for command in line.split("&&"):
            words = command.split()
            if "apt-get" in words and "install" in words:
                packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    if not packages:
        raise SystemExit(f"{containerfile}: no apt-get install in its last stage")
    return packages


def closure(packages):
    """The packages and everything they depend on (Depends and Pre-Depends), by apt-cache."""
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                          "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                         capture_output=True, text=True, check=True).stdout
    return {line.split(":")[0] for line in out.splitlines() if line and not line.startswith((" ", "<"))}


def required_packages():
    """Priority required packages of this system: what a Debian slim image holds before anything is installed."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Priority}\n"], capture_output=True, text=True,
                         check=True).stdout
    return {name for name, priority in (line.split() for line in out.splitlines() if line) if priority == "required"}


def libraries(binary):
    """{soname: path} of the shared libraries the binary loads."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def owners(paths):
    """{path: the Debian package that owns it} for the paths dpkg knows, in one dpkg call."""
    def variants(path):
        # Debian 12 is merged-/usr: dpkg knows some libraries under /lib, others under /usr/lib.
        return [path, path[4:] if path.startswith("/usr/") else "/usr" + path]
    asked = [v for path in paths for v in variants(path)]
    out = subprocess.run(["dpkg", "-S", *asked], capture_output=True, text=True).stdout  # exits 1 for the misses
    by_path = {}
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        by_path[path.strip()] = package.split(":")[0].strip()
    return {path: next((by_path[v] for v in variants(path) if v in by_path), None) for path in paths}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgpipe", required=True, type=Path)
    parser.add_argument("--containerfile", type=Path, default=Path(__file__).with_name("Containerfile"))
    args = parser.parse_args()

    listed = runtime_packages(args.containerfile)
    present = closure(listed) | required_packages()
    missing = {}
    loaded = libraries(args.imgpipe)
    packages = owners(list(loaded.values()))
    for soname, path in sorted(loaded.items()):
        package = packages[path]
        if package is None:
            print(f"{args.containerfile}: {soname} ({path}) belongs to no Debian package; imgpipe must not link it",
                  file=sys.stderr)
            return 1
        if package not in present:
            missing.setdefault(package, []).append(soname)
    if missing:
        for package, sonames in sorted(missing.items()):
            print(f"{args.containerfile}: the runtime image lacks {', '.join(sonames)}: add {package} to its "
                  "apt-get install", file=sys.stderr)
        return 1
    print(f"{args.containerfile}: the runtime image has every library imgpipe loads "
          f"({len(listed)} packages listed): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
