#!/usr/bin/env bash
# CPU-s per 1,000 requests and peak RSS of whole stress-test processes (setup, run and
# cleanup), against a running loopback cluster, binaries alternated so that they share the
# machine's load. Prints one line per run and the machine load next to it.
#
#   eval "$(perf-tests/cluster env --state-dir D)"
#   stress-test/benches/cpu-per-request.sh [--rps 200] [--duration 60s] [--reps 2] \
#       [--args "FLAGS FOR ALL"] "BINARY [FLAGS]" ["BINARY [FLAGS]"...]
#
# Columns: cpu_s is user+sys of the child from /usr/bin/time; cpu_s_per_1000 divides it by the
# requests sent; dropped are arrivals that found the in-flight cap full (never sent);
# sched-exp is the number of arrivals the schedule made minus the profile's expectation (Poisson
# noise of about its square root; every arrival is either sent, dropped or a DELETE with no
# target).
set -euo pipefail

rps=200 duration=60s reps=2 extra=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rps) rps=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --args) extra=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [options] 'BINARY [FLAGS]'..." >&2; exit 2; }
: "${ARAK_LOAD_KUBECONFIG:?run eval \"\$(perf-tests/cluster env ...)\" first}"
command -v jq >/dev/null || { echo "jq is needed" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time (GNU time) is needed" >&2; exit 2; }

work=$(mktemp -d /tmp/stress-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '%-28s %5s %4s %7s %7s %9s %7s %14s %8s %8s %9s  %s\n' binary rps rep sent dropped \
    sched-exp cpu_s cpu_s_per_1000 rss_mib p50_ms p99_ms load
for rep in $(seq 1 "$reps"); do
    for spec in "$@"; do
        read -r -a cmd <<<"$spec $extra"
        label="$(basename "${cmd[0]}") ${cmd[*]:1}"
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        if ! /usr/bin/time -f '%U %S %M' -o "$work/time" "${cmd[@]}" \
            --kubeconfig "$ARAK_LOAD_KUBECONFIG" --rps "$rps" --duration "$duration" \
            --seed "$rep" --output json --report "$work/report.json" \
            >/dev/null 2>"$work/stderr"; then
            echo "$spec failed:" >&2
            tail -5 "$work/stderr" >&2
            continue
        fi
        read -r user sys rss_kib <"$work/time"
        read -r sent dropped sched_exp p50 p99 < <(jq -r '.overall as $o
            | [$o.sent, $o.dropped, ($o.scheduled - .target_requests | round),
               $o.latency_ms.p50, $o.latency_ms.p99] | @tsv' "$work/report.json")
        cpu=$(echo "$user + $sys" | bc -l)
        printf '%-28s %5s %4s %7s %7s %9s %7.2f %14.3f %8.1f %8.1f %9.1f  %s\n' \
            "$label" "$rps" "$rep" "$sent" "$dropped" "$sched_exp" "$cpu" \
            "$(echo "$cpu * 1000 / $sent" | bc -l)" "$(echo "$rss_kib / 1024" | bc -l)" \
            "$p50" "$p99" "$load"
    done
done
