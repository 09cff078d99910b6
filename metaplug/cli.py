"""The operator's command line (when CNI_COMMAND is not set): `metaplug demo`, `daemon`, `state`, `install`,
`uninstall`, `version`."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaplug",
        description="A Multus-style CNI meta-plugin. Run by a container runtime with CNI_COMMAND set; "
                    "without it, these subcommands help operators.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attach three networks to a fresh network namespace and show the result (root)")
    demo.add_argument("--keep", action="store_true", help="keep the namespaces and files (prints how to remove them)")
    demo.add_argument("--reference", action="store_true",
                      help="use the reference plugins (/usr/lib/cni, /opt/cni/bin) instead of the bundled mp-* ones")
    daemon = sub.add_parser("daemon", help="serve CNI calls from metaplug-shim on a unix socket (daemon mode)")
    daemon.add_argument("--config", required=True, metavar="FILE",
                        help="JSON: metaplug's conflist keys (the defaults of every call) plus socketPath, spoolDir, "
                             "metricsAddress, maxConcurrentCalls")
    sub.add_parser("version", help="print metaplug's version and the CNI versions it supports")
    from metaplug import inspect_state, install

    install.add_arguments(sub)
    inspect_state.add_arguments(sub)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        from metaplug import __version__
        from metaplug.cni.version import SUPPORTED_VERSIONS

        print(f"metaplug {__version__}; CNI versions {', '.join(SUPPORTED_VERSIONS)}")
        return 0
    if args.command == "demo":
        from metaplug.demo import run_demo

        return run_demo(keep=args.keep, reference=args.reference)
    if args.command == "daemon":
        from metaplug.daemon.server import run_cli

        return run_cli(args.config)
    handler = getattr(args, "handler", None)
    if handler is None:
        print(f"unknown command {args.command}", file=sys.stderr)
        return 2
    return int(handler(args))
