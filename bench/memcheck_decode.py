"""The C chunk decoder under valgrind's memcheck: mutated, random and hostile bodies.

    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full \
        --show-leak-kinds=definite .venv-3.11/bin/python bench/memcheck_decode.py 3 1500
    ... bench/memcheck_decode.py 3 300 pure      # the same bodies, pure decoder only

Bodies: the corpus and hostile bodies of ``tests/export/test_decode_c.py``, then ``N``
mutated corpus bodies (flip, set, insert, delete, cut) and ``N`` random ones, from seed
``SEED``. Each goes through every mode of ``_speedups.decode_body`` and the parity check
of the test (so both decoders must agree on it here too).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "export"))
import test_decode_c as t

from tidescope.export._tsformat import FormatError


def main() -> None:
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    pure = len(sys.argv) > 3 and sys.argv[3] == "pure"
    bodies = [*t.CORPUS, *t.HOSTILE]
    for _ in range(n):
        ops = [
            (rng.choice(["flip", "set", "insert", "delete"]), rng.randrange(10**6),
             rng.randrange(256))
            for _ in range(rng.randint(1, 4))
        ]  # fmt: skip
        b = t.mutate(rng.choice(t.CORPUS), ops)
        if rng.random() < 0.3:
            b = b[: rng.randint(1, len(b))]
        bodies.append(b)
        bodies.append(bytes((rng.choice([1, 2, 3]),)) + rng.randbytes(rng.randint(0, 100)))
    errors = 0
    for b in bodies:
        if pure:
            try:
                t.decode_body(b, node=t.NODE, pid=t.PID)
            except FormatError:
                errors += 1
            continue
        for mode in range(4):
            try:
                t.c_decode(b, t.NODE, t.PID, mode)
            except FormatError:
                errors += 1
        t.both(b)
    print(f"{len(bodies)} bodies, {errors} format errors")


if __name__ == "__main__":
    main()
