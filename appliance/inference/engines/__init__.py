"""Keep each model's TensorRT engine matched to this device, without ever stopping screening.

    backend = decide.startup_backend(config, bundle)           # ModelSet: never builds
    refresh.EngineRefresher(models, config, stop_event).start()  # background thread
    status.read_status(config.data_dir)                        # System page, /healthz

An engine is valid for one (model sha256, TensorRT version, GPU compute capability,
precision) — the four parts of its file name (``tensorrt_build.engine_filename``). After
the first boot, a JetPack upgrade or a new model, the engine for this device is missing:
the box starts on ONNX Runtime, and a low-priority thread builds the engine into
``engines/staging/``, runs the bundle's check images through it and through ONNX
Runtime, and only when both agree within tolerance moves it into ``engines/`` and swaps
it in under the model's lock. The engine it replaces is deleted only then. An engine
that disagrees is renamed ``*.rejected`` (kept for diagnosis; the box stays on ONNX
Runtime and does not rebuild it at every boot) — delete the file to try again.

The parts, one module each:

- ``decide``: the pure decision (from the bundle, what TensorRT is here, which files are
  in the engine directory and what was recorded before: use, check, build or skip),
  and what ``ModelSet`` opens at start-up (``startup_backend``);
- ``checks``: an engine against ONNX Runtime on the check images in ``check_images/``
  (real images; see the LICENSE.md there for why real and which);
- ``status``: ``engines/status.json``, progress for the System page, ``/healthz`` and
  ``appliance doctor`` (one writer: the refresher thread; written atomically, so a
  reader never sees half a file);
- ``refresh``: ``EngineRefresher``, everything that touches files, GPUs or threads.
- ``trt_support``: a model held to TensorRT 10's documented ONNX support (operators,
  Q/DQ types, opset), on the CPU (tests, ``appliance doctor``);
- ``selftest``: ``appliance doctor --gpu-selftest``, every engine built afresh, compared
  with ONNX Runtime and timed, one table (the technician's first check).
"""
