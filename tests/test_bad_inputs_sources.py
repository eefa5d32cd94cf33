"""Bad inputs that would write into source data or block a reader, end to end through the real commands.

Every command that writes refuses a target on or inside the site's source data (``endofed.data.guard``), and
readers of manifests, label files and configs refuse folders, FIFOs and devices (``endofed.io.files``), and
config readers refuse YAML aliases (an alias tree expands without bound). Each
case must give one clear line and a non-zero exit, and leave the source data byte for byte unchanged.
"""

from __future__ import annotations

import os

import pytest

from endofed.cli.main import main as endofed_main
from tests.bad_input_world import ROOT, SETS, Setup, World, assert_one_clear_line
from tests.helpers import TINY


def _check(w: World, *extra: str):
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", TINY, *SETS, *extra]


def passport_onto_a_source_image(w: World):
    return _check(w, "--passport", str(w.root / "site" / "data" / "sub-001" / "T1.nii.gz"))


def passport_onto_the_manifest(w: World):
    return _check(w, "--passport", str(w.root / "site" / "manifest.csv"))


def passport_into_an_image_folder_through_a_symlink(w: World):
    (w.root / "link").symlink_to(w.root / "site" / "data" / "sub-002")
    return _check(w, "--passport", str(w.root / "link" / "passport.json"))


def preview_into_the_data(w: World):
    return _check(w, "--preview", str(w.root / "site" / "data" / "preview.png"))


def work_dir_in_an_image_folder_outside_data_root(w: World):
    (w.root / "elsewhere").mkdir()
    w.edit_site(data_root=str(w.root / "elsewhere"), work_dir=str(w.root / "site" / "data" / "sub-003"))
    return _check(w)


def convert_into_the_dicom_folder(w: World):
    return endofed_main, ["data", "convert", str(w.root / "site" / "data"), str(w.root / "site" / "data" / "nifti")]


def pretrain_out_into_the_data(w: World):
    out = w.root / "site" / "data" / "sub-001" / "pretrain"
    return endofed_main, ["pretrain", "--site", str(w.site_yaml), "--config", TINY, *SETS, "--out", str(out)]


def compare_out_into_the_data(w: World):
    experiment = ROOT / "configs" / "experiments" / "demo.yaml"
    out = w.root / "site" / "data" / "runs"
    return endofed_main, ["compare", "--experiment", str(experiment), "--sites", str(w.site_yaml), "--out", str(out)]


def manifest_is_a_fifo(w: World):
    os.mkfifo(w.root / "manifest-pipe")  # reading it would block for ever
    w.edit_site(manifest=str(w.root / "manifest-pipe"))
    return _check(w)


def labels_file_is_a_fifo(w: World):
    os.mkfifo(w.root / "labels-pipe")
    w.edit_site(manifest=None, labels_csv=str(w.root / "labels-pipe"))
    return _check(w)


def config_is_a_fifo(w: World):
    os.mkfifo(w.root / "config-pipe")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", str(w.root / "config-pipe")]


def site_yaml_is_a_folder(w: World):
    return endofed_main, ["data", "check", "--site", str(w.root / "site" / "data"), "--config", TINY]


def config_alias_bomb(w: World):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]  # 10^12 leaves expanded
    (w.root / "bomb.yaml").write_text("\n".join(levels) + "\nseed: *a11\n")
    return endofed_main, ["data", "check", "--site", str(w.site_yaml), "--config", str(w.root / "bomb.yaml")]


def site_yaml_alias(w: World):
    w.site_yaml.write_text(w.site_yaml.read_text() + "extra: &e [1]\nsite_id: *e\n")
    return _check(w)


CASES: dict[str, tuple[Setup, str]] = {
    "passport onto a source image": (passport_onto_a_source_image, r"passport .*T1\.nii\.gz is a source file"),
    "passport onto the manifest": (passport_onto_the_manifest, r"manifest\.csv is a source file"),
    "passport into an image folder (symlink)": (
        passport_into_an_image_folder_through_a_symlink,
        r"link/passport\.json is inside the source data folder",
    ),
    "preview into the data folder": (preview_into_the_data, r"preview .* is inside the source data folder"),
    "work_dir in an image folder, not data_root": (
        work_dir_in_an_image_folder_outside_data_root,
        r"work_dir .*sub-003 is inside the source data folder",
    ),
    "pretrain --out inside an image folder": (pretrain_out_into_the_data, r"--out .* is inside the source data folder"),
    "compare --out inside the data": (compare_out_into_the_data, r"--out .*runs is inside the source data folder"),
    "manifest is a FIFO": (manifest_is_a_fifo, r"manifest .*manifest-pipe is not a regular file"),
    "labels file is a FIFO": (labels_file_is_a_fifo, r"labels file .*labels-pipe is not a regular file"),
    "config is a FIFO": (config_is_a_fifo, r"config-pipe is not a regular file"),
    "config: YAML alias tree (billion laughs)": (config_alias_bomb, r"bomb\.yaml .*aliases \(\*a0\) are not allowed"),
    "site YAML with an alias": (site_yaml_alias, r"site\.yaml .*aliases \(\*e\) are not allowed"),
    "site YAML is a folder": (site_yaml_is_a_folder, r"data is not a regular file"),
    "convert output inside DICOM_DIR": (convert_into_the_dicom_folder, r"OUT_DIR .* is inside the source data folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, world, capsys):
    setup, expected = CASES[case]
    assert_one_clear_line(case, setup, expected, world, capsys)
