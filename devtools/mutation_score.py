"""Print the score of the last mutation run (``make mutants``), by module, then every survivor.

Reads ``mutmut results --all true`` in the project folder (the run's ``mutants/``
must be there). The score counts a mutant as caught when a test failed
(``killed``) or hung past mutmut's limit (``timeout``); ``survived`` (every
test covering it passed) and ``no tests`` (no targeted test reaches the code)
are not caught. ``mutmut show NAME`` prints one mutant's diff.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

CAUGHT = ("killed", "timeout")
NOT_CAUGHT = ("survived", "no tests")


def read_results(mutmut: Path) -> dict[str, str]:
    """Each mutant's name and status, as mutmut reports them."""
    output = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    results = {}
    for line in output.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            results[name] = status
    return results


def module_of(mutant: str) -> str:
    """``heartbeat.limiter.tokens.xǁTokenVerifierǁverify__mutmut_3`` -> ``heartbeat.limiter.tokens``."""
    head = mutant.split("__mutmut_")[0]
    return head.rsplit(".", 1)[0]


def score(counts: Counter) -> str:
    caught = sum(counts[s] for s in CAUGHT)
    judged = caught + sum(counts[s] for s in NOT_CAUGHT)
    percent = 100 * caught / judged if judged else 0.0
    return f"{caught}/{judged} caught ({percent:.1f}%): " + ", ".join(
        f"{counts[s]} {s}" for s in (*CAUGHT, *NOT_CAUGHT)
    )


def main() -> int:
    """Print the scores and the survivors; exit 1 when there are no results to read."""
    results = read_results(Path(sys.executable).with_name("mutmut"))
    if not results:
        print("no mutation results: run `make mutants` first", file=sys.stderr)
        return 1
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in results.items():
        by_module[module_of(name)][status] += 1
    print("mutation score (killed or timed out, of all mutants):")
    for module in sorted(by_module):
        print(f"  {module}: {score(by_module[module])}")
    print(f"  all: {score(sum(by_module.values(), Counter()))}")
    for status in NOT_CAUGHT:
        names = sorted(n for n, s in results.items() if s == status)
        print(f"\n{status} ({len(names)}):")
        for name in names:
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
