#!/usr/bin/env bash
# The PEXes of the apps that run LIBERO (after `./pants package ::`) start LIBERO as a user's `./pants run` would.
# LIBERO's five asset wheels fill one package directory, which a venv of symlinks splits (libero then refuses to
# start): their BUILDs set venv_site_packages_copies=True. Each PEX resolves LIBERO's assets, and apps/data's
# writes a few LIBERO frames with the README's flags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for app in data eval rl; do
  PEX_INTERPRETER=1 python3.11 "dist/apps.${app}/${app}.pex" -c \
    "from libero.libero import get_libero_path; get_libero_path('assets')"
done
out="$(mktemp -d)"
trap 'rm -rf "${out}"' EXIT
python3.11 dist/apps.data/data.pex generate --output "${out}/demos" --tasks libero_object/0 --episodes-per-task 1 \
  --max-steps 5 --image-size 32 --fast-render --execution-noise 0.2,0.2,0.2,0.015,0.015,0.015,0 > "${out}/log" 2>&1 \
  || { tail -20 "${out}/log" >&2; echo "CI: apps/data's PEX could not write LIBERO demonstrations" >&2; exit 1; }
grep -q '"frames": 5' "${out}/log" || { tail -20 "${out}/log" >&2; echo "CI: apps/data's PEX wrote no 5 frames" >&2; exit 1; }
echo "LIBERO starts from the PEXes of apps/data, apps/eval and apps/rl"
