"""Run the `distil` command in-process, as a user would from the shell."""

import sys

from distil import cli


def run_cli(args, capsys):
    """Run the CLI with `args`; return (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["distil", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
