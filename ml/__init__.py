"""FaceClean's machine learning: PyTorch, numpy and faiss only, never Django."""
