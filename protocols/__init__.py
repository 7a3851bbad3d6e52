"""Shipped targeting protocols (TOML), installed as ``tmstarget.protocols``."""
