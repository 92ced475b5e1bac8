"""The shared image-file check (nnunetv2_msvmamba.common.image_files): which axes' spacings it requires, from
the file's own header, for volumes, 2D images and sequences whose frames lie on the third axis."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.image_faults import set_nifti_pixdim
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.image_files import PLANE_AXES, check_image_file, refuse_nifti_twins


def write_volume(path: Path, slices: int, spacing=(0.3, 0.4, 2.0)) -> Path:
    image = sitk.GetImageFromArray(np.zeros((slices, 6, 5), np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf"), -2.0])
def test_a_volume_needs_a_positive_finite_slice_spacing_but_a_sequence_need_not(tmp_path, value):
    volume = write_volume(tmp_path / "volume.nii.gz", slices=4)
    set_nifti_pixdim(volume, 3, value)
    with pytest.raises(InputError, match=rf"spacing 0.3 x 0.4 x {value:g} mm \(pixdim\) is not a positive finite"):
        check_image_file(volume)
    check_image_file(volume, spatial_axes=PLANE_AXES)  # frames on the third axis: no spacing is measured there


def test_a_single_slice_is_measured_in_its_plane_only(tmp_path):
    image = write_volume(tmp_path / "slice.nii", slices=1)
    set_nifti_pixdim(image, 3, float("nan"))
    check_image_file(image)
    set_nifti_pixdim(image, 2, float("nan"))
    with pytest.raises(InputError, match=r"spacing 0.3 x nan mm \(pixdim\)"):
        check_image_file(image)


def test_metaimage_spacing_follows_the_same_axes(tmp_path):
    header = write_volume(tmp_path / "sequence.mhd", slices=4)
    lines = header.read_text().splitlines()
    header.write_text("\n".join("ElementSpacing = 0.3 0.4 0" if line.startswith("ElementSpacing") else line
                                for line in lines) + "\n")
    with pytest.raises(InputError, match=r"spacing 0.3 x 0.4 x 0 mm \(ElementSpacing\)"):
        check_image_file(header)
    check_image_file(header, spatial_axes=PLANE_AXES)


def test_nifti_twins_are_refused_naming_both_and_other_names_pass(tmp_path):
    refuse_nifti_twins([tmp_path / "a.nii.gz", tmp_path / "b.nii", tmp_path / "a.mha"])
    with pytest.raises(InputError) as raised:
        refuse_nifti_twins([tmp_path / "a.nii.gz", tmp_path / "a.nii"])
    assert raised.value.path == tmp_path / "a.nii.gz" and str(tmp_path / "a.nii") in raised.value.problem
