"""The Python operators the native core replaced, kept as reference oracles for property tests."""
