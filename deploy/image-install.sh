#!/usr/bin/env bash
# The code-location image's install steps (deploy/Dockerfile) without Docker, so CI checks them on a
# machine with no Docker daemon: in a temporary folder, copy what the Dockerfile COPYs from the
# build context, run its `RUN uv ...` lines with the same uv settings, then import the code location
# from the installed package (not from the checkout) and check the dev group stayed out.
#
# The steps are read from the Dockerfile itself, so the two cannot drift apart. What this does not
# check: the base image, the non-root user, the image's layers (docs/kubernetes.md).
# Usage: deploy/image-install.sh  (from anywhere; UV overrides the uv command, default python3 -m uv)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerfile="$repo/deploy/Dockerfile"
UV=${UV:-python3 -m uv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Dockerfile's uv settings, with the environment in the temporary folder; two differ for time
# only: no bytecode compiled (it makes imports faster, and costs most of an install), and files
# hard-linked from uv's cache where it can (the image copies them: its cache is not kept).
export UV_PROJECT_ENVIRONMENT="$work/app/.venv" UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=0
mkdir -p "$work/app"

steps=0
# COPY lines from the build context (not COPY --from=, which takes files from another image), and
# RUN lines that call uv, in the Dockerfile's order.
while IFS= read -r line; do
    read -ra words <<<"$line"
    case "${words[0]}" in
    COPY)
        [[ "${words[1]}" == --from=* ]] && continue
        sources=("${words[@]:1:${#words[@]}-2}")
        for source in "${sources[@]}"; do
            cp -R "$repo/$source" "$work/app/"
        done
        steps=$((steps + 1))
        ;;
    RUN)
        [[ "${words[1]}" == uv ]] || continue
        echo "+ ${words[*]:1}"
        (cd "$work/app" && $UV "${words[@]:2}" --quiet)
        steps=$((steps + 1))
        ;;
    esac
done < <(grep -E '^(COPY|RUN) ' "$dockerfile")
[[ $steps -ge 3 ]] || { echo "only $steps install steps found in $dockerfile" >&2; exit 1; }

# The checkout out of the way: the import must come from the environment the steps built. The
# source copy goes too, as it would not be needed in the image at run time either.
rm -rf "$work/app/ev_assets"
cd "$work"
"$UV_PROJECT_ENVIRONMENT/bin/python" - "$UV_PROJECT_ENVIRONMENT" <<'PY'
import importlib.util
import sys

env = sys.argv[1]
import ev_assets.definitions as definitions  # noqa: E402

assert definitions.__file__.startswith(env), f"imported {definitions.__file__}, not from {env}"
for dev_only in ("pytest", "ruff", "hypothesis", "kubernetes_validate"):
    assert importlib.util.find_spec(dev_only) is None, f"{dev_only} (dev group) is in the image's environment"
print(f"ev_assets.definitions imports from {definitions.__file__}")
PY
# The migrations ship with the package: the migration Job's command, on a scratch SQLite warehouse.
EV_WAREHOUSE_URL="sqlite:///$work/warehouse.sqlite" "$UV_PROJECT_ENVIRONMENT/bin/ev-awareness" db upgrade
echo "image install steps: ok ($steps steps from $dockerfile)"
