#!/usr/bin/env bash
# With the last bundle chunk and bundle.sha256 in .gpu-carry: append it to /tmp/bundle.tar (the earlier
# calls appended the others), check the whole bundle and install vLLM 0.26.0 and its needs in /tmp/site.
cat .gpu-carry/chunk/part* >> /tmp/bundle.tar
echo "$(cat .gpu-carry/bundle.sha256)  /tmp/bundle.tar" | sha256sum -c || exit 1
tar -C /tmp -xf /tmp/bundle.tar
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/wheels/*.whl
