"""
``warden.ops`` in a source checkout: the ops tools live in the top-level ``ops/``.

An installed Warden has no use for this file: ``setup.cfg`` installs ``ops/`` as
``warden.ops`` (``package_dir``) and ships ``ops/__init__.py`` in its place. Run
from a checkout (``PYTHONPATH=$PWD``, as the tests and ``./run-warden`` do), this
package's ``__path__`` is that same ``ops/`` directory, so ``warden.ops.loadtest``
and ``warden.ops.drtest`` import from the one copy of their code (ADR 0014).
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parent.parent.parent / "ops")]
