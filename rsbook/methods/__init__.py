"""One module per method of the book's papers; each supplies training steps and/or smoothed models
that run through :mod:`rsbook.training.fit` and :mod:`rsbook.core.engine`."""
