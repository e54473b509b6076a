"""`python -m etam_mobile.bench --worker JOB RESULT`: one backend's run in its own process."""
import sys

from .running import _worker_main

if len(sys.argv) == 4 and sys.argv[1] == "--worker":
    sys.exit(_worker_main(sys.argv[2:]))
print("usage: etam-mobile bench ... (this module's __main__ is the per-backend worker)", file=sys.stderr)
sys.exit(2)
