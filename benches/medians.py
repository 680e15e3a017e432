#!/usr/bin/env python3
"""Prints the medians of the last criterion run of the connpool benches as markdown tables.

Usage: python3 benches/medians.py [CRITERION_DIR]   (default: target-bench/criterion)
"""

import json
import os
import sys


def load(root):
    """{(group, function, parameter): (median ns, throughput elements or None)}"""
    results = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        throughput = (bench.get("throughput") or {}).get("Elements")
        key = (bench["group_id"], bench["function_id"], bench["value_str"])
        results[key] = (median, throughput)
    return results


def ns(value):
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def hot_path(results):
    columns = [(t, c) for t in (1, 2) for c in ("off", "on")]
    print("| pool | destinations | " + " | ".join(f"{t} thread{'s' * (t > 1)}, check {c}" for t, c in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for pool in ("core", "tokio", "smol"):
        for dests in ("1", "16", "1000", "100000"):
            cells = []
            for threads, check in columns:
                found = results.get((f"hot_path_{threads}t_check_{check}", pool, dests))
                cells.append(ns(found[0]) if found else "–")
            print(f"| {pool} | {dests} | " + " | ".join(cells) + " |")
    print()
    print("| 16 threads (oversubscribed) | ns, aggregate |")
    print("|---|---:|")
    for (group, function, _), (median, _) in sorted(results.items()):
        if group == "hot_path_oversubscribed":
            print(f"| {function} | {ns(median)} |")
    print()
    print("| reference | ns |")
    print("|---|---:|")
    for (group, function, _), (median, _) in sorted(results.items()):
        if group == "hot_path_reference":
            print(f"| {function} | {ns(median)} |")


PEERS = [
    "connpool_check_off",
    "connpool_check_on",
    "connpool_tokio",
    "deadpool_locked_map",
    "deadpool_fixed_map",
    "bb8_locked_map",
    "bb8_fixed_map",
    "hyper_legacy",
    "naive_mutex_map",
    "deadpool_fixed_map_foldhash",
    "bb8_fixed_map_foldhash",
    "naive_mutex_map_foldhash",
]
# The deadpool/bb8 maps, whichever hasher: the "best of" is taken over all of them.
MAPS = PEERS[3:7] + PEERS[9:11]


def peers(results):
    configs = [(t, d) for t in (1, 2) for d in (1, 16, 1000)]
    print("| | " + " | ".join(f"{t}t, {d} dest" for t, d in configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for peer in PEERS:
        cells = []
        for threads, dests in configs:
            found = results.get((f"peers_{threads}t_{dests}dest", peer, str(dests)))
            cells.append(ns(found[0]) if found else "–")
        print(f"| {peer} | " + " | ".join(cells) + " |")
    print()
    print("Best of the deadpool/bb8 maps over connpool (check on, check off, and Tokio's builder), same group:")
    print()
    print("| | " + " | ".join(f"{t}t, {d} dest" for t, d in configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for mine in ("connpool_check_on", "connpool_check_off", "connpool_tokio"):
        cells = []
        for threads, dests in configs:
            group = f"peers_{threads}t_{dests}dest"
            best = min(
                (results[(group, p, str(dests))][0] for p in MAPS if (group, p, str(dests)) in results),
                default=None,
            )
            found = results.get((group, mine, str(dests)))
            cells.append(f"{best / found[0]:.2f}x" if best and found else "–")
        print(f"| {mine} | " + " | ".join(cells) + " |")


LIMITS = ["no_limits", "max_open_per_host", "open_and_lifetime", "all_limits"]


def limits(results):
    dests = sorted({int(v) for (g, _, v) in results if g == "limits_hot_path"})
    print("| limits | " + " | ".join(f"{d} dest" for d in dests) + " | " + " | ".join(f"vs no_limits, {d} dest" for d in dests) + " |")
    print("|---|" + "---:|" * (2 * len(dests)))
    for setting in LIMITS:
        cells, ratios = [], []
        for d in dests:
            found = results.get(("limits_hot_path", setting, str(d)))
            base = results.get(("limits_hot_path", "no_limits", str(d)))
            cells.append(ns(found[0]) if found else "–")
            ratios.append(f"{found[0] / base[0] - 1:+.1%}" if found and base else "–")
        print(f"| {setting} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print()
    contended = {f: m for (g, f, _), (m, _) in results.items() if g == "limits_contended"}
    mine = contended.get("connpool")
    print("| limits_contended | median ns per get + drop (aggregate) | over connpool |")
    print("|---|---:|---:|")
    for name in ("connpool", "deadpool_fixed_map", "bb8_fixed_map"):
        if name in contended:
            ratio = f"{contended[name] / mine:.2f}x" if mine else "–"
            print(f"| {name} | {ns(contended[name])} | {ratio} |")


HANDOFF = [
    "no_pool",
    "connpool_check_off",
    "connpool_check_on",
    "deadpool_fixed_map_foldhash",
    "bb8_fixed_map_foldhash",
    "naive_mutex_map_foldhash",
]


def handoff(results):
    dests = sorted({int(v) for (g, _, v) in results if g.startswith("handoff_2t_")})
    print("| pool | destinations | own thread | other thread | other - own | other thread, best map over it |")
    print("|---|---:|---:|---:|---:|---:|")
    for d in dests:
        group = f"handoff_2t_{d}dest"
        cell = lambda pool, side: results.get((group, f"{pool}/{side}_thread", str(d)))
        best = min(
            (cell(p, "other")[0] for p in HANDOFF[3:5] if cell(p, "other")),
            default=None,
        )
        for pool in HANDOFF:
            own, other = cell(pool, "own"), cell(pool, "other")
            if not (own and other):
                continue
            ratio = f"{best / other[0]:.2f}x" if best and pool.startswith("connpool") else "–"
            print(f"| {pool} | {d} | {ns(own[0])} | {ns(other[0])} | {other[0] - own[0]:+.1f} | {ratio} |")


POOLED_MODES = ("pooled", "pooled_readiness_first", "pooled_get_check_only", "pooled_check_off")
ECHO_MODES = POOLED_MODES + ("unpooled", "dedicated")


def echo(results):
    print("| runtime | mode | median µs per request (aggregate) | requests/s |")
    print("|---|---|---:|---:|")
    rates = {}
    for runtime in ("tokio", "smol"):
        rate = rates.setdefault(runtime, {})
        for mode in ECHO_MODES:
            found = results.get((f"echo_{runtime}", mode, None))
            if found:
                median = found[0]
                rate[mode] = 1e9 / median
                print(f"| {runtime} | {mode} | {median / 1000:.2f} | {1e9 / median:,.0f} |")
    print()
    print("| runtime | pooled / unpooled | vs dedicated: " + " | ".join(POOLED_MODES) + " |")
    print("|---|---:|" + "---:|" * len(POOLED_MODES))
    for runtime, rate in rates.items():
        if not all(mode in rate for mode in ("pooled", "unpooled", "dedicated")):
            continue
        versus = [
            f"{rate[mode] / rate['dedicated'] - 1:+.1%}" if mode in rate else "–"
            for mode in POOLED_MODES
        ]
        print(f"| {runtime} | {rate['pooled'] / rate['unpooled']:.2f}x | " + " | ".join(versus) + " |")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target-bench", "criterion")
    results = load(root)
    print("## hot_path (median ns per get + drop)\n")
    hot_path(results)
    print("\n## peers (median ns per get + drop)\n")
    peers(results)
    print("\n## handoff (median ns per get + drop, two threads, aggregate)\n")
    handoff(results)
    print("\n## limits (median ns per get + drop)\n")
    limits(results)
    print("\n## echo\n")
    echo(results)


if __name__ == "__main__":
    main()
