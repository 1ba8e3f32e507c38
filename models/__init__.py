"""Everything that knows what a pose model is: the bottom of the one-way flow
(dataset → ``models`` → ``export`` → ``models/onnx`` → ``app``). Imports neither ``app``
nor ``export``.

Torch-free (the serving install imports these):
    transforms   crop geometry and normalisation, shared by training, evaluation and serving
    manifest     the typed manifest (pose models, the person detector), sha256
    runtime      the one onnxruntime session factory
    keypoints    the LSP joint table, flip table, COCO mapping, skeleton drawing
    detection    letterbox, YOLOX decoding and NMS for the person detector

Training side (torch):
    architectures/   one file per architecture, registered once (``registry``)
    backbone         ImageNet-pretrained MobileNetV2 trunk (torchvision key layout)
    layers, heatmaps shared blocks; heatmap rendering/decoding, σ and stride
    inference        the exported output contract (``InferenceGraph``)
    data             LSP/LSPET loading, crop cache (``poseserve cache``), augmentation
    train            the training loop (``poseserve train``)
    checkpoint       the checkpoint format: save/load, owned here
    evaluate, metrics  PCK on LSP test and coco_dev (``poseserve eval``)
    weights/         released PyTorch weights: where resumed or fine-tuning runs start
    onnx/            the shipped ONNX graphs and manifests (written by ``export`` only)
"""
