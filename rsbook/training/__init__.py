"""Training: the one resumable loop (:mod:`.fit`) and stored noise-augmented classifiers (:mod:`.classifier`)."""
