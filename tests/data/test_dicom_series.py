"""Pure checks on hand-built slice records (endofed.data.dicom_series); every expectation is worked by hand.

Most records are axial (row (1,0,0), column (0,1,0), so the slice normal is +z) and sit at (0, 0, z): a
record's offset along the normal is its z.
"""

from __future__ import annotations

import pytest

from endofed.data.dicom_series import (
    SliceRecord,
    check_series,
    check_spacing,
    drop_duplicates,
    repeat_count,
    slice_offsets,
    split_repeats,
    typical_step,
)
from endofed.errors import DataError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rec(name: str, z: float = 0.0, **fields: object) -> SliceRecord:
    """An axial 12 x 10 MR slice at (0, 0, z) with 0.5 x 0.6 mm pixels; ``fields`` override any value."""
    values: dict[str, object] = {
        "name": name,
        "sop_uid": f"uid-{name}",
        "modality": "MR",
        "rows": 12,
        "columns": 10,
        "position": (0.0, 0.0, z),
        "orientation": AXIAL,
        "spacing": (0.5, 0.6),
    }
    values.update(fields)
    return SliceRecord(**values)  # type: ignore[arg-type]


def stack(prefix: str, zs: list[float], **fields: object) -> list[SliceRecord]:
    """One record per z, named ``<prefix>0``, ``<prefix>1``, ..."""
    return [rec(f"{prefix}{i}", z, **fields) for i, z in enumerate(zs)]


def names(records: list[SliceRecord]) -> list[str]:
    return [r.name for r in records]


# check_series -------------------------------------------------------------------------------------------------


def test_a_clean_series_passes():
    check_series(stack("a", [0, 4, 8, 12]))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"problem": "PixelSpacing is 0, expected 2 numbers"}, "b: PixelSpacing is 0, expected 2 numbers"),
        ({"frames": 8}, "b: enhanced multi-frame DICOM (8 frame(s) in one file) is not supported"),
        ({"enhanced": True}, "b: enhanced multi-frame DICOM (1 frame(s) in one file) is not supported"),
        ({"samples": 3}, "b: colour image (SamplesPerPixel 3) refused"),
        ({"rows": None}, "b: has no Rows/Columns (an incomplete or truncated file?)"),
        ({"has_pixels": False}, "b: has no pixel data (a truncated file or a broken export?)"),
        ({"position": None}, "b: has no ImagePositionPatient (needed for the volume geometry)"),
        ({"orientation": None}, "b: has no ImageOrientationPatient (needed for the volume geometry)"),
        ({"spacing": None}, "b: has no PixelSpacing (needed for the volume geometry)"),
    ],
)
def test_one_bad_file_is_named(bad, expected):
    with pytest.raises(DataError) as info:
        check_series([rec("a", 0), rec("b", 4, **bad), rec("c", 8)])
    assert str(info.value).startswith(expected)


def test_the_first_bad_file_is_named_with_the_count_of_the_others():
    records = [rec("a", 0), rec("b", 4, has_pixels=False), rec("c", 8, has_pixels=False), rec("d", 12)]
    with pytest.raises(DataError, match=r"^b \(and 1 more file\): has no pixel data"):
        check_series(records)


def test_a_problem_is_reported_before_missing_values():
    """A truncated header may lack everything; its own problem (the malformed value) is the clearer cause."""
    with pytest.raises(DataError, match="^a: ImagePositionPatient is"):
        check_series([rec("a", problem="ImagePositionPatient is 1, expected 3 numbers", has_pixels=False)])


SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
MIXED = [
    ("modality", "CT", r"modalities: MR \(3 files, e.g. a0\) and CT \(1 file, e.g. b\)"),
    ("rows", 16, r"image sizes \(Rows x Columns\): 12 x 10 \(3 files, e.g. a0\) and 16 x 10 \(1 file, e.g. b\)"),
    ("orientation", SAGITTAL, r"orientations .*: \[1, 0, 0, 0, 1, 0\] \(3 files.* \[0, 1, 0, 0, 0, -1\] \(1 file"),
    ("spacing", (0.5, 0.5), r"pixel spacings .*: \[0.5, 0.6\] \(3 files, e.g. a0\) and \[0.5, 0.5\] \(1 file, e.g. b"),
]


