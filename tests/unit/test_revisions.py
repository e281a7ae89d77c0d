"""Tests for orchestrator.migrations.revisions: the static reader must agree with Alembic."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from alembic.script.revision import RangeNotAncestorError
from alembic.util import CommandError

from orchestrator.migrations import revisions as R
from orchestrator.migrations.revisions import (
    AmbiguousRevision,
    MultipleHeads,
    NotPlain,
    RevisionFile,
    RevisionGraph,
    UnknownRevision,
    checksum_bytes,
    checksum_file,
    read_revision_file,
    read_versions,
    script_dirs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _lit(value: str | Sequence[str] | None) -> str:
    if value is None or isinstance(value, str):
        return repr(value)
    return repr(tuple(value))


def write_rev(
    versions: Path,
    rev: str,
    down: str | Sequence[str] | None,
    *,
    labels: str | Sequence[str] | None = None,
    depends: str | Sequence[str] | None = None,
    doc: str | None = None,
    annotated: bool = False,
    filename: str | None = None,
) -> Path:
    versions.mkdir(parents=True, exist_ok=True)
    if annotated:
        header = (
            "from collections.abc import Sequence\nfrom typing import Union\n\n"
            f"revision: str = {rev!r}\n"
            f"down_revision: Union[str, Sequence[str], None] = {_lit(down)}\n"
            f"branch_labels: Union[str, Sequence[str], None] = {_lit(labels)}\n"
            f"depends_on: Union[str, Sequence[str], None] = {_lit(depends)}\n"
        )
    else:
        header = (
            f"revision = {rev!r}\n"
            f"down_revision = {_lit(down)}\n"
            f"branch_labels = {_lit(labels)}\n"
            f"depends_on = {_lit(depends)}\n"
        )
    text = (
        f'"""{doc or "migration " + rev}\n\nRevision ID: {rev}\n"""\n'
        "from alembic import op  # noqa\n\n"
        f"{header}\n\n"
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    path = versions / (filename or f"{rev}_migration.py")
    path.write_text(text)
    return path


def script_dir(dirs: Sequence[Path], recursive: bool = False) -> ScriptDirectory:
    return ScriptDirectory(
        str(dirs[0].parent),
        version_locations=[str(d) for d in dirs],
        recursive_version_locations=recursive,
    )


def _tup(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def upgrade_order(sd: ScriptDirectory, current: Sequence[str], target: str) -> list[str]:
    """What ``alembic upgrade target`` applies from a database at ``current``."""
    revs = sd.iterate_revisions(target, tuple(current), implicit_base=True)
    return [s.revision for s in reversed(list(revs))]


def downgrade_order(sd: ScriptDirectory, current: Sequence[str], target: str) -> list[str] | None:
    """What ``alembic downgrade target`` reverts; None if Alembic says "Nothing to drop"."""
    try:
        revs = sd.revision_map.iterate_revisions(tuple(current), target, select_for_downgrade=True)
        return [r.revision for r in revs]
    except RangeNotAncestorError:
        return None


def assert_agrees(
    dirs: Sequence[Path], recursive: bool = False, sample: int | None = None
) -> tuple[list[RevisionFile], RevisionGraph, ScriptDirectory]:
    files = read_versions(dirs, recursive=recursive)
    sd = script_dir(dirs, recursive=recursive)
    scripts = {s.revision: s for s in sd.walk_revisions("base", "heads")}

    by_id = {f.revision: f for f in files}
    assert len(by_id) == len(files)
    assert set(by_id) == set(scripts)
    for rev, script in scripts.items():
        rf = by_id[rev]
        assert rf.down_revisions == _tup(script.down_revision), rev
        assert rf.depends_on == _tup(getattr(script.module, "depends_on", None)), rev
        assert rf.depends_on == _tup(script.dependencies), rev
        assert rf.branch_labels == _tup(getattr(script.module, "branch_labels", None)), rev
        assert rf.path == Path(script.path), rev
        assert rf.doc == script.doc.splitlines()[0] if script.doc else rf.doc == "", rev
        assert rf.checksum == hashlib.sha256(Path(script.path).read_bytes()).hexdigest()

    graph = RevisionGraph(files)
    assert graph.heads() == tuple(sd.get_heads())
    assert graph.bases() == tuple(sd.get_bases())

    ids = sorted(scripts)
    if sample is not None and len(ids) > sample:
        ids = random.Random(1234).sample(ids, sample)

    # from an empty database
    assert graph.upgrade_path((), "heads") == upgrade_order(sd, (), "heads")
    assert len(graph.upgrade_path((), "heads")) == len(scripts)
    if len(sd.get_heads()) == 1:
        assert graph.upgrade_path((), "head") == upgrade_order(sd, (), "head")
    for rev in ids:
        # to an intermediate target, and from an intermediate point to the heads
        assert graph.upgrade_path((), rev) == upgrade_order(sd, (), rev), rev
        assert graph.upgrade_path([rev], "heads") == upgrade_order(sd, (rev,), "heads"), rev
        assert graph.ancestors(rev) == {
            s.revision for s in sd.revision_map._get_ancestor_nodes([sd.get_revision(rev)])
        }
    real_heads = [getattr(r, "revision") for r in sd.revision_map.get_revisions("heads")]  # noqa: B009
    assert graph.real_heads() == tuple(real_heads)
    assert graph.upgrade_path(real_heads, "heads") == []
    assert graph.upgrade_path(sd.get_heads(), "heads") == []  # redundant heads tolerated
    heads = real_heads
    assert graph.downgrade_path(heads, "base") == downgrade_order(sd, heads, "base")
    assert set(graph.downgrade_path(heads, "base")) == set(scripts)
    for rev in ids:
        expected = downgrade_order(sd, heads, rev)
        if expected is None:
            # Alembic: "Nothing to drop" for an applied revision with nothing above it
            expected = []
        assert graph.downgrade_path(heads, rev) == expected, rev
    return files, graph, sd


def _rid(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------
# generated histories
# --------------------------------------------------------------------------


def test_linear_history(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    prev: str | None = None
    ids = []
    for i in range(50):
        rid = f"{i:03d}" * 4  # readable and prefix-distinct: 000000000000, 001001001001...
        write_rev(versions, rid, prev, annotated=i % 2 == 0)
        ids.append(rid)
        prev = rid
    files, graph, sd = assert_agrees([versions])
    assert graph.heads() == (ids[-1],)
    assert graph.bases() == (ids[0],)
    assert graph.upgrade_path((), "head") == ids
    assert graph.upgrade_path([ids[9]], ids[19]) == ids[10:20]
    assert graph.upgrade_path([ids[19]], ids[9]) == []  # already applied
    assert graph.upgrade_path([ids[-1]], "head") == []
    assert graph.downgrade_path([ids[-1]], ids[44]) == ids[:44:-1]
    assert graph.downgrade_path([ids[-1]], "base") == ids[::-1]
    assert graph.ancestors(ids[3]) == set(ids[:4])
    assert graph.ancestors(ids[3], include_self=False) == set(ids[:3])
    assert graph.ancestors("base") == set()
    # a target that is not applied cannot be downgraded to
    with pytest.raises(R.RevisionPathError):
        graph.downgrade_path([ids[5]], ids[10])
    assert graph.downgrade_path([ids[5]], ids[5]) == []


def test_branches_and_merge(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    write_rev(v, "bbbbbbbbbbbb", "aaaaaaaaaaaa")
    write_rev(v, "cccccccccc01", "bbbbbbbbbbbb")
    write_rev(v, "cccccccccc02", "cccccccccc01")
    write_rev(v, "dddddddddddd", "bbbbbbbbbbbb", annotated=True)
    write_rev(v, "eeeeeeeeeeee", ("cccccccccc02", "dddddddddddd"), annotated=True)
    write_rev(v, "ffffffffffff", "eeeeeeeeeeee")
    # an unmerged side branch -> two heads
    write_rev(v, "999999999999", "aaaaaaaaaaaa")
    files, graph, sd = assert_agrees([v])
    assert set(graph.heads()) == {"ffffffffffff", "999999999999"}
    assert graph.get("eeeeeeeeeeee").down_revisions == ("cccccccccc02", "dddddddddddd")
    with pytest.raises(MultipleHeads) as exc:
        graph.resolve("head")
    assert set(exc.value.heads) == {"ffffffffffff", "999999999999"}
    with pytest.raises(MultipleHeads):
        graph.upgrade_path((), "head")
    # from one branch to the merge
    assert graph.upgrade_path(["cccccccccc02"], "eeeeeeeeeeee") == upgrade_order(
        sd, ("cccccccccc02",), "eeeeeeeeeeee"
    )
    assert graph.upgrade_path(["cccccccccc02", "dddddddddddd"], "ffffffffffff") == [
        "eeeeeeeeeeee",
        "ffffffffffff",
    ]
    current = ["ffffffffffff", "999999999999"]
    with pytest.warns(UserWarning, match="ambiguous"):
        assert graph.downgrade_path(current, "-1") == downgrade_order(sd, current, "-1")
    # walking down through the merge point is ambiguous, for Alembic too
    with pytest.raises(R.RevisionPathError), pytest.warns(UserWarning):
        graph.downgrade_path(current, "-2")
    with pytest.raises(CommandError), pytest.warns(UserWarning):
        sd._downgrade_revs("-2", tuple(current))  # type: ignore[arg-type]
    with pytest.raises(R.RevisionPathError):
        graph.resolve_relative(["ffffffffffff"], "-3")
    assert graph.resolve_relative(["ffffffffffff"], "-1") == "eeeeeeeeeeee"


def test_depends_on(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None, labels="core")
    write_rev(v, "bbbbbbbbbbbb", "aaaaaaaaaaaa")
    write_rev(v, "111111111111", None, labels="extra")
    write_rev(v, "222222222222", "111111111111", depends="bbbbbbbbbbbb")
    write_rev(v, "333333333333", "222222222222", depends=["core", "aaaaaaaaaaaa"])
    files, graph, sd = assert_agrees([v])
    assert graph.get("333333333333").depends_on == ("core", "aaaaaaaaaaaa")
    assert graph.ancestors("222222222222") == {
        "111111111111",
        "222222222222",
        "aaaaaaaaaaaa",
        "bbbbbbbbbbbb",
    }
    # upgrading the dependent branch pulls in the dependency
    assert graph.upgrade_path((), "extra@head") == upgrade_order(sd, (), "extra@head")
    assert "bbbbbbbbbbbb" in graph.upgrade_path((), "222222222222")
    # downgrading the dependency also reverts the dependent
    current = list(sd.get_heads())
    assert graph.downgrade_path(current, "aaaaaaaaaaaa") == downgrade_order(
        sd, current, "aaaaaaaaaaaa"
    )


def test_branch_labels(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None, labels=("alpha",))
    write_rev(v, "aaaaaaaaaab1", "aaaaaaaaaaaa")
    write_rev(v, "aaaaaaaaaab2", "aaaaaaaaaab1")
    write_rev(v, "bbbbbbbbbbbb", None, labels=["beta", "bravo"])
    write_rev(v, "bbbbbbbbbbc1", "bbbbbbbbbbbb")
    files, graph, sd = assert_agrees([v])
    assert graph.get("bbbbbbbbbbbb").branch_labels == ("beta", "bravo")
    assert graph.resolve("alpha") == "aaaaaaaaaaaa"
    assert graph.resolve("bravo") == "bbbbbbbbbbbb"
    assert graph.resolve("alpha@head") == "aaaaaaaaaab2"
    assert graph.resolve("beta@head") == "bbbbbbbbbbc1"
    for target in ("alpha@head", "beta@head", "alpha", "beta@bbbbbbbbbbc1"):
        assert graph.upgrade_path((), target) == upgrade_order(sd, (), target), target
    assert graph.upgrade_path(["aaaaaaaaaab2"], "beta@head") == upgrade_order(
        sd, ("aaaaaaaaaab2",), "beta@head"
    )
    heads = list(sd.get_heads())
    for target in ("alpha@base", "beta@-1", "alpha@-2"):
        assert graph.downgrade_path(heads, target) == downgrade_order(sd, heads, target), target
    with pytest.raises(MultipleHeads):
        graph.resolve("head")
    with pytest.raises(UnknownRevision):
        graph.resolve("gamma@head")


@pytest.mark.parametrize("seed", range(6))
def test_random_histories(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    v = tmp_path / "versions"
    created: list[str] = []
    parents: dict[str, tuple[str, ...]] = {}
    children: dict[str, set[str]] = {}
    labelled = 0
    for i in range(40):
        rid = _rid(seed * 1000 + i)
        heads = [r for r in created if not children[r]]
        roll = rnd.random()
        if not created or roll < 0.05:
            down: tuple[str, ...] = ()
        elif roll < 0.25 and len(heads) >= 2:
            down = tuple(rnd.sample(heads, 2))  # merge two heads
        elif roll < 0.45:
            down = (rnd.choice(created),)  # branch off anywhere
        else:
            down = (rnd.choice(heads),)
        depends: tuple[str, ...] = ()
        if created and rnd.random() < 0.2:
            depends = (rnd.choice(created),)
        labels: tuple[str, ...] = ()
        if not down and rnd.random() < 0.5:
            labelled += 1
            labels = (f"branch{labelled}",)
        write_rev(
            v,
            rid,
            None if not down else down[0] if len(down) == 1 else down,
            depends=depends or None,
            labels=labels or None,
            annotated=rnd.random() < 0.5,
        )
        created.append(rid)
        parents[rid] = down
        children[rid] = set()
        for d in down:
            children[d].add(rid)
    assert_agrees([v], sample=15)


def test_multiple_version_locations_and_recursive(tmp_path: Path) -> None:
    v1 = tmp_path / "versions"
    v2 = tmp_path / "more_versions"
    write_rev(v1, "aaaaaaaaaaaa", None)
    write_rev(v2, "bbbbbbbbbbbb", "aaaaaaaaaaaa")
    write_rev(v1 / "sub", "cccccccccccc", "bbbbbbbbbbbb")
    write_rev(v1 / "sub" / "deeper", "dddddddddddd", "cccccccccccc")
    flat = {f.revision for f in read_versions([v1, v2])}
    assert flat == {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    _, graph, _ = assert_agrees([v1, v2])
    assert graph.heads() == ("bbbbbbbbbbbb",)
    _, graph, _ = assert_agrees([v1, v2], recursive=True)
    assert graph.heads() == ("dddddddddddd",)


def test_skipped_files(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    (v / "__init__.py").write_text("x = 1\n")
    (v / ".#aaaaaaaaaaaa_migration.py").write_text("garbage(\n")
    (v / "README.txt").write_text("not python\n")
    (v / "__pycache__").mkdir()
    (v / "__pycache__" / "junk.py").write_text("x = 1\n")
    # a leading underscore does NOT exclude a file in Alembic
    write_rev(v, "bbbbbbbbbbbb", "aaaaaaaaaaaa", filename="_private_rev.py")
    files, graph, _ = assert_agrees([v])
    assert [f.path.name for f in files] == ["_private_rev.py", "aaaaaaaaaaaa_migration.py"]


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    assert read_versions([tmp_path / "nope"]) == []
    graph = RevisionGraph([])
    assert graph.heads() == ()
    assert graph.upgrade_path((), "heads") == []


# --------------------------------------------------------------------------
# plain / non-plain files
# --------------------------------------------------------------------------


def test_annotated_assignments(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    path = v / "x.py"
    v.mkdir()
    path.write_text(
        textwrap.dedent(
            '''\
            """Add users table

            Revision ID: cccccccccccc
            """
            from typing import Sequence, Union

            revision: str = "cccccccccccc"
            down_revision: Union[str, Sequence[str], None] = ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
            branch_labels: Union[str, Sequence[str], None] = None
            depends_on: Union[str, Sequence[str], None] = ["dddddddddddd"]
            '''
        )
    )
    rf = read_revision_file(path)
    assert rf is not None
    assert rf.revision == "cccccccccccc"
    assert rf.down_revisions == ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert rf.branch_labels == ()
    assert rf.depends_on == ("dddddddddddd",)
    assert rf.doc == "Add users table"
    assert rf.checksum == checksum_file(path)
    assert rf.path == path


@pytest.mark.parametrize(
    "body",
    [
        'PREV = "aaaaaaaaaaaa"\ndown_revision = PREV\n',
        "down_revision = f\"{'aaaaaaaaaaaa'}\"\n",
        'down_revision = "aaaa" + "aaaaaaaa"\n',
        'down_revision = ("aaaaaaaaaaaa",) if True else None\n',
        'if True:\n    down_revision = "aaaaaaaaaaaa"\nelse:\n    down_revision = None\n',
        'down_revision = None\ndown_revision, _x = "aaaaaaaaaaaa", 1\n',
        'down_revision = None\nglobals()["down_revision"] = "aaaaaaaaaaaa"\n',
        'down_revision = None\nfor down_revision in ["aaaaaaaaaaaa"]:\n    pass\n',
        'down_revision = None\nfrom os.path import *  # noqa\ndown_revision = "aaaaaaaaaaaa"\n',
    ],
)
def test_non_plain_falls_back_and_agrees(
    tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    path = v / "bbbbbbbbbbbb_odd.py"
    path.write_text(f'"""odd one"""\nrevision = "bbbbbbbbbbbb"\n{body}')
    write_rev(v, "cccccccccccc", "bbbbbbbbbbbb")
    with pytest.raises(NotPlain):
        read_revision_file(path)

    calls: list[object] = []
    real = script_dirs.read_versions_with_alembic

    def spy(*args: object, **kw: object) -> list[RevisionFile]:
        calls.append(args)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(script_dirs, "read_versions_with_alembic", spy)
    files, graph, _ = assert_agrees([v])
    assert calls, "expected the Alembic fallback to be used"
    odd = graph.get("bbbbbbbbbbbb")
    assert odd.down_revisions == ("aaaaaaaaaaaa",)
    assert odd.doc == "odd one"
    assert odd.checksum == checksum_file(path)
    assert graph.upgrade_path((), "head") == ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]


def test_plain_file_does_not_use_alembic(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    write_rev(v, "bbbbbbbbbbbb", "aaaaaaaaaaaa", annotated=True)
    # a fresh interpreter: whether reading imports Alembic, with nothing imported before
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from orchestrator.migrations.revisions import RevisionGraph, read_versions\n"
        f"files = read_versions([Path({str(v)!r})])\n"
        "g = RevisionGraph(files)\n"
        "assert g.heads() == ('bbbbbbbbbbbb',), g.heads()\n"
        "assert g.resolve('bbbb') == 'bbbbbbbbbbbb'\n"
        "assert not any(m.startswith('alembic') for m in sys.modules), 'alembic imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_local_names_in_functions_stay_plain(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(
        'revision = "aaaaaaaaaaaa"\ndown_revision = None\n\n'
        "def upgrade():\n    revision = 'local'\n    return revision\n"
    )
    rf = read_revision_file(path)
    assert rf is not None and rf.revision == "aaaaaaaaaaaa" and rf.down_revisions == ()
    assert rf.doc == ""


def test_file_without_revision(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    helper = v / "helpers.py"
    helper.write_text("def util():\n    return 1\n")
    assert read_revision_file(helper) is None
    # Alembic refuses such a file (no legacy hex file name): so do we, via the fallback.
    with pytest.raises(CommandError):
        read_versions([v])


def test_missing_down_revision_is_not_plain(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text('revision = "aaaaaaaaaaaa"\n')
    with pytest.raises(NotPlain):
        read_revision_file(path)


# --------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------


def test_checksum_crlf_normalisation(tmp_path: Path) -> None:
    lf = tmp_path / "lf.py"
    crlf = tmp_path / "crlf.py"
    cr = tmp_path / "cr.py"
    text = 'revision = "aaaaaaaaaaaa"\ndown_revision = None\n'
    lf.write_bytes(text.encode())
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    cr.write_bytes(text.replace("\n", "\r").encode())
    assert checksum_file(lf) == checksum_file(crlf)
    assert checksum_file(lf) == hashlib.sha256(text.encode()).hexdigest()
    assert checksum_file(cr) != checksum_file(lf)  # lone CR is not normalised
    assert checksum_bytes(b"a\r\n") == checksum_bytes(b"a\n")
    assert checksum_bytes(b"a\r\r\n") == hashlib.sha256(b"a\r\n").hexdigest()
    assert checksum_bytes(b"a\r\r\n") != checksum_bytes(b"a\n")
    rf_lf, rf_crlf = read_revision_file(lf), read_revision_file(crlf)
    assert rf_lf is not None and rf_crlf is not None
    assert rf_lf.checksum == rf_crlf.checksum
    lf.write_bytes(text.replace("None", "None  # changed").encode())
    assert checksum_file(lf) != checksum_file(crlf)


# --------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------


@pytest.fixture
def prefix_graph(tmp_path: Path) -> tuple[RevisionGraph, ScriptDirectory]:
    v = tmp_path / "versions"
    write_rev(v, "abcd11111111", None)
    write_rev(v, "abcd22222222", "abcd11111111")
    write_rev(v, "ef0000000000", "abcd22222222", labels="feature")
    files = read_versions([v])
    return RevisionGraph(files), script_dir([v])


def test_resolve(prefix_graph: tuple[RevisionGraph, ScriptDirectory]) -> None:
    graph, sd = prefix_graph
    assert graph.resolve("abcd11111111") == "abcd11111111"
    assert graph.resolve("abcd1") == "abcd11111111"
    assert graph.resolve("ef") == "ef0000000000"
    assert graph.resolve("head") == "ef0000000000"
    assert graph.resolve("heads") == "ef0000000000"
    assert graph.resolve("base") == "base"
    assert graph.resolve("feature") == "ef0000000000"
    assert graph.resolve("feature@head") == "ef0000000000"
    assert graph.resolve("ef0000000000-1") == "abcd22222222"
    assert graph.resolve("abcd11111111+2") == "ef0000000000"
    assert graph.resolve("abcd11111111-1") == "base"
    for ref in ("abcd1", "abcd2", "ef", "head", "feature", "feature@head"):
        script = sd.get_revision(ref)
        assert script is not None
        assert graph.resolve(ref) == script.revision, ref


def test_resolve_ambiguous_and_unknown(
    prefix_graph: tuple[RevisionGraph, ScriptDirectory],
) -> None:
    graph, _ = prefix_graph
    with pytest.raises(AmbiguousRevision) as exc:
        graph.resolve("abcd")
    assert isinstance(exc.value, UnknownRevision)
    assert set(exc.value.candidates) == {"abcd11111111", "abcd22222222"}
    assert "abcd" in str(exc.value)
    with pytest.raises(UnknownRevision) as unknown:
        graph.resolve("999999")
    assert unknown.value.ref == "999999"
    assert unknown.value.candidates == ()
    for bad in ("", "nosuchbranch@head"):
        with pytest.raises(UnknownRevision):
            graph.resolve(bad)
    with pytest.raises(UnknownRevision):
        graph.get("abcd1")  # get() wants an exact id
    with pytest.raises(UnknownRevision):
        graph.upgrade_path((), "999999")
    with pytest.raises(UnknownRevision):
        graph.upgrade_path(["999999"], "head")
    with pytest.raises(R.RevisionPathError):
        graph.resolve_relative(["abcd11111111"], "-3")


def test_resolve_relative_matches_alembic(tmp_path: Path) -> None:
    v = tmp_path / "versions"
    write_rev(v, "aaaaaaaaaaaa", None)
    write_rev(v, "bbbbbbbbbbbb", "aaaaaaaaaaaa")
    write_rev(v, "cccccccccccc", "bbbbbbbbbbbb")
    write_rev(v, "dddddddddddd", "cccccccccccc")
    graph = RevisionGraph(read_versions([v]))
    sd = script_dir([v])
    current = ["dddddddddddd"]
    assert graph.resolve_relative(current, "-1") == "cccccccccccc"
    assert graph.resolve_relative(current, "-4") == "base"
    assert graph.resolve_relative(["bbbbbbbbbbbb"], "+2") == "dddddddddddd"
    assert graph.resolve_relative((), "+1") == "aaaaaaaaaaaa"
    assert graph.resolve_relative(current, "bbbbbbbbbbbb") == "bbbbbbbbbbbb"
    for rel in ("-1", "-2", "-3", "-4"):
        target = graph.resolve_relative(current, rel)
        assert graph.downgrade_path(current, target) == graph.downgrade_path(current, rel)
        assert graph.downgrade_path(current, rel) == downgrade_order(sd, current, rel)
    assert graph.upgrade_path(["bbbbbbbbbbbb"], "+1") == upgrade_order(sd, ("bbbbbbbbbbbb",), "+1")
    with pytest.raises(R.RevisionPathError):
        graph.resolve_relative(current, "-5")
    with pytest.raises(R.RevisionPathError):
        graph.downgrade_path(current, "-5")


def test_graph_errors() -> None:
    def rf(rev: str, *down: str, deps: tuple[str, ...] = ()) -> RevisionFile:
        return RevisionFile(rev, tuple(down), (), deps, Path(f"/x/{rev}.py"), "", "0")

    with pytest.raises(R.DuplicateRevision):
        RevisionGraph([rf("aaaaaaaaaaaa"), rf("aaaaaaaaaaaa")])
    with pytest.raises(UnknownRevision):
        RevisionGraph([rf("bbbbbbbbbbbb", "aaaaaaaaaaaa")])
    with pytest.raises(UnknownRevision):
        RevisionGraph([rf("bbbbbbbbbbbb", deps=("nolabel",))])
    with pytest.raises(R.RevisionGraphError):
        RevisionGraph(
            [
                rf("aaaaaaaaaaaa"),
                rf("bbbbbbbbbbbb", "aaaaaaaaaaaa", deps=("cccccccccccc",)),
                rf("cccccccccccc", "bbbbbbbbbbbb"),
            ]
        )


def test_shipped_history_agrees_with_alembic() -> None:
    """The example application's own revisions, as Alembic reads them."""
    _files, graph, _sd = assert_agrees([REPO_ROOT / "alembic" / "versions"])
    assert len(graph.heads()) == 1
    assert graph.upgrade_path((), "head")[0] == "5c626978d652"
