"""The serving package: FastAPI over onnxruntime session pools, torch-free.

    main         composes the app: settings, lifespan, middleware, routers
    routers/     ``pose`` (/pose, /pose/compare, /pose/render) and ``system``
    deps         module-level ``Annotated`` dependencies
    pipeline     the request pipeline: crop → session pool → keypoints in image pixels
    registry     loads and validates the model directory; ``pool``/``batching`` run it
    imaging      upload decoding (header checks first)
    schemas      the JSON contract shown in /docs
    settings     ``POSE_*`` configuration (pydantic-settings)
    serve        ``poseserve serve``

Imports from ``models`` only its torch-free modules (transforms, manifest, runtime, detection,
keypoints); nothing that trains, evaluates or exports.
"""
