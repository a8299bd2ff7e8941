#!/usr/bin/env bash
# The trace-diff regression gate of our own CI (.ci/run calls it after the test suite).
#
# Records the fixed CPU workloads afresh (.ci/gate_workload.py: a fixed-seed MLP and the MoE sample
# workload) and diffs each run with the baseline committed in sample_traces/ci_baseline/.
# Gated, exactly: operators per step, FLOPs and bytes per step, MoE tokens per expert
# (--gate deterministic --fail-on change --threshold 0: any difference in a count fails). Timings
# are printed but never gate here: a shared CI machine is too noisy for that. Exit 0 pass, 1 a deterministic metric changed, 2 bad input.
#
# Reports (markdown, JUnit XML, JSON) go to $GATE_REPORTS (default: /tmp/torchscope-gate-reports); the
# markdown is also appended to $GITHUB_STEP_SUMMARY when set.
# After a deliberate workload or torch change, re-record the baseline:
#   python .ci/gate_workload.py sample_traces/ci_baseline
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=sample_traces/ci_baseline
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
reports="${GATE_REPORTS:-${TMPDIR:-/tmp}/torchscope-gate-reports}"
mkdir -p "$reports"

echo "trace-diff gate: recording the fixed workloads ..."
python .ci/gate_workload.py "$work/fresh" >/dev/null

status=0
for run in dense moe_train moe_generate; do
  echo
  echo "=== $run: $baseline/$run vs fresh run ==="
  rc=0
  python -m torchscope diff "$baseline/$run" "$work/fresh/$run" --gate deterministic --fail-on change --threshold 0 \
    --format text --output "$reports/$run.md" --output "$reports/$run.xml" --output "$reports/$run.json" || rc=$?
  if [ "$rc" -gt "$status" ]; then status=$rc; fi
done
echo
if [ "$status" -eq 0 ]; then
  echo "trace-diff gate: passed"
else
  echo "trace-diff gate: FAILED (exit $status); reports in $reports"
fi
exit "$status"
