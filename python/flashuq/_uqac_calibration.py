"""UQAC's recency calibration, the one home of the constant (docs/methods.md#uqac-reduction).

Factor ``c`` multiplies the key at absolute column ``I + r − 10 + c`` of response row ``r`` (columns
below 0 are skipped): the reversed ``CALIBRATION_RATIO`` of the UQAC repository
(``src/utils/macro.py``), at full precision, so the key just before the query gets 0.16644488.
The reference (:mod:`flashuq.reference`), the C++ kernel (which receives the factors as an argument),
the Triton kernel and :mod:`flashuq.hf` all read it from here.
"""

UQAC_CALIBRATION = (0.93925344, 0.87378443, 0.81274293, 0.73914525, 0.67549127,
                    0.59304059, 0.46061748, 0.32959151, 0.20938152, 0.16644488)
