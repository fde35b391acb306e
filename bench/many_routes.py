#!/usr/bin/env python3
"""Writes a valid rules file with N routes to stdout, for timing validation and reloads.

    python3 bench/many_routes.py 20000 > /tmp/routes-20k.json
    time "$(scripts/target-dir)/release/tollgate" check-rules /tmp/routes-20k.json > /dev/null

The routes mix the forms a large file has: static paths, parameters, catch-alls, named
methods, several bands, the window algorithms and unlimited rules (about 130 bytes each).
"""
import json
import sys


def route(i):
    kind = i % 4
    if kind == 0:
        return {"path": f"/api/v1/service-{i}/items/{{id}}", "methods": ["GET", "PUT"],
                "limits": [{"capacity": 10, "refill_rate": 1}, "1000/hour"]}
    if kind == 1:
        return {"path": f"/api/v1/service-{i}/search", "limit": "100/minute",
                "algorithm": "sliding_window", "cost": 2}
    if kind == 2:
        return {"path": f"/api/v1/service-{i}/upload", "methods": ["POST"],
                "limit": "30/minute", "algorithm": "fixed_window"}
    return {"path": f"/static/bundle-{i}/{{*rest}}", "unlimited": True}


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rules = {
        "default": {"capacity": 20, "refill_rate": 5},
        "routes": [route(i) for i in range(count)],
    }
    json.dump(rules, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
