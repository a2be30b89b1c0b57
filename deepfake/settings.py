"""The one base of every settings class (gateway, preprocessor service, CLI pipeline, tests), and the
repository's own paths.

WHY one base: each deployable reads environment variables with the ``DEEPFAKE_`` prefix, and the same
variable must mean the same thing in all of them. Every settings class derives from
:class:`DeepfakeSettings` (one prefix, one policy for unknown variables), and a variable read by more
than one deployable is declared once, in a class or mixin they share, so it has one name, one default
and one description (tests/test_settings.py checks it, and that README's settings table lists every
field). Nothing outside the settings modules reads a ``DEEPFAKE_`` variable from ``os.environ``.

Paths default relative to the repository (found from this file), never the working directory, so the
commands work from anywhere.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

# The development machine's layout: the data folder beside the repository.
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
ENV_PREFIX = "DEEPFAKE_"
# Longest accepted video in seconds (10 minutes): the analysis samples a fixed number of frames, so a
# longer video mostly costs decode/seek time and upload storage on the public service.
DEFAULT_MAX_DURATION_S = 600.0


class DeepfakeSettings(BaseSettings):
    """Environment variables ``DEEPFAKE_<FIELD>``; variables this class does not know are ignored (one
    environment serves several deployables, each reading its own)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")


class DataSettings(DeepfakeSettings):
    """Where the development and evaluation data live: tests, training, evaluation and the benchmarks."""

    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Development/evaluation data (DFDC crops, dev videos, MANIFEST.tsv, weights).",
    )


class ServiceTokenSettings(DeepfakeSettings):
    """The token between the gateway and the preprocessor: one variable both read (the gateway sends it,
    the preprocessor requires it)."""

    service_token: SecretStr = Field(
        SecretStr(""),
        description="Shared token of the gateway and the preprocessor (Authorization: Bearer): the gateway "
        "sends it, the preprocessor requires it; empty: the preprocessor answers loopback callers only.",
    )

    def token(self) -> str | None:
        return self.service_token.get_secret_value() or None


class MaxDurationSettings(DeepfakeSettings):
    """The duration limit every deployable applies, with one default: the CLI used to accept videos up to
    3600 s while both services stopped at 600 s, so the same file passed one and failed the other."""

    max_duration_s: float = Field(
        DEFAULT_MAX_DURATION_S,
        gt=0,
        description="Longest accepted video in seconds (the CLI, the preprocessor, the gateway's jobs; raise "
        "it per deployable); measured from the packets when the header states none.",
    )


def data_dir() -> Path:
    """DEEPFAKE_DATA_DIR, else ../shared/data beside the repository."""
    return DataSettings().data_dir
