"""metaplug: a Multus-style CNI meta-plugin.

Kept empty on purpose: every CNI call starts a new process, so importing the package must cost nothing.
"""

__version__ = "0.1.0"
