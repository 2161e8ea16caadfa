"""Measure the elastic operators of the OFA space (and whole subnets) on a device and build its profile.

- :mod:`ofakit.profiler.items` — what is measured: ops by OFA key, subnets by arch.
- :mod:`ofakit.profiler.backends` — one file per backend (onnxruntime, tflite, torch, torch-cuda, ...), registered by
  decorator: how an item becomes a model file and which worker times it.
- :mod:`ofakit.profiler.builder` — the host-side Builder (cached model files, built in parallel).
- :mod:`ofakit.profiler.agent.ofakit_agent` — the timing core and measurement loop, one file that also runs on boards.
- :mod:`ofakit.profiler.runner` — the local Runner (``profiler.remote`` has the SSH one).
- :mod:`ofakit.profiler.devices` — the Runner protocol and the one resolver from a device name (``cpu``, ``gpu``, a
  board, a fleet member) to its runner; ``RemoteSettings`` for boards.
- :mod:`ofakit.profiler.pipeline` — profiling and subnet-measuring jobs, journal -> :class:`ofakit.device_profiles.Profile`.
- :mod:`ofakit.profiler.interpolate` — quick mode: ops of unmeasured resolutions from measured ones.
"""
