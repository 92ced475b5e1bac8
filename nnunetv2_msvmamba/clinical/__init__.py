"""Cardiac function from label maps: LV volumes by the method of discs, ejection fraction, ED/ES detection in
label sequences, and agreement with a reference.

Modules: `geometry` (apex, mitral annulus and disc diameters of one view), `volumes` (single-plane and
Simpson's biplane volumes, EF), `sequence` (label sequences: volume curve, ED/ES, beats), `cases` (label
folders of CAMUS and EchoNet-Dynamic cases -> per-patient volumes), `reference_values` (EF/EDV/ESV from the
converters' cases.csv), `agreement` (Pearson r, bias, limits of agreement, MAE), `report` and `plot` (the
output files), `outputs` (files that appear all together), `cli` (`msvmamba_clinical`). Depends on no part of
the network or training code.
"""
