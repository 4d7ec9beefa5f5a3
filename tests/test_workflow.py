"""The publishing workflow (.github/workflows/book.yml) does what the README says."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job):
    return [step.get("run", "") for step in job["steps"]]


def _uses(job):
    return [step.get("uses", "").split("@")[0] for step in job["steps"]]


def test_triggered_by_a_push_to_main(workflow):
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1)
    trigger = workflow.get("on", workflow.get(True))
    assert trigger["push"]["branches"] == ["main"]


def test_build_runs_the_ci_steps_on_python_311(workflow):
    build = workflow["jobs"]["build"]
    setup = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert str(setup["with"]["python-version"]) == "3.11"
    runs = _runs(build)
    order = [next(i for i, run in enumerate(runs) if run.startswith(f"make {target}")) for target in ("test", "book", "check-book")]
    assert order == sorted(order), "make test, make book, make check-book, in this order"
    assert any("chromium-driver" in run for run in runs)


def test_the_built_html_is_uploaded_and_deployed(workflow):
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert "actions/deploy-pages" in _uses(deploy)
    assert deploy["environment"]["name"] == "github-pages"


def test_permissions_allow_a_pages_deployment_and_nothing_more(workflow):
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def _commands(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_ci_script_and_makefile_agree_with_the_workflow():
    ci = _commands((ROOT / ".ci" / "run").read_text())
    makefile = (ROOT / "Makefile").read_text()
    order = [next(i for i, line in enumerate(ci) if line.startswith(f"make {target}")) for target in ("test", "book", "check-book")]
    assert order == sorted(order)
    assert "check-book:" in makefile and "--ignore=tests/browser" in makefile


def test_ci_and_the_workflow_execute_every_chapter_once(workflow):
    """nbmake keeps its outputs and the book renders them: both steps say EXECUTED=1, in both places."""
    runs = _runs(workflow["jobs"]["build"])
    ci = _commands((ROOT / ".ci" / "run").read_text())
    for commands in (runs, ci):
        for target in ("test", "book"):
            line = next(c for c in commands if c.startswith(f"make {target} ") or c == f"make {target}")
            assert "EXECUTED=1" in line.split(), line
    makefile = (ROOT / "Makefile").read_text()
    assert "$(if $(EXECUTED),--overwrite)" in makefile
    assert 'execute_notebooks: "off"' in makefile and "--config $(EXECUTED_CONFIG)" in makefile
