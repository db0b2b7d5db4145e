"""`python -m hack.testenv ensure|show [--json] [--bench]`: build what is missing, say where
things are (`--bench`: the benchmarks' own tools too)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from hack.testenv.tools import COMPONENTS, GO_TOOLS, Tools, ToolsMissingError, ensure, locate


def _report(tools: Tools, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "pins": {
                    "kubernetes": tools.pins.kubernetes,
                    "etcd": tools.pins.etcd,
                    "kwok": tools.pins.kwok,
                },
                "cache_dir": str(tools.cache_dir),
                "paths": {name: str(path) for name, path in tools.paths.items()},
                "sources": tools.sources,
                "missing": tools.missing,
            },
            indent=2,
        )
    pins = tools.pins
    lines = [
        f"kubernetes {pins.kubernetes}, etcd {pins.etcd}, kwok {pins.kwok} (pins {pins.digest})",
        f"cache: {tools.cache_dir}",
    ]
    for name in COMPONENTS:
        if name in tools.paths:
            lines.append(f"  {name:<24} {tools.paths[name]}  ({tools.sources[name]})")
        else:
            lines.append(f"  {name:<24} MISSING: {tools.missing.get(name, '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.testenv", description=__doc__)
    parser.add_argument(
        "command",
        choices=["ensure", "show"],
        help="ensure: build/install what is missing; show: only report",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.add_argument(
        "--bench",
        action="store_true",
        help="also the tools only the benchmarks run (the descheduler)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        tools = ensure(bench=args.bench) if args.command == "ensure" else locate()
    except (ToolsMissingError, OSError) as error:
        print(f"testenv: {error}", file=sys.stderr)
        return 1
    print(_report(tools, args.json))
    if args.command == "ensure":
        print(f"testenv: ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    optional = set() if args.bench else {tool.name for tool in GO_TOOLS if tool.bench_only}
    return 1 if set(tools.missing) - optional else 0


if __name__ == "__main__":
    sys.exit(main())
