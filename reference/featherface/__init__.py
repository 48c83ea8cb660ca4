"""FeatherFace V1, Nano-B and RetinaFace-mnet0.25 with a full detection pipeline."""
