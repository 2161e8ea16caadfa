"""Installs the repository's library folders as subpackages of ``ofakit`` (``ofa_core/`` -> ``ofakit.ofa_core``),
so only the ``ofakit`` name lands in site-packages; metadata and dependencies live in setup.cfg."""
from setuptools import find_packages, setup

LIBRARIES = ("ofa_core", "profiler", "predictors", "device_profiles")

setup(
    package_dir={"ofakit": "ofakit", **{f"ofakit.{lib}": lib for lib in LIBRARIES}},
    packages=find_packages(include=["ofakit", "ofakit.*"])
    + [f"ofakit.{pkg}" for pkg in find_packages(include=[f"{lib}*" for lib in LIBRARIES])],
)
