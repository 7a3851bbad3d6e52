"""Command-line front ends: they parse arguments, call the library and print; no computation lives here."""
