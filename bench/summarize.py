#!/usr/bin/env python3
"""The table bench/load.sh and bench/service.sh print: per scenario and setup, the median
over rounds of requests/s, p50 and p99 latency and the share refused, and the median of the
ratio to the baseline setup measured in the same round.

    bench/summarize.py RESULTS BASELINE SETUP...

Each line of RESULTS: round scenario setup req/s p50 p99 non-2xx total (wrk's figures).
"""
import statistics
import sys


def ms(text):
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def main():
    path, baseline, setups = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = [line.split() for line in open(path)]
    base = {(r[0], r[1]): float(r[3]) for r in rows if r[2] == baseline}
    scenarios = list(dict.fromkeys(r[1] for r in rows))
    print()
    print(f"{'scenario':8} {'setup':20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} {'x ' + baseline:>8}")
    for scenario in scenarios:
        for setup in setups:
            mine = [r for r in rows if r[1] == scenario and r[2] == setup]
            if not mine:
                continue
            rps = statistics.median(float(r[3]) for r in mine)
            p50 = statistics.median(ms(r[4]) for r in mine)
            p99 = statistics.median(ms(r[5]) for r in mine)
            refused = statistics.median(int(r[6]) / max(1, int(r[7])) for r in mine)
            ratios = [float(r[3]) / base[(r[0], scenario)] for r in mine if (r[0], scenario) in base]
            ratio = f"{statistics.median(ratios):8.3f}" if ratios else f"{'-':>8}"
            print(f"{scenario:8} {setup:20} {rps:10.0f} {p50:8.3f} {p99:8.3f} {refused:8.1%} {ratio}")
            if scenario == "allowed" and refused > 0:
                print(f"  warning: {setup} answered {refused:.1%} non-2xx in the allowed scenario (503: Redis missed its deadline)")


if __name__ == "__main__":
    main()
