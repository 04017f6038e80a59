"""Dose: Y-90 voxel dosimetry before and after radioembolization, and the functional-liver dose of a GSA-guided
radiotherapy plan (science.md section 4). Pure numpy/SimpleITK (and pydicom for RT Dose IO); no workflow here.

Modules, in the order data flows:
* density  - CT number -> mass density calibration; the mass of every voxel of a dose grid.
* activity - Y-90 activity per voxel at administration: MAA SPECT scaled to a planned activity with the lung
             shunt; quantitative Y-90 PET decay-corrected; bremsstrahlung SPECT scaled to the administered activity.
* ldm      - local deposition: D = 49.67 Gy kg/GBq x A / m on the emission grid.
* y90      - the three dose maps from images in one call each.
* dvh      - DVH convention, region figures (Dmean, D50/70/90, V100/120, V30/40, lungs), Y-90 summary.
* safety   - limits per sphere type (EANM defaults) -> warnings, never prescriptions.
* compare  - predicted vs delivered per region after rigid CT-CT registration.
* gsa_plan - FLV20Gy, F20Gy, functional and anatomical DVHs of a plan dose.
* gamma    - 3D gamma index (tests, QA).
* rtdose   - RT Dose (and a beamless RT Plan) encoding; RT Dose decoding and resampling onto a CT.
"""
from node.dose.activity import (
                                Y90_HALF_LIFE_H,
                                ActivityMap,
                                DecayInfo,
                                delivered_from_pet,
                                pet_decay_info,
                                predicted_from_maa,
                                scaled_to_administered,
)
from node.dose.compare import RegionComparison, compare_predicted_delivered, delivered_on_grid, register_post_therapy
from node.dose.density import DEFAULT_CALIBRATION, DensityCalibration, MassMap, mass_on_grid
from node.dose.dvh import (
                                Dvh,
                                LungDose,
                                NormalLiverDose,
                                RegionDose,
                                TumourDose,
                                Y90DoseSummary,
                                Y90Structures,
                                region_dose,
                                region_dvh,
                                summarize_y90,
)
from node.dose.errors import DoseInputError
from node.dose.gamma import GammaResult, gamma_index
from node.dose.gsa_plan import GsaPlanEvaluation, evaluate_gsa_plan
from node.dose.ldm import Y90_GY_KG_PER_GBQ, DoseMap, ldm_dose
from node.dose.rtdose import RtDose, build_rt_dose, build_rt_plan, dose_on_grid, read_rt_dose
from node.dose.safety import DoseLimits, SafetyFlag, SphereType, TreatmentContext, check_y90_safety
from node.dose.y90 import delivered_dose_from_counts, delivered_dose_from_pet, predicted_dose, region_mass_kg

__all__ = [
    "Y90_GY_KG_PER_GBQ", "Y90_HALF_LIFE_H", "ActivityMap", "DecayInfo", "DEFAULT_CALIBRATION", "DensityCalibration",
    "DoseInputError", "DoseLimits", "DoseMap", "Dvh", "GammaResult", "GsaPlanEvaluation", "LungDose", "MassMap",
    "NormalLiverDose", "RegionComparison", "RegionDose", "RtDose", "SafetyFlag", "SphereType", "TreatmentContext",
    "TumourDose", "Y90DoseSummary", "Y90Structures", "build_rt_dose", "build_rt_plan", "check_y90_safety",
    "compare_predicted_delivered", "delivered_dose_from_counts", "delivered_dose_from_pet", "delivered_from_pet",
    "delivered_on_grid", "dose_on_grid", "evaluate_gsa_plan", "gamma_index", "ldm_dose", "mass_on_grid",
    "pet_decay_info", "predicted_dose", "predicted_from_maa", "read_rt_dose", "region_dose", "region_dvh",
    "region_mass_kg", "register_post_therapy", "scaled_to_administered", "summarize_y90",
]
