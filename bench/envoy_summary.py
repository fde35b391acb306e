#!/usr/bin/env python3
"""The table bench/envoy.sh prints: per scenario, backend and protocol, the median over
rounds (min-max in brackets) of calls/s, p50 and p99 latency, the share over the limit and
the server's CPU time per call; then per backend the ratio gRPC/HTTP of calls/s and of CPU
per call, and the ratio of its gRPC setup to `bare-grpc` (tonic with a handler that
decides nothing), each taken within one round.

    bench/envoy_summary.py RESULTS

Each line of RESULTS: round scenario backend-protocol calls/s p50_ms p99_ms ok over_limit
errors calls server_cpu_us_per_call client_cpu_us_per_call (rls_load's last line).
"""
import statistics
import sys

# The backend of the baseline setup `bare-grpc`: tonic with a handler that decides nothing.
BARE = "bare"


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

    def ratios(scenario, setup, baseline):
        """calls/s and server CPU per call of setup over baseline, each within one round."""
        rates, cpus = [], []
        for (rnd, scen, name), mine in by.items():
            if scen != scenario or name != setup:
                continue
            base = by.get((rnd, scen, baseline))
            if base is None:
                continue
            rates.append(float(mine[3]) / float(base[3]))
            if mine[10] != "-" and base[10] != "-":
                cpus.append(float(mine[10]) / float(base[10]))
        return rates, cpus

    print()
    print(
        "| scenario | backend | gRPC/HTTP calls/s | gRPC/HTTP server CPU per call "
        "| gRPC/bare-grpc calls/s | gRPC/bare-grpc server CPU per call |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        for backend in backends:
            if backend == BARE:
                continue
            rates, cpus = ratios(scenario, f"{backend}-grpc", f"{backend}-http")
            bare_rates, bare_cpus = ratios(scenario, f"{backend}-grpc", f"{BARE}-grpc")
            if rates or bare_rates:
                print(
                    f"| {scenario} | {backend} | {spread(rates, 3)} | {spread(cpus, 3)} "
                    f"| {spread(bare_rates, 3)} | {spread(bare_cpus, 3)} |"
                )


if __name__ == "__main__":
    main()
