"""The command line. `sparseseg.cli.app` holds the thin commands and ``main``, the console script ``sparseseg``;
`sparseseg.cli.options` the options, declared once; `sparseseg.cli.output` what the commands print."""

from sparseseg.cli.app import main

__all__ = ["main"]