@pytest.mark.parametrize(("field", "value", "expected"), MIXED)
def test_mixed_series_are_refused_naming_both_kinds(field, value, expected):
    records = [*stack("a", [0, 4, 8]), rec("b", 12, **{field: value})]
    with pytest.raises(DataError, match="the series mixes " + expected):
        check_series(records)


def test_orientations_equal_to_a_thousandth_are_the_same():
    check_series([rec("a", 0), rec("b", 4, orientation=(1.0, 0.0004, 0.0, 0.0, 1.0, 0.0))])


# repeats and splitting -----------------------------------------------------------------------------------------


def test_repeat_count():
    assert repeat_count([]) == 0
    assert repeat_count(stack("a", [0, 4, 8])) == 1
    assert repeat_count(stack("a", [0, 0, 4, 0])) == 3
    assert repeat_count(stack("a", [0, 0.001])) == 2  # 0.001 mm apart: the same position to 0.01 mm


def dual_echo(**second: object) -> list[SliceRecord]:
    """Three positions, echo 1 (TE 20) and echo 2 (TE 90), interleaved as scanners often number them."""
    records = []
    for i, z in enumerate([0, 4, 8]):
        records.append(rec(f"e1-{i}", z, echo_number=1, echo_time=20.0))
        records.append(rec(f"e2-{i}", z, **({"echo_number": 2, "echo_time": 90.0} | second)))
    return records


def test_dual_echo_is_split_by_echo_number():
    parts = split_repeats(dual_echo())
    assert [(suffix, names(part)) for suffix, part in parts] == [
        ("_echo1", ["e1-0", "e1-1", "e1-2"]),
        ("_echo2", ["e2-0", "e2-1", "e2-2"]),
    ]


def test_echo_numbers_label_by_value_in_numeric_order():
    parts = split_repeats(dual_echo(echo_number=10))
    assert [s for s, _ in parts] == ["_echo1", "_echo10"]
    records = [rec(f"{e}-{z}", z, echo_number=e) for e in (10, 2) for z in (0, 4)]
    assert [s for s, _ in split_repeats(records)] == ["_echo2", "_echo10"]  # 2 before 10, not as text


def test_echo_time_alone_is_ranked_shortest_first():
    records = [rec(f"{te}-{z}", z, echo_time=te) for te in (90.0, 20.0) for z in (0, 4)]
    parts = [(s, names(p)) for s, p in split_repeats(records)]
    assert parts == [("_echo1", ["20.0-0", "20.0-4"]), ("_echo2", ["90.0-0", "90.0-4"])]


def test_echo_numbers_with_a_gap_fall_back_to_rank():
    """Some files lack EchoNumbers: a value label would be ``_echoNone``; rank them (None last)."""
    records = [*stack("a", [0, 4], echo_number=2), *stack("b", [0, 4])]
    assert [(s, names(p)) for s, p in split_repeats(records)] == [("_echo1", ["a0", "a1"]), ("_echo2", ["b0", "b1"])]


@pytest.mark.parametrize(("field", "prefix"), [("acquisition", "acq"), ("temporal", "t")])
def test_acquisitions_and_time_points(field, prefix):
    records = [*stack("a", [0, 4, 8], **{field: 1}), *stack("b", [0, 4, 8], **{field: 2})]
    assert [(s, names(p)) for s, p in split_repeats(records)] == [
        (f"_{prefix}1", ["a0", "a1", "a2"]),
        (f"_{prefix}2", ["b0", "b1", "b2"]),
    ]


def test_echo_then_time_point():
    records = [rec(f"e{e}t{t}z{z}", z, echo_number=e, temporal=t) for e in (1, 2) for t in (1, 2) for z in (0, 4)]
    parts = split_repeats(records)
    assert [(s, names(p)) for s, p in parts] == [
        ("_echo1_t1", ["e1t1z0", "e1t1z4"]),
        ("_echo1_t2", ["e1t2z0", "e1t2z4"]),
        ("_echo2_t1", ["e2t1z0", "e2t1z4"]),
        ("_echo2_t2", ["e2t2z0", "e2t2z4"]),
    ]


