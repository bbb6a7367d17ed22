"""Build of the optional C accelerator, ``tidescope.capture._speedups`` (issue 3).

Everything else is declared in pyproject.toml. Without a C compiler the build skips the
extension with a warning and tidescope runs on its pure-Python core; with
``TIDESCOPE_REQUIRE_C=1`` (set by scripts/test, so CI always has it) a failed build is an
error instead.
"""

import os

from setuptools import Extension, setup

required = os.environ.get("TIDESCOPE_REQUIRE_C", "") == "1"

setup(
    ext_modules=[
        Extension(
            "tidescope.capture._speedups",
            [
                "src/tidescope/capture/_speedups.c",
                "src/tidescope/capture/_ring.c",
                "src/tidescope/capture/_context.c",
                "src/tidescope/capture/_report.c",
                "src/tidescope/capture/_vreport.c",
                "src/tidescope/capture/_snap.c",
                "src/tidescope/capture/_encode.c",
                "src/tidescope/capture/_values.c",
                "src/tidescope/capture/_crc32.c",
                "src/tidescope/capture/_decode.c",
                "src/tidescope/capture/_deep.c",
            ],
            depends=[
                f"src/tidescope/capture/{h}.h"
                for h in ("_slots", "_encode", "_state", "_context", "_snap", "_report", "_deep",
                          "_vreport")
            ],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=not required,
        )
    ]
)
