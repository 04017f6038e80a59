"""Encoding variants: time only in TemporalPositionIdentifier, JPEG Lossless CT pixel data; variant checks
and the command line."""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.phantom import VARIANTS, PhantomError, write_phantom
from node.phantom.cli import add_arguments, run

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("phantom_encoding")
    write_phantom(out, size="small", seed=4, variants=["temporal-position", "jpeg-lossless"])
    return {"dir": out, "truth": json.loads((out / "truth.json").read_text())}


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_time_only_in_temporal_position(phantom):
    files = [pydicom.dcmread(p) for p in sorted((phantom["dir"] / "ct-perfusion").glob("*.dcm"))]
    for ds in files:
        assert "AcquisitionTime" not in ds and "ContentTime" not in ds and "AcquisitionDateTime" not in ds
        assert int(ds.NumberOfTemporalPositions) == 15
        assert float(ds.TemporalResolution) == 3000.0   # ms between temporal positions
    by_tpi: dict[int, list] = {}
    for ds in files:
        by_tpi.setdefault(int(ds.TemporalPositionIdentifier), []).append(ds)
    assert sorted(by_tpi) == list(range(1, 16))
    n_slices = {len(v) for v in by_tpi.values()}
    assert len(n_slices) == 1
    perf = phantom["truth"]["perfusion"]
    assert perf["time_spacing_s"] == 3.0 and "TemporalPositionIdentifier" in perf["time_encoding"]
    # The images decode (JPEG Lossless) and carry the aortic curve at the right temporal position.
    masks = np.load(phantom["dir"] / "truth" / "perfusion_masks.npz")
    iop = np.asarray(files[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    aorta_mean = []
    for tpi in range(1, 16):
        sl = sorted(by_tpi[tpi], key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))
        vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in sl])
        aorta_mean.append(vol[masks["aorta"]].mean())
    expected = perf["regions"]["aorta"]["baseline_hu"] + np.array(perf["enhancement_hu"]["aorta"])
    n = int(masks["aorta"].sum())
    sd = perf["ct_noise_sd_hu"]
    assert np.all(np.abs(np.array(aorta_mean) - expected) < 5 * sd / np.sqrt(n) + 0.6)


def test_all_ct_series_are_jpeg_lossless_and_valid(phantom):
    out = phantom["dir"]
    for sub in ("ct-perfusion", "planning-ct", "spect-gsa-ct", "spect-maa-ct"):
        paths = sorted((out / sub).glob("*.dcm"))
        syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in paths}
        assert syntaxes == {JPEG_LOSSLESS_SV1}, sub
        assert _dciodvfy_errors(paths[0]) == [], sub
    planning = pydicom.dcmread(next((out / "planning-ct").glob("*.dcm")))
    hu = planning.pixel_array.astype(int) - 1024
    assert -1100 < hu.min() and hu.max() < 1000 and hu.max() > 600   # air ... bone
    assert _dciodvfy_errors(next((out / "planning-rtstruct").glob("*.dcm"))) == []


def test_contradictory_or_unknown_variants_are_refused(tmp_path):
    with pytest.raises(PhantomError):
        write_phantom(tmp_path, variants=["jpeg-lossless", "jpeg2000"])
    with pytest.raises(PhantomError):
        write_phantom(tmp_path, variants=["temporal-position", "nonuniform-time"])
    with pytest.raises(PhantomError):
        write_phantom(tmp_path, variants=["temporal-position", "enhanced-ct"])
    with pytest.raises(PhantomError):
        write_phantom(tmp_path, variants=["sideways"])
    with pytest.raises(PhantomError):
        write_phantom(tmp_path, size="huge")
    assert not list(tmp_path.iterdir())
    assert len(VARIANTS) == 12


def test_cli_arguments(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "p"), "motion", "noiseless", "--size", "small", "--seed", "7",
                              "--variant", "feet-first"])
    assert args.size == "small" and args.seed == 7 and args.variants == ["motion", "noiseless"]
    assert args.extra_variants == ["feet-first"]
    bad = parser.parse_args([str(tmp_path / "q"), "sideways"])
    assert run(bad) == 2
    assert "sideways" in capsys.readouterr().out
