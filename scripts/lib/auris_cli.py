"""Run the auris binary from a script and read its JSON Lines output."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def auris(binary: Path, args: list[str]) -> list[dict]:
    """`binary args...` from the repository root; one dict per output line. Exits the script,
    with auris's stderr, when auris fails."""
    cmd = [str(binary), *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"auris failed ({p.returncode}): {' '.join(cmd)}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
