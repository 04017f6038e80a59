"""Functional-liver dose of a GSA-guided radiotherapy plan: the RT Dose the TPS sends back, read in the FLS, ITV,
PTV and liver the GSA workflow defined (FLV20Gy, F20Gy; Shirai et al., World J Radiol 2014; issue 18 part 4)."""
