"""``tmstarget view PLAN_DIR [--screenshot FILE.png] [--live WATCH_DIR] [--compare PLAN_DIR ...]``: the desktop viewer.

Registering the command imports no Qt or pyvista (:mod:`tmstarget.viewer.command` is light).
"""

from tmstarget.cli._common import add_common


def add_subcommand(subparsers):
    """Register the ``view`` subcommand; its handler is ``args.handler(args) -> int``."""
    from tmstarget.viewer.command import add_arguments, run

    parser = subparsers.add_parser(
        "view", help="open a plan in the 3D viewer (head, coil, target, map, slices, evidence)",
        description="Open a plan in the desktop viewer: the head with the coil at its pose and the target, the map "
        "on the brain, linked slices, the evidence panel; adjust the coil and save a new plan version; follow a "
        "running watch with --live.",
        epilog="example: tmstarget view plan-out --screenshot plan-out.png")
    add_arguments(parser)
    add_common(parser)
    parser.set_defaults(handler=run)
    return parser
