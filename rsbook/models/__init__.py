"""Networks: classifiers (:mod:`.classifiers`) and denoisers / score networks (:mod:`.denoisers`)."""
