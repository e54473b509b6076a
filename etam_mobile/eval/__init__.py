"""`etam-mobile eval`: J&F of every backend on DAVIS / SA-V-layout datasets, locally or on Ray.

datasets.py reads and validates the layouts, protocols.py turns first masks into prompts,
tasks.py tracks one (video, backend) in a worker, metrics.py wraps vos-benchmark,
scheduler.py fans tasks out (process pool or Ray), report.py writes summary/Markdown/plot,
run.py ties them together and cli.py is the sub-command.
"""


class EvalError(ValueError):
    """Bad `etam-mobile eval` input; the message names the problem and the fix."""
