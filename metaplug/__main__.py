"""Entry point. With CNI_COMMAND set, metaplug is a CNI plugin; otherwise it is the operator's command line (cni.md
duty 1's "about" line is then printed by the CLI when it runs without arguments, see cli.py).

Kept tiny: this module is imported on every CNI call.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if os.environ.get("CNI_COMMAND"):
        _plugin_main()
    from metaplug.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


def _plugin_main() -> None:
    import gc

    # A CNI call lives for milliseconds and makes few reference cycles: the collector's passes during the imports cost
    # ~1 ms and would free nothing worth having before the process ends (issue 10.7).
    gc.disable()
    from metaplug.cni import skel
    from metaplug.plugin import HANDLERS

    skel.main(HANDLERS, name="metaplug")


if __name__ == "__main__":
    main()