def test_unique_positions_are_never_split():
    records = [rec("a", 0, echo_number=1), rec("b", 4, echo_number=2), rec("c", 8, acquisition=7)]
    assert split_repeats(records) == [("", records)]


def test_a_key_with_more_values_than_repeats_explains_nothing():
    """Positions repeat twice but AcquisitionNumber differs per file (4 values): not two acquisitions."""
    records = [rec(f"f{i}", z, acquisition=i) for i, z in enumerate([0, 0, 4, 4])]
    assert split_repeats(records) == [("", records)]


def test_unexplained_repeats_stay_together():
    records = stack("a", [0, 0, 4, 4])
    assert split_repeats(records) == [("", records)]


# duplicates and spacing ---------------------------------------------------------------------------------------


def test_exact_duplicates_are_dropped_and_counted():
    records = [rec("a", 0, pixels="p0"), rec("a-copy", 0, sop_uid="uid-a", pixels="p0"), rec("b", 4, pixels="p4")]
    kept, dropped = drop_duplicates(records)
    assert (names(kept), dropped) == (["a", "b"], 1)


def test_same_position_with_other_pixels_is_not_a_duplicate():
    kept, dropped = drop_duplicates([rec("a", 0, pixels="p0"), rec("b", 0, pixels="other")])
    assert (names(kept), dropped) == (["a", "b"], 0)


def test_unread_pixels_are_never_duplicates():
    kept, dropped = drop_duplicates([rec("a", 0), rec("b", 0, sop_uid="uid-b")])
    assert (names(kept), dropped) == (["a", "b"], 0)


def test_a_shared_sop_uid_with_other_content_is_refused():
    with pytest.raises(DataError, match="^a and b have the same SOPInstanceUID but different positions or pixels"):
        drop_duplicates([rec("a", 0, pixels="p0"), rec("b", 4, sop_uid="uid-a", pixels="p4")])


def test_slice_offsets_follow_the_normal():
    """Sagittal: row (0,1,0) x column (0,0,-1) = (-1,0,0), so offset = -x; ascending offset = descending x."""
    xs = [("a", -20.0), ("b", -12.0), ("c", -16.0)]
    records = [rec(n, orientation=SAGITTAL, position=(x, -50.0, 60.0)) for n, x in xs]
    assert [(offset, r.name) for offset, r in slice_offsets(records)] == [(12.0, "b"), (16.0, "c"), (20.0, "a")]


def test_typical_step():
    assert typical_step([4.0, 4.0, 8.0, 4.0]) == 4.0
    assert typical_step([4.0, 8.0]) == 4.0  # a tie: the smaller
    assert typical_step([3.99, 4.02, 4.0]) == 4.0  # to 0.1 mm
    assert typical_step([]) == 0.0


def test_even_spacing_passes_in_any_file_order():
    check_spacing(stack("a", [8, 0, 12, 4]))
    check_spacing(stack("a", [0, 4.05, 8, 12]))  # 0.05 mm off: within 0.1 mm + 5% of 4 mm = 0.3 mm


def test_a_missing_slice_is_refused():
    with pytest.raises(DataError) as info:
        check_spacing(stack("a", [0, 4, 8, 16, 20]))
    assert str(info.value).startswith(
        "slice positions are not evenly spaced: 8.00 mm between a2 and a3, 4.00 mm elsewhere (a missing slice?)"
    )


def test_an_extra_slice_is_refused():
    expected = r"^slice positions are not evenly spaced: 2.00 mm between a1 and a2, 4.00 mm elsewhere \(an extra"
    with pytest.raises(DataError, match=expected):
        check_spacing(stack("a", [0, 4, 6, 8, 12, 16]))


def test_a_shift_beyond_the_tolerance_is_refused():
    with pytest.raises(DataError, match="4.40 mm between a1 and a2"):
        check_spacing(stack("a", [0, 4, 8.4, 12.4, 16.4, 20.4]))


def test_a_repeat_left_after_splitting_is_refused():
    with pytest.raises(DataError, match="^a1 and a2 are at the same slice position with different pixels"):
        check_spacing(stack("a", [0, 4, 4, 8]))
