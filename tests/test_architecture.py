"""The import rules of pyproject.toml's ``[tool.importlinter]``: apps depend downwards (reports,
credits, accounts, then core), no app imports ``config`` or another app's HTTP modules, and no
package has an import cycle."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_contracts():
    lint_imports = Path(sys.executable).with_name("lint-imports")

    result = subprocess.run(  # noqa: S603 - the installed lint-imports on our own code
        [lint_imports, "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
