"""A revision's checksum covers the project modules it imports (SPEC Part 2, "What runs is
what was hashed"): resolved statically, transitively, stdlib and installed packages left out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator.migrations.project_modules import ProjectModules
from orchestrator.migrations.revisions import (
    RevisionFile,
    checksum_file,
    combined_checksum,
    read_versions,
)

REV_A = (
    b'"""use a helper"""\nfrom app import helpers\n\n'
    b'revision = "aaaaaaaaaaaa"\ndown_revision = None\n'
)
REV_B = (
    b'"""no helper"""\nimport json\n\nimport sqlalchemy as sa\n\n'
    b'revision = "bbbbbbbbbbbb"\ndown_revision = "aaaaaaaaaaaa"\n'
)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text))


def read(project: Path, roots: list[Path] | None = None) -> dict[str, RevisionFile]:
    modules = ProjectModules(project, roots or [project])
    return {rf.revision: rf for rf in read_versions([project / "versions"], modules=modules)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "versions/aaaaaaaaaaaa_a.py": REV_A,
            "versions/bbbbbbbbbbbb_b.py": REV_B,
            "app/__init__.py": b"",
            "app/helpers.py": b"from .naming import slug\n",
            "app/naming.py": b"def slug(s):\n    return s.lower()\n",
        },
    )
    return tmp_path


def test_known_answer(project: Path) -> None:
    """Literal digests: the format is documented (revisions.combined_checksum) and pinned."""
    revs = read(project)
    # no project import: the file's own sha256, exactly as ledgers written before recorded it
    assert revs["bbbbbbbbbbbb"].checksum == (
        "0a4d33e5bf6caeb7a48b535c5cd6568650821c2e0729c4672c38e809f99ad6e0"
    )
    # sha256 of ["<own>",[["app/__init__.py","<d>"],["app/helpers.py","<d>"],
    #                     ["app/naming.py","<d>"]]]
    assert revs["aaaaaaaaaaaa"].checksum == (
        "151353c1bcdd8226ce5472b0aa524f6ad626d8b790adcfe06c321c364112ebea"
    )
    assert combined_checksum("0" * 64, {}) == "0" * 64
    assert combined_checksum("0" * 64, {"b.py": "2" * 64, "a.py": "1" * 64}) == (
        "9359621ab08a77e35bcea7c4e450d99248bd83791561b064b175ec4fe425476c"
    )
    # the static reader's cache gives the same answer on a second read (a new process)
    assert read(project)["aaaaaaaaaaaa"].checksum == revs["aaaaaaaaaaaa"].checksum
    # without module resolution, the file's own digest
    plain = {rf.revision: rf for rf in read_versions([project / "versions"])}
    assert plain["aaaaaaaaaaaa"].checksum == (
        "0eb0c60f7052d6e70177d0acd5c92a45b2fd887e1fbd5b809932259641591cba"
    )


def test_a_helper_edit_changes_only_the_revisions_that_import_it(project: Path) -> None:
    before = read(project)
    (project / "app" / "naming.py").write_text("def slug(s):\n    return s.upper()\n")
    after = read(project)
    assert after["aaaaaaaaaaaa"].checksum != before["aaaaaaaaaaaa"].checksum
    assert after["bbbbbbbbbbbb"].checksum == before["bbbbbbbbbbbb"].checksum
    (project / "app" / "unrelated.py").write_text("X = 1\n")
    assert read(project)["aaaaaaaaaaaa"].checksum == after["aaaaaaaaaaaa"].checksum
    # line endings alone are no edit, as for revision files
    naming = project / "app" / "naming.py"
    naming.write_bytes(naming.read_bytes().replace(b"\n", b"\r\n"))
    assert read(project)["aaaaaaaaaaaa"].checksum == after["aaaaaaaaaaaa"].checksum


LIBRARY = {
    "app/__init__.py": "",
    "app/helpers.py": "from .naming import slug\n",
    "app/naming.py": "def slug(s):\n    return s\n",
    "app/sub/__init__.py": "from . import deep\n",
    "app/sub/deep.py": "from ..naming import slug\n",
    "ns/tool.py": "import app.naming\n",  # a namespace package: no __init__.py
    "versions/lib/local_helper.py": "X = 1\n",  # a sub-directory: not a revision
    # an Alembic script directory has no __init__.py: installed alembic wins over it
    "alembic/op.py": "RAISE = 1\n",
    "cyc/__init__.py": "",
    "cyc/one.py": "from cyc import two\n",
    "cyc/two.py": "from cyc import one\n",
}


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ("import json\nimport sqlalchemy as sa\nfrom alembic import op\n", []),
        ("import app\n", ["app/__init__.py"]),
        ("import json, app.naming\n", ["app/__init__.py", "app/naming.py"]),
        ("import json, \\\n    app.naming\n", ["app/__init__.py", "app/naming.py"]),
        ("import app.helpers\n", ["app/__init__.py", "app/helpers.py", "app/naming.py"]),
        ("from app import helpers\n", ["app/__init__.py", "app/helpers.py", "app/naming.py"]),
        ("from app.helpers import slug\n", ["app/__init__.py", "app/helpers.py", "app/naming.py"]),
        (
            "def upgrade():\n    from app.sub import deep\n",
            ["app/__init__.py", "app/naming.py", "app/sub/__init__.py", "app/sub/deep.py"],
        ),
        ("from ns import tool\n", ["ns/tool.py", "app/__init__.py", "app/naming.py"]),
        ("from .lib import local_helper\n", ["versions/lib/local_helper.py"]),
        ("import cyc.one\n", ["cyc/__init__.py", "cyc/one.py", "cyc/two.py"]),
        ("from app import missing, naming\n", ["app/__init__.py", "app/naming.py"]),
        # dynamic imports cannot be followed statically (README, "What runs is what was hashed")
        ("import importlib\nimportlib.import_module('app.naming')\n", []),
    ],
)
def test_imports_resolved_statically(tmp_path: Path, statements: str, expected: list[str]) -> None:
    rev = f'{statements}\nrevision = "cccccccccccc"\ndown_revision = None\n'
    write(tmp_path, {**LIBRARY, "versions/cccccccccccc_c.py": rev})
    own = checksum_file(tmp_path / "versions" / "cccccccccccc_c.py")
    want = combined_checksum(own, {name: checksum_file(tmp_path / name) for name in expected})
    assert read(tmp_path)["cccccccccccc"].checksum == want


def test_roots_are_searched_in_order_and_named_from_the_project(tmp_path: Path) -> None:
    """`prepend_sys_path` entries come first, as on sys.path; paths are project-relative."""
    write(
        tmp_path,
        {
            "versions/cccccccccccc_c.py": 'import shared\nrevision = "cccccccccccc"\n'
            "down_revision = None\n",
            "src/shared.py": "A = 1\n",
            "shared.py": "A = 2\n",
        },
    )
    own = checksum_file(tmp_path / "versions" / "cccccccccccc_c.py")
    got = read(tmp_path, [tmp_path / "src", tmp_path])["cccccccccccc"].checksum
    assert got == combined_checksum(
        own, {"src/shared.py": checksum_file(tmp_path / "src/shared.py")}
    )


def test_a_forged_parse_cache_cannot_hide_an_import(project: Path) -> None:
    """The parse cache lives in `__pycache__`, which git ignores: whoever can plant a .pyc
    can plant entries there. What a revision imports is never taken from it."""
    want = read(project)["aaaaaaaaaaaa"].checksum
    cache = project / "versions" / "__pycache__" / "orchestrator-revisions.json"
    data = json.loads(cache.read_text())
    assert data["entries"]
    for entry in data["entries"].values():
        entry["imports"] = []
    cache.write_text(json.dumps(data))
    assert read(project)["aaaaaaaaaaaa"].checksum == want


def test_two_packages_relative_util_resolve_to_their_own_files(tmp_path: Path) -> None:
    """`from . import util` in two packages, the same bytes: each names its own util.py."""
    same = b"from . import util\n"
    write(
        tmp_path,
        {
            "versions/aaaaaaaaaaaa_a.py": (
                b"from one import mod as m1\nfrom two import mod as m2\n\n"
                b'revision = "aaaaaaaaaaaa"\ndown_revision = None\n'
            ),
            "one/__init__.py": b"",
            "one/mod.py": same,
            "one/util.py": b"A = 1\n",
            "two/__init__.py": b"",
            "two/mod.py": same,
            "two/util.py": b"A = 2\n",
        },
    )
    before = read(tmp_path)["aaaaaaaaaaaa"].checksum
    for package in ("one", "two"):  # each package's own util.py is covered
        util = tmp_path / package / "util.py"
        original = util.read_bytes()
        util.write_bytes(b"A = 3\n")
        assert read(tmp_path)["aaaaaaaaaaaa"].checksum != before, package
        util.write_bytes(original)
    assert read(tmp_path)["aaaaaaaaaaaa"].checksum == before
