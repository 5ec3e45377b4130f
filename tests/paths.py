"""Where the tests' own data lives and how they run Beam: absolute, so no test depends on the
directory pytest is started from."""

from pathlib import Path

DATA = Path(__file__).parent / "data"
REFERENCE_EXAMPLES = DATA / "reference_examples"   # the worked examples of docs/tariffs.md
REFERENCE_MIN = DATA / "reference_min"             # a small, complete operator (see its README.md)

# The DirectRunner in this process, one worker: the fastest for small inputs.
DIRECT = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
# Two worker processes: what a user gets with --direct_num_workers=2.
DIRECT_2 = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
