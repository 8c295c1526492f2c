"""freshrec's stream operators: the typed Python face of the native core (``operators._native``).

The per-event path of the dataflow lives in a Rust crate (``operators/Cargo.toml``, one module
per concept under ``operators/src/``) built by maturin; ``operators/_native.pyi`` types it.
Operators that are not on the per-event path (serving's ranking, the offline harness's
reference models) are still Python modules of this package.
"""

from operators._native import *  # noqa: F403
