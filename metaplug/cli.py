"""The operator's command line (when CNI_COMMAND is not set): `metaplug demo`, `daemon`, `state`, `explain`,
`doctor`, `attach`, `detach`, `set-bandwidth`, `set-firewall`, `set-default-route`, `install`, `uninstall`, `version`
(also `--version`).

`metaplug` with neither arguments nor CNI_COMMAND prints the help on stdout and, for cni.md duty 1, the one-line
"about" text with the supported CNI versions on stderr, and exits 0: what a runtime or a person probing the binary
expects from a CNI plugin, and what a person typing `metaplug` expects from a command.
"""

from __future__ import annotations

import argparse
import sys


def version_line() -> str:
    from metaplug import __version__
    from metaplug.cni.version import SUPPORTED_VERSIONS

    return f"metaplug {__version__}; CNI versions {', '.join(SUPPORTED_VERSIONS)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaplug",
        description="A Multus-style CNI meta-plugin. Run by a container runtime with CNI_COMMAND set; "
                    "without it, these subcommands help operators.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attach three networks to a fresh network namespace and show the result (root)")
    demo.add_argument("--keep", action="store_true", help="keep the namespaces and files (prints how to remove them)")
    demo.add_argument("--reference", action="store_true",
                      help="use the reference plugins (/usr/lib/cni, /opt/cni/bin) instead of the bundled mp-* ones")
    demo.add_argument("--show-calls", action="store_true",
                      help="print the exact environment and stdin of every CNI call, as commands to replay by hand")
    daemon = sub.add_parser("daemon", help="serve CNI calls from metaplug-shim on a unix socket (daemon mode)")
    daemon.add_argument("--config", required=True, metavar="FILE",
                        help="JSON: metaplug's conflist keys (the defaults of every call) plus socketPath, spoolDir, "
                             "metricsAddress, maxConcurrentCalls")
    sub.add_parser("version", help="print metaplug's version and the CNI versions it supports")
    from metaplug import explain, hotplug_cli, inspect_state, install
    from metaplug.doctor import command as doctor

    install.add_arguments(sub)
    inspect_state.add_arguments(sub)
    explain.add_arguments(sub)
    doctor.add_arguments(sub)
    hotplug_cli.add_arguments(sub)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:
        from metaplug.cni.skel import about_line
        from metaplug.cni.version import SUPPORTED_VERSIONS

        print(about_line("metaplug", SUPPORTED_VERSIONS), file=sys.stderr)  # cni.md 1
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command == "version":
        print(version_line())
        return 0
    if args.command == "demo":
        from metaplug.demo import run_demo

        return run_demo(keep=args.keep, reference=args.reference, show_calls=args.show_calls)
    if args.command == "daemon":
        from metaplug.daemon.server import run_cli

        return run_cli(args.config)
    handler = getattr(args, "handler", None)
    if handler is None:
        print(f"unknown command {args.command}", file=sys.stderr)
        return 2
    return int(handler(args))
