#!/usr/bin/env bash
# Build a local Docker image holding a venv's Python and packages, without any registry:
#   .ci/docker-image.sh IMAGE VENV
# The image gets the venv's base interpreter (at its own absolute path, which the venv's pyvenv.cfg
# names), the venv itself at /opt/venv (first on PATH, so the docker: runner's `python3` is it), and
# the system libraries the interpreter and every extension module link against (found with ldd).
set -euo pipefail
image=$1
venv=$(cd "$2" && pwd)
py="$venv/bin/python"
base=$("$py" -c 'import sys; print(sys.base_prefix)')
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/tmp" "$stage/root" "$stage/etc"
chmod 1777 "$stage/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"
echo 'root:x:0:' > "$stage/etc/group"

# the interpreter (binary, libpython, stdlib without its site-packages) and the venv
interp=("$base/bin/python$ver" "$base/lib/python$ver")
for lib in "$base"/lib/libpython"$ver"*.so*; do [[ -e $lib ]] && interp+=("$lib"); done
# system libraries: everything ldd resolves outside the interpreter and the venv, plus the loader
{ find "${interp[@]}" "$venv" -name '*.so*' -type f -print0 | xargs -0 -n 200 ldd 2>/dev/null
  ldd "$base/bin/python$ver"; } \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' \
  | grep -v -e "^$venv/" -e "^$base/" | sort -u > "$stage/libs"

# -h stores what a symlink points to (the libs are mostly symlinks); the venv moves to /opt/venv
sed 's,^/,,' "$stage/libs" > "$stage/relative"
# (the stage's folders come first: docker refuses a folder entry after files inside it; the venv's
# lib64 -> lib link is left out, as -h would store a second copy of lib)
tar -c -h -C "$stage" tmp root etc -C / --exclude="${base#/}/lib/python$ver/site-packages" \
    --exclude='*.pyc' --exclude="${venv#/}/lib64" --transform "s,^${venv#/},opt/venv," \
    "${interp[@]#/}" "${venv#/}" -T "$stage/relative" \
  | docker import --change "ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin" \
      --change "ENV HOME=/root" - "$image" >/dev/null
docker run --rm --entrypoint python3 "$image" -c \
  'import sys, torch, transformers; print("image ok:", sys.prefix, "torch", torch.__version__)'
