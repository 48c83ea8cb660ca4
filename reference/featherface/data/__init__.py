"""Face-detection data: WIDER FACE layouts, procedural synthetic faces, RetinaFace augmentation."""
