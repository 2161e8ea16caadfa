"""The ``ofakit`` command line: thin glue over ofa_core, profiler, predictors and device_profiles."""
