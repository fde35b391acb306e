#!/usr/bin/env python3
"""The table bench/envoy.sh prints: per scenario, backend and protocol, the median over
rounds (min-max in brackets) of calls/s, p50 and p99 latency, the share over the limit and
the server's CPU time per call; then per backend the ratio gRPC/HTTP of calls/s and of CPU
per call, each taken within one round.

    bench/envoy_summary.py RESULTS

Each line of RESULTS: round scenario backend-protocol calls/s p50_ms p99_ms ok over_limit
errors calls server_cpu_us_per_call client_cpu_us_per_call (rls_load's last line).
"""
import statistics
import sys


def spread(values, digits=0):
    """The median, and the min-max when there is more than one value."""
    values = list(values)
    if not values:
        return "-"
    med = statistics.median(values)
    text = f"{med:,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def main():
    rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
    scenarios = list(dict.fromkeys(r[1] for r in rows))
    setups = list(dict.fromkeys(r[2] for r in rows))
    backends = list(dict.fromkeys(s.split("-")[0] for s in setups))
    by = {(r[0], r[1], r[2]): r for r in rows}

    print()
    print("| scenario | backend | protocol | calls/s | p50 ms | p99 ms | over limit | errors | server CPU µs/call |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        for setup in setups:
            mine = [r for r in rows if r[1] == scenario and r[2] == setup]
            if not mine:
                continue
            backend, protocol = setup.split("-")
            over = statistics.median(int(r[7]) / max(1, int(r[9])) for r in mine)
            errors = sum(int(r[8]) for r in mine)
            cpu = [float(r[10]) for r in mine if r[10] != "-"]
            print(
                f"| {scenario} | {backend} | {protocol} | {spread(float(r[3]) for r in mine)} "
                f"| {spread((float(r[4]) for r in mine), 3)} | {spread((float(r[5]) for r in mine), 3)} "
                f"| {over:.1%} | {errors} | {spread(cpu, 1)} |"
            )

    print()
    print("| scenario | backend | gRPC/HTTP calls/s | gRPC/HTTP server CPU per call |")
    print("| --- | --- | --- | --- |")
    for scenario in scenarios:
        for backend in backends:
            rates, cpus = [], []
            for (rnd, scen, setup), grpc in by.items():
                if scen != scenario or setup != f"{backend}-grpc":
                    continue
                http = by.get((rnd, scen, f"{backend}-http"))
                if http is None:
                    continue
                rates.append(float(grpc[3]) / float(http[3]))
                if grpc[10] != "-" and http[10] != "-":
                    cpus.append(float(grpc[10]) / float(http[10]))
            if rates:
                print(f"| {scenario} | {backend} | {spread(rates, 3)} | {spread(cpus, 3)} |")


if __name__ == "__main__":
    main()
