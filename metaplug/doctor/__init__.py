"""`metaplug doctor`: cross-check, on this node, what metaplug recorded (its journals) against what exists.

- state.py: the stateDir itself: journals, corrupt ones (still in place or set aside), temp files, lock files without
  a journal, permissions;
- reservations.py: host-local / mp-host-local reservations, in the data dirs the recorded delegate configs name, that
  no journal accounts for;
- devices.py: recorded interfaces missing or different in their namespace (what CHECK would say), and host-side veths
  on the bridges the recorded configs name that no journal accounts for;
- command.py: the command line, the report, and `--fix`, which repairs only what is provably orphaned, each repair
  re-checked under the same locks the verbs take.
"""
