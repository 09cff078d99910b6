"""A small, typed "Python libcni": the CNI specification and the delegate runtime, independent of metaplug.

Modules (import the one you need; this package imports nothing eagerly, to keep start-up lean):
  errors   CniError and the spec's error codes (cni.md section 6)
  version  supported versions, parsing and comparison (duties 8, 9, 15, 16)
  env      CNI_* environment, CNI_ARGS and stdin parsing (duties 1-9)
  types    pydantic models of configs, results of every version, errors (duties 16, 17, 27-29)
  documents  type names for the free-form JSON documents (NetConf, Result, JsonObject)
  convert  result conversion between versions, on plain dicts (duty 30)
  invoke   find and execute a delegate binary (duties 7, 18, 24-26)
  runtime  RuntimeConf: what the runtime knows about one attachment (container, netns, ifname, args)
  cache    libcni-compatible result cache (duty 35)
  chain    run a network configuration list: ADD/DEL/CHECK/STATUS/GC (duties 16-22)
  jsonload JSON from outside with a nesting bound (duty 8)
  ns       network namespace paths: opened non-blocking, checked, entered in a thread (duties 2, 11)
  files    non-blocking reads of regular files; private writes whatever the umask; trust checks

Nothing here may import from the rest of metaplug.
"""
