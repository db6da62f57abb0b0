"""Mining: turn a trained model's per-sample statistics and embeddings into review flags
(noisy, hard, low_norm, duplicate_identity, near_duplicate). numpy, torch and faiss only."""
from ml.mining.candidate import KINDS, FlagCandidate
from ml.mining.config import MiningConfig
from ml.mining.flags import face_margins, mine, read_flags, write_flags

__all__ = ["KINDS", "FlagCandidate", "MiningConfig", "face_margins", "mine", "read_flags", "write_flags"]
