"""Daemon mode: `metaplug daemon` serves the same CNI core (`plugin.run`) behind a unix socket, for the static
`metaplug-shim` the runtime executes (DESIGN: "Two modes, one core")."""
