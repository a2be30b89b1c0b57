"""The settings: one base, each variable declared once, README's table equal to the classes, no raw
environment reads of DEEPFAKE_ variables outside the settings modules."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from deepfake.settings import REPO_ROOT, DeepfakeSettings
from gateway.settings import GatewaySettings
from preprocessor.service_settings import ServiceSettings
from preprocessor.settings import PipelineSettings
from tests.settings import SuiteSettings

spec = importlib.util.spec_from_file_location("settings_table", REPO_ROOT / "scripts" / "settings_table.py")
assert spec is not None and spec.loader is not None
settings_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(settings_table)

# Declared once per service on purpose: a different folder each (the preprocessor's sweep would delete the
# gateway's queued uploads).
PER_SERVICE = {"upload_dir"}
# The modules allowed to read DEEPFAKE_ variables: the settings classes themselves (through
# pydantic-settings, which reads os.environ for them).
SETTINGS_MODULES = {
    "deepfake/settings.py",
    "gateway/settings.py",
    "preprocessor/settings.py",
    "preprocessor/service_settings.py",
    "preprocessor/detectors/settings.py",
    "tests/settings.py",
}


SOURCE_FOLDERS = (
    "deepfake",
    "cli",
    "gateway",
    "preprocessor",
    "inference",
    "training",
    "deploy",
    "scripts",
    "tests",
)


def source_files() -> list[Path]:
    return sorted(path for folder in SOURCE_FOLDERS for path in (REPO_ROOT / folder).rglob("*.py"))


def readme_table() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(settings_table.BEGIN)
    return readme[start : readme.index(settings_table.END) + len(settings_table.END)]


def test_readme_lists_every_setting_with_the_classes_defaults_and_no_stale_rows():
    assert readme_table() == settings_table.render(), "README's settings table is stale: make settings-table"


def test_every_field_of_every_deployable_has_a_row():
    """The table is built from the classes; this checks it reaches every field (a stale generator would
    otherwise pass the comparison above)."""
    variables = {line.split("`")[1] for line in readme_table().splitlines() if line.startswith("| `")}
    for cls in (GatewaySettings, ServiceSettings, PipelineSettings, SuiteSettings):
        missing = {f"DEEPFAKE_{name.upper()}" for name in cls.model_fields} - variables
        assert not missing, f"{cls.__name__}: {sorted(missing)} not in README"


def test_a_variable_read_by_several_deployables_is_declared_once():
    declarations: dict[str, set[type]] = {}
    for cls in settings_table.readers().values():
        assert issubclass(cls, DeepfakeSettings), f"{cls.__name__} is not built on deepfake.settings"
        for name in cls.model_fields:
            declarations.setdefault(name, set()).add(settings_table.declaring_class(cls, name))
    twice = {
        name: sorted(c.__name__ for c in classes)
        for name, classes in declarations.items()
        if len(classes) > 1
    }
    assert set(twice) == PER_SERVICE, twice


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DEEPFAKE_"):
            monkeypatch.delenv(name)


def test_the_service_and_the_cli_read_the_same_pipeline_settings_with_the_same_defaults(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("DEEPFAKE_UPLOAD_DIR", "/tmp/spool")  # the one name that is a folder per service
    cli, service, gateway = PipelineSettings(), ServiceSettings(), GatewaySettings()
    assert {name: getattr(service, name) for name in PipelineSettings.model_fields} == cli.model_dump()
    assert cli.max_duration_s == service.max_duration_s == gateway.max_duration_s == 600.0
    for name, value in {
        "DEEPFAKE_THREADS": "3",
        "DEEPFAKE_MAX_BYTES": "1000",
        "DEEPFAKE_FRAMES": "8",
    }.items():
        monkeypatch.setenv(name, value)
    cli, service = PipelineSettings(), ServiceSettings()
    assert (cli.threads, cli.max_bytes, cli.frames) == (service.threads, service.max_bytes, service.frames)
    assert (service.threads, service.max_bytes, service.frames) == (3, 1000, 8)


def _reads_deepfake_env(tree: ast.AST) -> list[int]:
    """Lines of os.environ[...] / os.environ.get(...) / os.getenv(...) with a literal DEEPFAKE_ name."""
    lines = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("os.environ.get", "os.getenv")
            and node.args
        ):
            key = node.args[0]
        if isinstance(key, ast.Constant) and str(key.value).startswith("DEEPFAKE_"):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_raw_read():
    assert _reads_deepfake_env(ast.parse('import os\nx = os.environ.get("DEEPFAKE_FRAMES", "8")\n')) == [2]
    assert _reads_deepfake_env(
        ast.parse('import os\nx = os.environ["DEEPFAKE_X"]\ny = os.getenv("HOME")\n')
    ) == [2]


def test_no_raw_environment_reads_of_deepfake_variables_outside_the_settings_modules():
    offenders = []
    for path in source_files():
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative in SETTINGS_MODULES:
            continue
        for line in _reads_deepfake_env(ast.parse(path.read_text(), filename=relative)):
            offenders.append(f"{relative}:{line}")
    assert not offenders, f"read these through a settings class: {offenders}"


def test_repo_root_is_defined_once():
    defined = [path for path in source_files() if "\nREPO_ROOT = " in path.read_text()]
    assert defined == [REPO_ROOT / "deepfake" / "settings.py"]
