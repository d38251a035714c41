#!/usr/bin/env bash
# The folders include one way, from the CLI down to the kernels: each folder below may include only the folders
# listed beside it (and itself). Prints every include that points up or sideways and exits 1; CTest runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [kernels]="kernels"
  [runtime]="kernels runtime"
  [checkpoints]="runtime checkpoints"
  [policies]="runtime checkpoints policies"
  [eval/tasks]="runtime eval"
  [eval]="runtime checkpoints policies eval"
  [trainers]="runtime checkpoints policies eval trainers"
)
status=0
for folder in "${!allowed[@]}"; do
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"${line#*:}")
    # eval/tasks sits below the harness: of eval/ it may include only eval/tasks/.
    if [ "$folder" = eval/tasks ] && [ "$target" = eval ] && ! grep -q '#include "eval/tasks/' <<<"$line"; then
      echo "$line: eval/tasks/ includes the eval harness above it"; status=1
    fi
    # Files of eval/tasks/ are checked under their own entry.
    if [ "$folder" = eval ] && [[ $file == eval/tasks/* ]]; then continue; fi
    case " ${allowed[$folder]} " in
      *" $target "*) ;;
      *) echo "$line: $folder/ includes $target/, which is not below it"; status=1 ;;
    esac
  done < <(grep -rnE '^#include "[a-z_]+/' "$folder" --include='*.h' --include='*.cpp' --include='*.cu' --include='*.cuh' || true)
done
[ $status -eq 0 ] && echo "include layers: every folder includes only the folders below it"
exit $status
