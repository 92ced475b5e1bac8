"""The package as users install it (`pip install .`, `pip install -e .`, a wheel) into a fresh environment: the stock
nnU-Net trainer search finds our trainers through the start-up hook alone, and a wheel install trains with the
stock nnUNetv2_train."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers.nnunet import run_command
from helpers.paths import REPOSITORY
from helpers.toy_datasets import write_toy_dataset
from nnunetv2_msvmamba.common.commands import BIN


def install_in_a_throwaway_venv(tmp_path: Path, mode: str) -> Path:
    """The package installed from a copy of this source tree, `pip install .`, `pip install -e .` or (mode
    "wheel") a wheel built from it and then installed, into a new venv that sees this environment's packages
    (nnU-Net, PyTorch) through a path line. Returns its python."""
    source = tmp_path / "source"  # pip builds in the source tree: never in the repository
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, source / name)
    for package in ("nnunetv2_msvmamba", "dataset_conversion"):
        shutil.copytree(REPOSITORY / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / mode
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    Path(site_packages, "zz_this_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if mode == "wheel":  # pip sees this environment's copy of the same version through the path line, and would
        # call a wheel of it "already satisfied": install it into the new venv all the same
        target = ["--ignore-installed", str(build_wheel(source, tmp_path / "dist"))]
    else:
        target = ["-e", "."] if mode == "editable" else ["."]
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                             "--no-build-isolation", "--no-input", *target], cwd=source, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return python


def build_wheel(source: Path, dist: Path) -> Path:
    """The wheel of `source`, built through its PEP 517 backend (setuptools.build_meta, as `python -m build`
    does; pip's front end here, since the test environment has no `build` package and no index to fetch it)."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-input",
                             "-w", str(dist), "."], cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(dist.glob("nnunetv2_msvmamba-*-py3-none-any.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


FIND_TRAINER = ("import os; from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
                "print('FOUND', find('nnUNetTrainerMSVMamba_5epochs').__name__); "
                "print('EXT', os.environ['nnUNet_extTrainer'])")


@pytest.mark.parametrize("mode", ["regular", "editable", "wheel"])
def test_after_pip_install_the_stock_trainer_search_finds_our_trainers(mode, tmp_path):
    python = install_in_a_throwaway_venv(tmp_path, mode)
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    found = subprocess.run([str(python), "-c", FIND_TRAINER], env=env, capture_output=True, text=True)
    assert "FOUND nnUNetTrainerMSVMamba_5epochs" in found.stdout, found.stdout[-3000:] + found.stderr[-3000:]
    ext = found.stdout.split("EXT ", 1)[1].strip()
    expected = tmp_path / "source" if mode == "editable" else tmp_path / mode  # the source tree, or the venv
    assert ext.endswith(os.path.join("nnunetv2_msvmamba", "training", "ext_trainers"))
    assert Path(ext).resolve().is_relative_to(expected.resolve()) and (Path(ext) / "msvmamba_trainers.py").is_file()

    mine = tmp_path / "my trainers"
    mine.mkdir()
    appended = subprocess.run([str(python), "-c", "import os; print(os.environ['nnUNet_extTrainer'])"],
                              env={**env, "nnUNet_extTrainer": str(mine)}, capture_output=True, text=True)
    assert appended.stdout.strip() == f"{mine}{os.pathsep}{ext}"

    if mode != "editable":  # uninstalling takes the start-up hook away with the package
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "uninstall", "-y", "-q",
                        "nnunetv2-msvmamba"], check=True, capture_output=True)
        gone = subprocess.run([str(python), "-c", "import os; print(os.environ.get('nnUNet_extTrainer'))"], env=env,
                              capture_output=True, text=True)
        assert gone.stdout.strip() == "None" and not gone.stderr


def test_a_wheel_install_trains_with_the_stock_nnunet_command(tmp_path, nnunet_folders):
    """What a user does with the wheel: install it into a fresh environment, then nnUNetv2_train with our Debug
    trainer, found through the wheel's start-up hook alone (no nnUNet_extTrainer set)."""
    python = install_in_a_throwaway_venv(tmp_path, "wheel")
    write_toy_dataset(nnunet_folders.raw, 903, (48, 48), n_train=6, n_test=0)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", "903", "-c", "2d", "-np", "1", "-npfp", "1"],
                env=nnunet_folders.env())
    env = nnunet_folders.env(nnUNet_n_proc_DA="0")
    env.pop("nnUNet_extTrainer", None)
    # The stock console script, run by the throwaway environment's python: nnU-Net as installed, our package
    # and its hook as the wheel installed them.
    trained = subprocess.run([str(python), str(BIN / "nnUNetv2_train"), "903", "2d", "0", "-tr",
                              "nnUNetTrainerMSVMamba_Debug", "-device", "cpu"], env=env, capture_output=True,
                             text=True, timeout=1800)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    used = re.search(r"Using trainer 'nnUNetTrainerMSVMamba_Debug' from: (.+)", trained.stdout)
    assert used and Path(used.group(1).strip()).resolve().is_relative_to((tmp_path / "wheel").resolve()), \
        trained.stdout[-3000:]
    fold = nnunet_folders.results / "Dataset903_Toy2D" / "nnUNetTrainerMSVMamba_Debug__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
