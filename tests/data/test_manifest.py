from __future__ import annotations

from pathlib import Path

import pytest

from endofed.config import SiteConfig
from endofed.data.manifest import Case, discover_cases, load_cases, read_manifest
from endofed.errors import DataError


def _manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_reads_labels_blanks_splits_and_relative_paths(tmp_path):
    path = _manifest(
        tmp_path,
        "subject_id,t1,t2,label,split\na,a/T1.nii.gz,a/T2.nii.gz,1,test\nb,,b/T2.nii.gz,0,\n\nc,c/T1.nii,c/T2.nii,,\n",
    )
    cases = read_manifest(path)
    assert [c.subject_id for c in cases] == ["a", "b", "c"]
    assert [c.label for c in cases] == [1, 0, None]
    assert [c.split for c in cases] == ["test", None, None]
    assert cases[0].t1 == (tmp_path / "a" / "T1.nii.gz").resolve()
    assert cases[1].t1 is None and cases[1].t2 == (tmp_path / "b" / "T2.nii.gz").resolve()


def test_split_column_is_optional(tmp_path):
    cases = read_manifest(_manifest(tmp_path, "subject_id,t1,t2,label\na,x.nii,y.nii,0\n"))
    assert cases == [Case("a", (tmp_path / "x.nii").resolve(), (tmp_path / "y.nii").resolve(), 0, None)]


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("subject_id,t1,t2,label\na,x,y,2\n", "bad_label", "label must be 0, 1 or blank, got '2' at"),
        ("subject_id,t1,t2,label\na,x,y,yes\n", "bad_label", "got 'yes'"),
        ("subject_id,t1,t2,label\na,x,y,0\na,p,q,1\n", "duplicate_subject", "duplicate subject_id 'a'"),
        ("subject_id,t1,label\na,x,0\n", "bad_manifest", "header must be subject_id,t1,t2,label[,split]"),
        ("subject_id,t1,t2,label,site\na,x,y,0,s\n", "bad_manifest", "header must be"),
        ("subject_id,t1,t2,label\na,x,y\n", "bad_manifest", "has 3 fields, expected 4"),
        ('subject_id,t1,t2,label\na,"x,y,0\n', "bad_manifest", "malformed CSV manifest"),
        ("subject_id,t1,t2,label\n,x,y,0\n", "bad_manifest", "empty subject_id"),
        ("subject_id,t1,t2,label\na,,,0\n", "missing_modality", "has neither t1 nor t2"),
        ("subject_id,t1,t2,label,split\na,x,y,0,holdout\n", "bad_manifest", "split must be one of"),
        ("", "bad_manifest", "empty manifest"),
    ],
)
def test_bad_manifests_name_the_file_and_cause(tmp_path, text, code, message):
    path = _manifest(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_manifest(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.code == code


def test_bad_label_names_the_line(tmp_path):
    path = _manifest(tmp_path, "subject_id,t1,t2,label\na,x,y,0\nb,x2,y2,3\n")
    with pytest.raises(DataError, match=r"manifest.csv:3"):
        read_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="missing manifest"):
        read_manifest(tmp_path / "none.csv")


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_folder_discovery_with_globs_and_labels(tmp_path):
    _touch(tmp_path / "s2" / "s2_T1w.nii.gz")
    _touch(tmp_path / "s2" / "s2_T2w.nii.gz")
    _touch(tmp_path / "s1" / "t2_tse_sag.nii.gz")
    _touch(tmp_path / "empty" / "readme.txt")
    (tmp_path / "labels.csv").write_text("subject_id,label\ns1,1\ns2,\n")
    cases = discover_cases(tmp_path, "*T1*.nii*", "*[Tt]2*.nii*", tmp_path / "labels.csv")
    assert [c.subject_id for c in cases] == ["s1", "s2"]
    assert cases[0].t1 is None and cases[0].t2 is not None and cases[0].label == 1
    assert cases[1].t1 is not None and cases[1].t1.name == "s2_T1w.nii.gz" and cases[1].label is None


def test_folder_discovery_refuses_ambiguous_pattern(tmp_path):
    _touch(tmp_path / "s1" / "T2_sag.nii.gz")
    _touch(tmp_path / "s1" / "T2_ax.nii.gz")
    with pytest.raises(DataError, match=r"pattern '\*T2\*' matches several files in .*s1: T2_ax.nii.gz, T2_sag"):
        discover_cases(tmp_path, "*T1*", "*T2*")


def test_folder_discovery_of_nothing(tmp_path):
    with pytest.raises(DataError, match="no case folders"):
        discover_cases(tmp_path, "*T1*", "*T2*")
    with pytest.raises(DataError, match="data root is not a folder"):
        discover_cases(tmp_path / "absent", "*T1*", "*T2*")


def test_load_cases_prefers_the_manifest(tmp_path):
    _touch(tmp_path / "s1" / "T1.nii.gz")
    manifest = _manifest(tmp_path, "subject_id,t1,t2,label\nm1,a.nii,b.nii,1\n")
    assert [c.subject_id for c in load_cases(SiteConfig(data_root=tmp_path, manifest=manifest))] == ["m1"]
    assert [c.subject_id for c in load_cases(SiteConfig(data_root=tmp_path))] == ["s1"]
