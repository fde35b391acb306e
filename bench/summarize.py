#!/usr/bin/env python3
"""The table bench/load.sh and bench/service.sh print: per scenario and setup, the median
over rounds, with the min–max in brackets, of requests/s, of the ratio to the baseline setup
measured in the same round, and of the server's CPU time per request and its ratio to the
baseline's; beside them the median p50 and p99 latency and the share refused. Rounds move
with whatever else the machine runs: the spread says how much, and the CPU time per request
moves less than requests/s.

    bench/summarize.py RESULTS BASELINE SETUP... [--pair A:B]...

Each `--pair A:B` adds, per scenario, A's CPU time per request and requests/s as ratios to
B's in the same round (median and min–max): the comparison of two setups with the round's
noise paired out.

Each line of RESULTS: round scenario setup req/s p50 p99 non-2xx total cpu-µs/request
[redis-cpu-µs/request]. Redis's CPU time per request is printed for setups that use Redis.
"""
import statistics
import sys


def ms(text):
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def spread(values, digits):
    """The median and the min–max, e.g. `0.951 (0.902–0.987)`."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def pairs_table(rows, pairs):
    """A's CPU per request and requests/s over B's, round by round, per scenario."""
    at = {(r[0], r[1], r[2]): r for r in rows if len(r) > 8}
    scenarios = list(dict.fromkeys(r[1] for r in rows))
    print()
    print("| scenario | setup | over | CPU µs/req ratio | req/s ratio |")
    print("| --- | --- | --- | --- | --- |")
    for a, b in pairs:
        for scenario in scenarios:
            rounds = [k[0] for k in at if k[1] == scenario and k[2] == a and (k[0], scenario, b) in at]
            if not rounds:
                continue
            cpu = [float(at[(r, scenario, a)][8]) / float(at[(r, scenario, b)][8]) for r in rounds]
            rps = [float(at[(r, scenario, a)][3]) / float(at[(r, scenario, b)][3]) for r in rounds]
            print(f"| {scenario} | {a} | {b} | {spread(cpu, 3)} | {spread(rps, 3)} |")


def main():
    args = sys.argv[1:]
    pairs = [tuple(args[i + 1].split(":", 1)) for i, a in enumerate(args) if a == "--pair"]
    args = [a for i, a in enumerate(args) if a != "--pair" and (i == 0 or args[i - 1] != "--pair")]
    path, baseline, setups = args[0], args[1], args[2:]
    rows = [line.split() for line in open(path)]
    base = {(r[0], r[1]): r for r in rows if r[2] == baseline}
    scenarios = list(dict.fromkeys(r[1] for r in rows))
    columns = ["scenario", "setup", "req/s", f"x {baseline} req/s", "p50 ms", "p99 ms", "refused",
               "CPU µs/req", f"x {baseline} CPU", "Redis CPU µs/req"]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for scenario in scenarios:
        for setup in setups:
            mine = [r for r in rows if r[1] == scenario and r[2] == setup]
            if not mine:
                continue
            paired = [(r, base[(r[0], scenario)]) for r in mine if (r[0], scenario) in base]
            rps = [float(r[3]) for r in mine]
            rps_ratio = [float(r[3]) / float(b[3]) for r, b in paired]
            cpu = [float(r[8]) for r in mine if len(r) > 8]
            cpu_ratio = [float(r[8]) / float(b[8]) for r, b in paired
                         if len(r) > 8 and len(b) > 8 and float(b[8]) > 0]
            redis_cpu = [float(r[9]) for r in mine if len(r) > 9]
            refused = statistics.median(int(r[6]) / max(1, int(r[7])) for r in mine)
            cells = [
                scenario,
                setup,
                spread(rps, 0),
                spread(rps_ratio, 3),
                f"{statistics.median(ms(r[4]) for r in mine):.3f}",
                f"{statistics.median(ms(r[5]) for r in mine):.3f}",
                f"{refused:.1%}",
                spread(cpu, 2),
                spread(cpu_ratio, 3),
                spread(redis_cpu, 2) if "redis" in setup else "-",
            ]
            print("| " + " | ".join(cells) + " |")
            if scenario == "allowed" and refused > 0:
                print(f"  warning: {setup} answered {refused:.1%} non-2xx in the allowed scenario (503: Redis missed its deadline)")

    if pairs:
        pairs_table(rows, pairs)


if __name__ == "__main__":
    main()
