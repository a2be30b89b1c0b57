"""The test suite's own knobs, read like every other setting (deepfake.settings): DEEPFAKE_ variables,
declared once, listed in README's settings table."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from deepfake.settings import DataSettings


class SuiteSettings(DataSettings):
    pg_bin: Path = Field(
        Path("/usr/local/bin"),
        description="Folder of PostgreSQL's initdb, pg_ctl and postgres for the PostgreSQL job-store tests.",
    )
    screenshot_dir: Path | None = Field(
        None, description="Where the web-app test keeps its screenshots; none: a pytest temporary folder."
    )
    fuzz_examples: int = Field(1000, ge=1, description="Examples per property of the fuzz tests.")
    fuzz_random: bool = Field(
        False, description="Draw new fuzz examples each run; default: the same derandomised examples."
    )
    fuzz_api_examples: int = Field(
        10, ge=1, description="Schemathesis cases per API operation and phase (tests/test_schemathesis.py)."
    )
    fuzz_api_max_time_s: float | None = Field(
        None, gt=0, description="Schemathesis time budget in s (make fuzz-api); none: the examples bound it."
    )
