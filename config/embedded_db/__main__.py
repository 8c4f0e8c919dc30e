"""``python -m config.embedded_db PGDATA [--fast] [--export-url] -- COMMAND...``

Runs COMMAND while holding the embedded cluster in PGDATA (initialised on first use), then
stops the server unless another process still uses it. bin/demo and bin/pytest call this.
"""

import argparse
import sys
from pathlib import Path

from . import cluster

parser = argparse.ArgumentParser(prog="python -m config.embedded_db")
parser.add_argument("pgdata", type=Path, help="the cluster's data directory, e.g. var/postgres")
parser.add_argument("--fast", action="store_true", help="no fsync: for a throwaway test cluster")
parser.add_argument("--export-url", action="store_true", help="set DATABASE_URL for COMMAND")
at = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
args, command = parser.parse_args(sys.argv[1:at]), sys.argv[at + 1 :]
if not command:
    parser.error("give the command to run after --")
sys.exit(cluster.run(args.pgdata, command, fast=args.fast, export_url=args.export_url))
